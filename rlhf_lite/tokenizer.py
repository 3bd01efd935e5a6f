"""The toy world's tokenizer: one token per word, built offline with `tokenizers`.

It is wrapped as a transformers `PreTrainedTokenizerFast`, so the same calls work later with
the GPT-2 tokenizer. Pad and eos are distinct tokens: pad positions are masked out everywhere,
while eos is a real token the policy learns to emit (and is rewarded for).
"""
from __future__ import annotations

from pathlib import Path

from .data import DataError
from .paths import DATA_DIR

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def build_tokenizer(words: list[str]):
    """A word-level fast tokenizer over `words`; ids 0, 1, 2 are pad, eos, unk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # heavy: imported when used
    from transformers import PreTrainedTokenizerFast  # heavy: imported when used

    vocab = {token: i for i, token in enumerate([PAD, EOS, UNK, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS,
                                   unk_token=UNK, padding_side="left")


def never_generated(tokenizer) -> list[int]:
    """Ids a model must never sample: pad (it only fills rows) and unk (no text maps to it),
    unless one is also eos (GPT-2's unk is its eos). Sampled, they would vanish from the
    decoded text, so the labeler would judge another answer than the one the model gave."""
    return sorted({tokenizer.pad_token_id, tokenizer.unk_token_id}
                  - {None, tokenizer.eos_token_id})


def load_tokenizer(path: str | Path | None = None):
    """The tokenizer saved under data/tokenizer (or `path`), through `AutoTokenizer`."""
    from transformers import AutoTokenizer  # heavy: imported when used

    path = Path(path) if path is not None else DATA_DIR / "tokenizer"
    if not (path / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer at {path}; run `python -m rlhf_lite.world`")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    # pad and eos are named in tokenizer_config.json: without it they load as None, and
    # training fails far from here (a TypeError while padding SFT rows)
    missing = [name for name in ("pad", "eos") if getattr(tokenizer, f"{name}_token_id") is None]
    if missing:
        config = path / "tokenizer_config.json"
        why = f"{config} names none" if config.exists() else f"{config} is missing"
        raise DataError(f"the tokenizer at {path} has no {' and no '.join(missing)} token "
                        f"({why}); rebuild it with `python -m rlhf_lite.world`")
    return tokenizer


def is_word_level(tokenizer) -> bool:
    """Whether `tokenizer` is a word-level one like the toy world's (`build_tokenizer`): one
    token per whitespace-separated word, <unk> for any other. GPT-2's BPE spells any text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return type(getattr(backend, "model", None)).__name__ == "WordLevel"


def check_vocabulary(tokenizer, texts: list[str], where: list[str]) -> None:
    """Raise a DataError naming `where[i]` and the words of `texts[i]` that the word-level
    `tokenizer` does not know: they would silently become <unk> (and a special token written
    as text, "<eos>", would act as one). A no-op for a subword tokenizer, which has no
    unknown words."""
    if not is_word_level(tokenizer):
        return
    words = set(tokenizer.get_vocab()) - set(tokenizer.all_special_tokens)
    for text, place in zip(texts, where, strict=True):
        unknown = [w for w in text.split() if w not in words]
        if unknown:
            listed = ", ".join(repr(w) for w in dict.fromkeys(unknown))  # each word once
            raise DataError(f"{place}: words outside the tokenizer's vocabulary: {listed}")
