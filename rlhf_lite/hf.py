"""GPT-2 checkpoints in and out of our GPT, through Hugging Face transformers.

InstructGPT fine-tunes pretrained GPT-3 models (Ouyang et al. 2022, sec 3.5); the course's
GPU preset does the same with GPT-2 (Radford et al. 2019). Our `GPT` has GPT-2's architecture
and parameter names, so a transformers `GPT2LMHeadModel` converts both ways by copying
tensors. One difference: transformers stores c_attn, c_proj and c_fc as `Conv1D`, whose
weight is (in, out), the transpose of nn.Linear's (out, in).

- `from_hf(hf_model)`: our GPT with the same weights (float32, whatever the source dtype).
- `to_hf(gpt)`: a `GPT2LMHeadModel` with the same weights, in memory.
- `export(gpt, tokenizer, folder)`: a trained policy as a transformers checkpoint (weights,
  config, tokenizer, generation config), so `pipeline("text-generation", model=folder)` runs it.
- `load_pretrained(name_or_path)`: our GPT and its tokenizer, from the hub ("gpt2") when
  there is a network or from a local folder without one.

The pad token. GPT-2's tokenizer has none, and the usual shortcut, pad = eos
(<|endoftext|>), breaks RLHF: eos is a real token the policy must learn to emit and is
rewarded for (the RM reads its score there), while pad positions are masked out, so code
that finds pad by its id would mask the eos too. `load_pretrained` therefore adds a
dedicated `PAD_TOKEN` and grows the vocabulary by one row (`resize_vocab`). The row is the
mean of the existing embeddings (as transformers' `resize_token_embeddings` does): its logit
is then an average one, so the model assigns pad a typical small probability instead of the
huge one a zero or random row can get. Pad is never a training target and its input
embedding is never attended to (attention masks hide pad keys), so the row only matters
through that logit.

Positions under left padding. Our GPT counts positions over real tokens only
(`model.position_ids_from_mask`), so a left-padded row gets the logits it has alone.
GPT2LMHeadModel's plain forward takes its positions from `position_ids` and, without them,
numbers every column 0, 1, 2, ... whatever the attention mask says: the pads shift a
left-padded row's positions and its logits are off by whole units. transformers' `generate`
derives position ids from the mask itself; anything else that scores left-padded rows with a
transformers model must pass `position_ids=position_ids_from_mask(mask)`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .model import GPT, GPTConfig
from .tokenizer import never_generated

PAD_TOKEN = "<|pad|>"  # added to GPT-2's tokenizer, which has no pad token (see the module doc)
# weights that transformers stores as Conv1D (in, out), transposed relative to nn.Linear
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                  "mlp.c_proj.weight")
# GELU variants equal to our nn.GELU(approximate="tanh")
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


def _convert(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """One tensor from one layout to the other (the transpose is its own inverse)."""
    return tensor.t() if name.endswith(CONV1D_WEIGHTS) else tensor


def config_from_hf(hf_config, dropout: float | None = None) -> GPTConfig:
    """Our GPTConfig for a transformers GPT2Config; raises for variants our GPT cannot run.

    dropout: None takes the checkpoint's (its embedding, attention and residual dropouts must
    then agree, since our GPT has one rate); pass a value to override it.
    """
    unsupported = {
        "activation_function": hf_config.activation_function not in TANH_GELUS,
        "n_inner": hf_config.n_inner not in (None, 4 * hf_config.n_embd),
        "scale_attn_weights": not hf_config.scale_attn_weights,
        "scale_attn_by_inverse_layer_idx": hf_config.scale_attn_by_inverse_layer_idx,
        "add_cross_attention": hf_config.add_cross_attention,
        "tie_word_embeddings": not hf_config.tie_word_embeddings,
    }
    for field, bad in unsupported.items():
        if bad:
            raise ValueError(f"GPT2Config.{field}={getattr(hf_config, field)!r} is not supported "
                             "by rlhf_lite's GPT (standard GPT-2 only)")
    if dropout is None:
        rates = {hf_config.embd_pdrop, hf_config.attn_pdrop, hf_config.resid_pdrop}
        if len(rates) > 1:
            raise ValueError(f"the checkpoint's dropouts differ ({sorted(rates)}) and our GPT has "
                             "one rate: pass dropout=...")
        dropout = rates.pop()
    return GPTConfig(vocab_size=hf_config.vocab_size, block_size=hf_config.n_positions,
                     n_layer=hf_config.n_layer, n_head=hf_config.n_head, n_embd=hf_config.n_embd,
                     dropout=float(dropout), bias=True, layer_norm_eps=hf_config.layer_norm_epsilon)


def from_hf(hf_model, dropout: float | None = None) -> GPT:
    """Our GPT with the weights of a transformers `GPT2LMHeadModel` (copied, float32)."""
    gpt = GPT(config_from_hf(hf_model.config, dropout))
    theirs = hf_model.state_dict()
    ours = gpt.state_dict()
    if set(theirs) != set(ours):
        raise ValueError(f"parameter names differ: only in the checkpoint "
                         f"{sorted(set(theirs) - set(ours))}, "
                         f"only in ours {sorted(set(ours) - set(theirs))}")
    for name, tensor in theirs.items():
        if _convert(name, tensor).shape != ours[name].shape:
            raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} does not fit "
                             f"ours {tuple(ours[name].shape)}")
    # copy_ (not assign) keeps our tied wte/lm_head parameter tied and casts to float32
    gpt.load_state_dict({name: _convert(name, t) for name, t in theirs.items()})
    return gpt.train(hf_model.training)


def to_hf(gpt: GPT, tokenizer=None):
    """A transformers `GPT2LMHeadModel` with our GPT's weights (copied).

    tokenizer: sets the config's and generation config's bos/eos/pad ids, so transformers'
    `generate` and pipelines stop at eos and pad with the right token.
    """
    from transformers import GPT2Config, GPT2LMHeadModel  # heavy: imported when used

    c = gpt.config
    if not c.bias:
        raise ValueError("GPT-2 has biases: a GPT built with bias=False has no transformers twin")
    special = {"eos_token_id": None, "pad_token_id": None, "bos_token_id": None}  # unknown
    if tokenizer is not None:
        special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
                   "bos_token_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                   else tokenizer.eos_token_id}
    hf_config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                           n_layer=c.n_layer, n_head=c.n_head, resid_pdrop=c.dropout,
                           embd_pdrop=c.dropout, attn_pdrop=c.dropout,
                           layer_norm_epsilon=c.layer_norm_eps, activation_function="gelu_new",
                           **special)
    hf_model = GPT2LMHeadModel(hf_config)
    hf_model.load_state_dict({name: _convert(name, t) for name, t in gpt.state_dict().items()})
    for name, value in special.items():
        setattr(hf_model.generation_config, name, value)
    return hf_model.train(gpt.training)


def export(gpt: GPT, tokenizer, folder: str | Path) -> Path:
    """Write `gpt` and `tokenizer` into `folder` as one transformers checkpoint; returns it.

    The folder holds the `GPT2LMHeadModel` weights and config, the tokenizer (the world's
    word-level one or GPT-2's BPE; without it a pipeline silently loads an empty GPT-2
    tokenizer and generates nothing) and a generation config with eos, pad and the tokens our
    stages never sample (`never_generated`), so `pipeline("text-generation", model=folder)`
    stops, pads and decodes as `generate` does here.
    """
    folder = Path(folder)
    hf_model = to_hf(gpt, tokenizer)
    hf_model.generation_config.suppress_tokens = never_generated(tokenizer) or None
    hf_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def resize_vocab(gpt: GPT, vocab_size: int) -> GPT:
    """A copy of `gpt` with `vocab_size` token rows; new rows are the mean embedding (module
    doc)."""
    old = gpt.config.vocab_size
    if vocab_size < old:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the model's {old}: rows "
                         "would be lost")
    state = gpt.state_dict()
    wte = state["transformer.wte.weight"]  # (V, C), tied to lm_head
    grown = torch.cat([wte, wte.mean(dim=0, keepdim=True).expand(vocab_size - old, -1)])
    state["transformer.wte.weight"] = state["lm_head.weight"] = grown
    resized = GPT(replace(gpt.config, vocab_size=vocab_size))
    resized.load_state_dict(state)
    return resized.train(gpt.training)


def prepare_tokenizer(tokenizer):
    """Make a GPT-2 style tokenizer fit our conventions: a pad token distinct from eos (added
    if missing, see the module doc) and left padding (prompts for generation). In place."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token: responses could not end")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "left"
    return tokenizer


def _from_checkpoint(load, name_or_path: str | Path):
    """`load(name_or_path)`, with an error that says what was looked for."""
    try:
        return load(str(name_or_path))
    except OSError as e:
        raise OSError(f"could not load GPT-2 checkpoint {str(name_or_path)!r}: it is neither a "
                      f"folder with config.json, weights and tokenizer files, nor a hub name "
                      f"reachable from here ({e})") from e


def load_pretrained_tokenizer(name_or_path: str | Path):
    """The tokenizer of a GPT-2 checkpoint (hub name or folder), made ready by
    `prepare_tokenizer`."""
    from transformers import AutoTokenizer  # heavy: imported when used

    return prepare_tokenizer(_from_checkpoint(AutoTokenizer.from_pretrained, name_or_path))


def load_pretrained(name_or_path: str | Path, dropout: float | None = 0.0):
    """(our GPT, its tokenizer) from a GPT-2 checkpoint: a hub name such as "gpt2" (needs a
    network, or the hub cache) or a folder written by `save_pretrained`.

    The tokenizer gets a pad token distinct from eos and left padding (`prepare_tokenizer`),
    and the model one embedding row per added token (`resize_vocab`). dropout: 0.0 by default,
    as our presets train without it (None keeps the checkpoint's).
    """
    from transformers import GPT2LMHeadModel  # heavy: imported when used

    tokenizer = load_pretrained_tokenizer(name_or_path)
    gpt = from_hf(_from_checkpoint(GPT2LMHeadModel.from_pretrained, name_or_path), dropout)
    if len(tokenizer) > gpt.config.vocab_size:
        gpt = resize_vocab(gpt, len(tokenizer))
    return gpt.eval(), tokenizer


def save_random_gpt2(folder: str | Path, texts: list[str], vocab_size: int = 512, seed: int = 0,
                     **config) -> Path:
    """Write a randomly initialised GPT-2 and a byte-level BPE tokenizer trained on `texts`
    into `folder`, as `save_pretrained` would; returns the folder.

    A stand-in for a real checkpoint where none can be downloaded: offline tests, and smoke
    runs of the gpt2 preset. The tokenizer is GPT-2's kind (byte-level BPE, <|endoftext|> as
    bos/eos/unk, no pad); `config` goes to GPT2Config (n_layer, n_head, n_embd, n_positions).
    """
    from tokenizers import ByteLevelBPETokenizer  # heavy: imported when used
    from transformers import (  # heavy: imported when used
        GPT2Config,
        GPT2LMHeadModel,
        GPT2TokenizerFast,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.save_model(str(folder))  # vocab.json, merges.txt: the files GPT-2's tokenizer reads
    tokenizer = GPT2TokenizerFast(vocab=str(folder / "vocab.json"),
                                  merges=str(folder / "merges.txt"))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer),
                                       bos_token_id=tokenizer.eos_token_id,
                                       eos_token_id=tokenizer.eos_token_id, **config))
    model.save_pretrained(folder)
    return folder
