"""Stage 0: pretraining the base model on the world's web text.

InstructGPT starts from GPT-3, a language model pretrained to predict the next token of web
text (Ouyang et al. 2022, sec 3.5). The course's base model is the same idea at toy scale:
the documents are joined into one token stream (each followed by eos), and the model learns
to predict token t+1 from tokens 1..t on random windows of that stream:

    loss = - mean_t log p(x_{t+1} | x_1..x_t)      (cross-entropy, in nats)

Its exp is the perplexity: the number of equally likely words the model hesitates between.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .data import load_records
from .hf import load_pretrained
from .model import GPT, GPTConfig
from .training import History, TrainConfig, train
from .utils import (
    check_config,
    derive_seed,
    eval_mode,
    integer,
    nested,
    number,
    optional,
    rule,
    text,
)


@dataclass
class PretrainConfig:
    # the model's own rules (GPTConfig), but at the preset, before any data is loaded
    n_layer: int = rule(4, integer(1))  # transformer blocks
    n_head: int = rule(4, integer(1))  # attention heads per block
    n_embd: int = rule(128, integer(1))  # width of the residual stream
    # context length in tokens (prompts + responses fit easily); with init_from: the length of
    # the training windows (at most the checkpoint's context)
    block_size: int = rule(64, integer(1))
    # the corpus is large relative to the model: no need to regularise
    dropout: float = rule(0.0, number(0, 1, high_open=True))
    batch_size: int = rule(32, integer(1))  # windows per step
    train: TrainConfig = nested(lambda: TrainConfig(
        max_steps=1000, lr=3e-3, warmup_steps=50, eval_interval=100, desc="pretrain"))
    # a GPT-2 checkpoint (hub name or folder, `hf.load_pretrained`) to continue pretraining on
    # the world's text instead of a fresh model: its architecture replaces n_layer, n_head,
    # n_embd; the invented facts of the world are only in this text, so a GPT-2 policy must
    # read it before the gold labeler's correctness can mean anything
    init_from: str | None = rule(None, optional(text()))

    def __post_init__(self):
        check_config(self, divisible=("n_embd", "n_head"))

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout)

    def as_dict(self) -> dict:
        return asdict(self)


def token_stream(texts, tokenizer) -> torch.Tensor:
    """All documents as one 1-D stream of token ids, each document followed by eos."""
    ids = tokenizer(list(texts))["input_ids"]
    return torch.tensor([t for doc in ids for t in (*doc, tokenizer.eos_token_id)])


def random_windows(stream: torch.Tensor, batch_size: int, block_size: int, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random windows (B, T) and their next-token targets, a function of `seed`."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(len(stream) - block_size - 1, (batch_size,), generator=g,
                           device="cpu")  # also inside a GPU device context (Preset.runtime)
    x = torch.stack([stream[s: s + block_size] for s in starts.tolist()])  # (B, T)
    y = torch.stack([stream[s + 1: s + 1 + block_size] for s in starts.tolist()])  # (B, T)
    return x, y


def lm_loss(model: GPT, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of the batch."""
    x, y = batch
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


@torch.no_grad()
def window_losses(model: GPT, stream: torch.Tensor, block_size: int, max_tokens: int = 4096
                  ) -> torch.Tensor:
    """Mean next-token loss of each non-overlapping window of a stream, (n_windows,), scored
    `max_tokens` tokens at a time: the logits of a chunk take max_tokens x vocabulary floats
    (64 toy windows of 64; 4 GPT-2 windows of 1024, 0.8 GB, not 64 of them, 13 GB).

    One value per window, so that two models scored on the same windows can be compared
    window by window (a paired bootstrap over windows, notebook 7)."""
    batch_size = max(1, max_tokens // block_size)
    n = (len(stream) - 1) // block_size
    x = stream[: n * block_size].view(n, block_size)
    y = stream[1: n * block_size + 1].view(n, block_size)
    losses = []
    with eval_mode(model):
        for i in range(0, n, batch_size):
            logits = model(x[i: i + batch_size])  # (B, T, V)
            nll = F.cross_entropy(logits.transpose(1, 2), y[i: i + batch_size], reduction="none")
            losses.append(nll.mean(1))  # (B,)
    return torch.cat(losses)


def stream_loss(model: GPT, stream: torch.Tensor, block_size: int, max_tokens: int = 4096
                ) -> float:
    """Mean next-token loss over a whole stream: the mean of its equal-length windows'
    losses (`window_losses`)."""
    return window_losses(model, stream, block_size, max_tokens).mean().item()


def unigram_loss(train_stream: torch.Tensor, val_stream: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy on `val_stream` of word frequencies counted on `train_stream`.

    The baseline a language model must beat: it knows how common each word is, nothing of
    context. Add-one smoothing keeps unseen words from costing infinity.
    """
    counts = torch.bincount(train_stream, minlength=vocab_size).double() + 1.0
    logp = (counts / counts.sum()).log()
    return -logp[val_stream[1:]].mean().item()


def pretrain(cfg: PretrainConfig, tokenizer, train_texts: list[str], val_texts: list[str],
             checkpoint_path=None) -> tuple[GPT, History]:
    """Train a base model, fresh or continued from `cfg.init_from` (or resume from
    `checkpoint_path`); return it and its history."""
    train_stream = token_stream(train_texts, tokenizer)
    val_stream = token_stream(val_texts, tokenizer)
    torch.manual_seed(cfg.train.seed)  # model init
    model = (load_pretrained(cfg.init_from, cfg.dropout)[0] if cfg.init_from
             else GPT(cfg.model_config(len(tokenizer))))
    if cfg.block_size > model.config.block_size:
        raise ValueError(f"PretrainConfig.block_size {cfg.block_size} is longer than the "
                         f"context of {cfg.init_from} ({model.config.block_size} tokens)")
    seed = cfg.train.seed

    def get_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return random_windows(train_stream, cfg.batch_size, cfg.block_size,
                              seed=derive_seed(seed, step))

    def loss_fn(m: GPT, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return lm_loss(m, batch), batch[1].numel()  # the mean over every target token

    def eval_fn(m: GPT) -> dict[str, float]:
        return {"val_loss": stream_loss(m, val_stream, cfg.block_size)}

    history = train(model, loss_fn, get_batch, cfg.train, eval_fn=eval_fn,
                    checkpoint_path=checkpoint_path,
                    meta={"model_config": asdict(model.config), "recipe": cfg.as_dict()})
    model.eval()
    return model, history


def build(cfg: PretrainConfig, data: None, tokenizer, inputs: dict, path) -> None:
    """The "base" stage (rlhf_lite.stages): pretrain (or continue pretraining a GPT-2
    checkpoint) on the world's web text into `path`, whatever data the later stages read."""
    texts = {n: [r["text"] for r in load_records(f"pretrain_{n}")] for n in ("train", "val")}
    pretrain(cfg, tokenizer, texts["train"], texts["val"], checkpoint_path=path)
