"""The word-level tokenizer in data/tokenizer, loaded through transformers' AutoTokenizer."""
import json
import random
import shutil

import pytest

from rlhf_lite import world
from rlhf_lite.chat import format_prompt
from rlhf_lite.data import DataError
from rlhf_lite.paths import REPO_ROOT
from rlhf_lite.tokenizer import (
    EOS,
    PAD,
    UNK,
    build_tokenizer,
    check_vocabulary,
    is_word_level,
    load_tokenizer,
)

TOKENIZER_DIR = REPO_ROOT / "data" / "tokenizer"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TOKENIZER_DIR)


def sample_texts():
    rng = random.Random(4)
    prompts = world.all_prompts()
    texts = ["two plus three is five .", world.REFUSAL, world.IDK,
             format_prompt("name three fruits .") + " banana , pear and plum ."]
    for p in rng.sample(prompts, 40):
        texts.append(format_prompt(p["prompt"]) + " " + world.good_response(p, rng))
        texts.append(world.bad_response(p, rng))
    texts += [world.pretraining_document(rng) for _ in range(40)]
    return texts


def test_default_load_goes_through_auto_tokenizer():
    from transformers import AutoTokenizer

    default = load_tokenizer()
    auto = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    assert type(default) is type(auto)
    assert default.get_vocab() == auto.get_vocab()
    config = json.loads((TOKENIZER_DIR / "tokenizer_config.json").read_text())
    assert (config["pad_token"], config["eos_token"], config["unk_token"]) == (PAD, EOS, UNK)
    assert config["padding_side"] == "left"


def test_missing_tokenizer_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m rlhf_lite.world"):
        load_tokenizer(tmp_path)


def test_special_tokens(tok):
    assert (tok.pad_token, tok.eos_token, tok.unk_token) == (PAD, EOS, UNK)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"


def test_never_generated_are_pad_and_unk_but_never_eos(tok):
    from types import SimpleNamespace

    from rlhf_lite.tokenizer import never_generated

    assert never_generated(tok) == [tok.pad_token_id, tok.unk_token_id] == [0, 2]
    gpt2_like = SimpleNamespace(pad_token_id=50257, unk_token_id=50256, eos_token_id=50256)
    assert never_generated(gpt2_like) == [50257]  # GPT-2's unk is its eos: eos stays
    assert never_generated(SimpleNamespace(pad_token_id=None, unk_token_id=None,
                                           eos_token_id=1)) == []


def test_vocabulary_size(tok):
    words = world.vocabulary()
    assert len(tok) == 3 + len(words) == 195
    vocab = tok.get_vocab()
    assert [vocab[w] for w in words] == list(range(3, 3 + len(words)))  # sorted, after specials


def test_one_token_per_word_and_round_trip(tok):
    for text in sample_texts():
        ids = tok(text)["input_ids"]
        assert len(ids) == len(text.split()), text  # no eos/bos added, one id per word
        assert tok.unk_token_id not in ids, text
        assert tok.convert_ids_to_tokens(ids) == text.split()
        assert tok.decode(ids) == text
        assert tok.decode(ids + [tok.eos_token_id, tok.pad_token_id],
                          skip_special_tokens=True) == text
        assert tok.decode([tok.pad_token_id] * 3 + ids, skip_special_tokens=True) == text


def test_out_of_vocabulary_word_is_unk(tok):
    ids = tok("what color is a xylophone ?")["input_ids"]
    assert ids[4] == tok.unk_token_id == 2
    assert tok.unk_token_id not in ids[:4] + ids[5:]
    assert tok("Banana")["input_ids"] == [2]  # case matters: the world is lower case
    assert tok.decode(ids) == "what color is a <unk> ?"


def test_whitespace_is_the_only_separator(tok):
    assert tok("tom ,  is\tkind .")["input_ids"] == tok("tom , is kind .")["input_ids"]
    assert tok("kind.")["input_ids"] == [tok.unk_token_id]  # punctuation must be space-separated


def test_batch_padding_is_on_the_left(tok):
    texts = ["five .", "what is two plus three ?", "i do not know ."]
    batch = tok(texts, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (3, 6)
    for row, text in enumerate(texts):
        n = len(text.split())
        assert mask[row].tolist() == [0] * (6 - n) + [1] * n
        assert ids[row, :6 - n].tolist() == [tok.pad_token_id] * (6 - n)
        assert ids[row, 6 - n:].tolist() == tok(text)["input_ids"]
    assert mask[:, -1].tolist() == [1, 1, 1]  # every row ends with a real token


def test_build_tokenizer_small_vocab():
    small = build_tokenizer(["a", "cat", "says", "meow", "."])
    assert small.get_vocab() == {PAD: 0, EOS: 1, UNK: 2, "a": 3, "cat": 4, "says": 5,
                                 "meow": 6, ".": 7}
    assert small("a dog says meow .")["input_ids"] == [3, 2, 5, 6, 7]
    assert small.padding_side == "left"


def test_folder_without_config_is_a_clear_error(tmp_path):
    """Without tokenizer_config.json pad and eos load as None, and SFT failed much later with
    a TypeError while padding."""
    shutil.copy(TOKENIZER_DIR / "tokenizer.json", tmp_path)
    with pytest.raises(DataError) as err:
        load_tokenizer(tmp_path)
    assert str(err.value) == (
        f"the tokenizer at {tmp_path} has no pad and no eos token ({tmp_path}/"
        "tokenizer_config.json is missing); rebuild it with `python -m rlhf_lite.world`")


def test_config_without_eos_is_a_clear_error(tmp_path):
    shutil.copy(TOKENIZER_DIR / "tokenizer.json", tmp_path)
    config = json.loads((TOKENIZER_DIR / "tokenizer_config.json").read_text())
    del config["eos_token"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"has no eos token \(.*tokenizer_config.json names none"
                                        r"\); rebuild it with `python -m rlhf_lite.world`"):
        load_tokenizer(tmp_path)


def test_check_vocabulary_names_the_place_and_each_unknown_word_once(tok):
    texts = ["what color is a pear ?", "a xylophone is Blue . a xylophone <eos> ."]
    check_vocabulary(tok, texts[:1], ["f.jsonl, line 1"])  # known words: no error
    with pytest.raises(DataError) as err:
        check_vocabulary(tok, texts, ["f.jsonl, line 1", "f.jsonl, line 2, field 'response'"])
    assert str(err.value) == ("f.jsonl, line 2, field 'response': words outside the tokenizer's "
                              "vocabulary: 'xylophone', 'Blue', '<eos>'")


def test_check_vocabulary_skips_a_subword_tokenizer(tok):
    """A BPE tokenizer (GPT-2's) spells any text: it has no unknown words to report."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(
        vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")])))
    assert is_word_level(tok) and not is_word_level(bpe)
    check_vocabulary(bpe, ["xylophone"], ["f.jsonl, line 1"])


def test_the_worlds_data_is_in_the_vocabulary(tok):
    from rlhf_lite.data import load_records

    for name in ("prompts_train", "prompts_validation", "prompts_heldout", "demonstrations"):
        records = load_records(name)
        check_vocabulary(tok, [r["prompt"] for r in records], [name] * len(records))
    demos = load_records("demonstrations")
    check_vocabulary(tok, [r["response"] for r in demos], ["demonstrations"] * len(demos))
