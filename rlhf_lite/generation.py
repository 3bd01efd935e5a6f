"""Sampling from a GPT: the rollout step of RLHF, answers to prompt records (`complete`), and
the log-probs of a sequence under the distribution sampled from (`sequence_logprobs`: PPO, DPO
and the evaluation's KL).

Conventions shared with the rest of the course:

- Prompts are LEFT-padded: input_ids (B, P) with attention_mask (B, P), 1 for real tokens
  and 0 for pad. Left padding lines up every prompt's last token in column P - 1, so all
  rows append their next token in the same column.
- `generate` returns (B, P + N): the prompt columns unchanged, then N <= max_new_tokens
  generated columns.
- Once a row has emitted eos_token_id, its later columns hold pad_token_id; generation
  stops early when every row has emitted eos.
- While generating, the attention mask grows by a 1 per new column in every row, also for
  the pad written after eos. Those tokens can only affect later tokens of the same
  finished row, which are pad too. `response_mask` marks the real response tokens.
  (A batch without any padding needs no mask: generate drops an all-ones one.)
- Tokens that are no text (pad, unk: `tokenizer.never_generated`) are never sampled: their
  logits are suppressed (`suppress_tokens`), here and in `sequence_logprobs`, so the
  log-probs are those of the distribution that was really sampled.
"""

from typing import NamedTuple

import torch
from torch.nn import functional as F

from .chat import format_prompt
from .checkpoints import Checkpoint
from .model import GPT
from .runs import saved_with
from .tokenizer import never_generated
from .utils import eval_mode


def suppress_tokens(logits: torch.Tensor, token_ids) -> torch.Tensor:
    """logits (..., V) with the columns `token_ids` set to the dtype's lowest value: those
    tokens get probability exactly 0, while softmax, log-softmax and entropy stay finite
    (-inf would give 0 * -inf = NaN in the entropy)."""
    if not len(token_ids):
        return logits
    index = torch.as_tensor(list(token_ids), device=logits.device)
    return logits.index_fill(-1, index, torch.finfo(logits.dtype).min)


def _next_token(logits, temperature, top_k, greedy, generator):
    """Pick one token per row from last-position logits (B, V) -> (B,)."""
    if greedy:
        return logits.argmax(dim=-1)
    logits = logits / temperature  # < 1 sharpens the distribution, > 1 flattens it
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))  # keep the k most likely
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if generator is not None:  # sample where the generator lives: a CPU one draws the same on a GPU
        probs = probs.to(generator.device)
    return torch.multinomial(probs, num_samples=1,
                             generator=generator).squeeze(-1).to(logits.device)


@torch.no_grad()
def generate(
    model: GPT,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    suppress_token_ids=(),
) -> torch.LongTensor:
    """Continue LEFT-padded prompts input_ids (B, P); return (B, P + N), N <= max_new_tokens.

    attention_mask: (B, P), 1 = real token, 0 = left pad (default: all real).
    temperature, top_k: sampling from softmax(logits / temperature) restricted to the top_k
        most likely tokens; greedy=True takes the argmax instead and ignores both.
    eos_token_id: a row that emits it is finished: its later columns are pad_token_id (which
        is then required), and generation stops once every row has finished.
    use_cache: True runs the prompt once, then one token per step with a KVCache;
        False re-runs the whole sequence every step (slow, the reference path).
    generator: a torch.Generator making sampling reproducible.
    suppress_token_ids: never generated, not even by greedy (`suppress_tokens`).
    The model is in eval mode (no dropout) while generating; its training mode is restored.
    """
    if eos_token_id is not None and pad_token_id is None:
        raise ValueError("pad_token_id is required with eos_token_id: it fills a row after its eos")
    if not greedy and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use greedy=True for argmax)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    B, P = input_ids.shape
    if P + max_new_tokens > model.config.block_size:
        raise ValueError(
            f"prompt length {P} + max_new_tokens {max_new_tokens} exceeds block_size "
            f"{model.config.block_size}"
        )
    if attention_mask is not None and attention_mask.all():
        attention_mask = None  # no padding: the model's mask-free fast path, same positions

    with eval_mode(model):
        ids, mask = input_ids, attention_mask
        finished = torch.zeros(B, dtype=torch.bool, device=ids.device)
        kv_cache = model.new_kv_cache() if use_cache else None
        step_ids = ids  # what the model has not seen yet: the prompt, then the last token
        for _ in range(max_new_tokens):
            if use_cache:
                logits = model(step_ids, attention_mask=mask, kv_cache=kv_cache)
            else:
                logits = model(ids, attention_mask=mask)
            next_logits = suppress_tokens(logits[:, -1, :], suppress_token_ids)  # (B, V)
            token = _next_token(next_logits, temperature, top_k, greedy, generator)  # (B,)
            if eos_token_id is not None:
                token = torch.where(finished, torch.full_like(token, pad_token_id), token)
                finished |= token == eos_token_id
            ids = torch.cat([ids, token[:, None]], dim=1)  # (B, S + 1)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)  # (B, S + 1)
            step_ids = token[:, None]  # (B, 1)
            if eos_token_id is not None and finished.all():
                break
    return ids


def response_mask(response_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(B, N) long mask of the real response tokens in response_ids (B, N).

    1 up to and including a row's first eos, 0 after it (the pad `generate` writes there);
    a row without eos (cut at max_new_tokens) is all 1. Same 1/0 convention as
    attention_mask, so torch.cat([prompt_mask, response_mask(...)], 1) masks a full sequence.
    """
    is_eos = (response_ids == eos_token_id).long()
    eos_before = is_eos.cumsum(dim=-1) - is_eos  # number of eos strictly before each position
    return (eos_before == 0).long()


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens[b, t]) under logits[b, t]: (B, T, V), (B, T) -> (B, T).

    No shifting here: to score a sequence, pass logits[:, :-1] and ids[:, 1:].
    """
    return F.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      start: int = 1, temperature: float = 1.0, suppress_token_ids=()
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(input_ids[:, t] | input_ids[:, :t]) for t = start..T-1 under the distribution
    `generate` samples from: logits / temperature with `suppress_token_ids` suppressed.

    Returns the log-probs (B, T - start) and those logits (B, T - start, V) (PPO reads the
    policy's entropy from them). The logits at t predict token t + 1, so column t - 1 scores
    token t. PPO scores its left-padded rollouts from the response's first column (start = P);
    a right-padded `batching.encode_responses` batch is scored from 1, its labels say which
    tokens count. Only the scored columns go through the log-softmax (a prompt can be long).
    """
    logits = model(input_ids, attention_mask)[:, start - 1: -1] / temperature  # (B, T-start, V)
    logits = suppress_tokens(logits, suppress_token_ids)
    return logprobs_from_logits(logits, input_ids[:, start:]), logits


class Completion(NamedTuple):
    """A sampled response: its text (without eos) and whether it ended with eos."""

    text: str
    terminated: bool


def complete(model, tokenizer, prompts: list[dict], max_new_tokens: int = 24,
             temperature: float = 1.0, greedy: bool = False, seed: int = 0,
             batch_size: int = 64, prefix: str = "") -> list[Completion]:
    """A `Completion` for each prompt record ({"prompt": text, ...}), sampled in left-padded
    batches with the chat template; pad and unk are never sampled.

    `prefix` is put before each formatted prompt (a few-shot context for the base model).
    """
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(prompts), batch_size):
        texts = [prefix + format_prompt(p["prompt"]) for p in prompts[i: i + batch_size]]
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        sequences = generate(model, enc["input_ids"], enc["attention_mask"],
                             max_new_tokens=max_new_tokens, temperature=temperature,
                             greedy=greedy, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, generator=generator,
                             suppress_token_ids=never_generated(tokenizer))
        for row in sequences[:, enc["input_ids"].shape[1]:].tolist():
            ended = tokenizer.eos_token_id in row
            row = row[: row.index(tokenizer.eos_token_id)] if ended else row
            out.append(Completion(tokenizer.decode(row, skip_special_tokens=True), ended))
    return out


def answers_checkpoint(answers: list[Completion]) -> Checkpoint:
    """A saved `sample` (`runs.train_side_by_side`): the answers as text; no weights."""
    return Checkpoint({}, step=1, max_steps=1, extra={"answers": [list(a) for a in answers]})


def saved_answers(ckpt: Checkpoint, *args, **kwargs) -> list[Completion]:
    """The answers `answers_checkpoint` saved, as `sample` returned them."""
    return [Completion(text, terminated) for text, terminated in ckpt.extra["answers"]]


@saved_with(answers_checkpoint, saved_answers)
def sample(model, tokenizer, prompts: list[dict], seeds: list[int], **options) -> list[Completion]:
    """`complete(model, tokenizer, prompts, seed=s, **options)` for each seed in `seeds`, one
    list after the other: the many answers an evaluation draws (several per held-out prompt,
    best-of-n candidates), which `runs.train_side_by_side` draws side by side and saves like a
    training run, keyed by the model's weights, the prompts and the seeds, so that re-executing
    a notebook loads them instead of sampling again."""
    return [a for s in seeds for a in complete(model, tokenizer, prompts, seed=s, **options)]
