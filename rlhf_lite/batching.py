"""Turning (prompt, response) text into padded token tensors: one encoder (`encode_responses`)
for SFT, the reward model, DPO, real preference data and the KL evaluation.

Every stage lays a sequence out the same way: the chat template's prompt (`chat.format_prompt`),
then the response tokenized with a leading space, then eos if the response ended. Training
batches are RIGHT-padded (every row starts at position 0; with causal attention no real token
sees a pad); generation left-pads instead (rlhf_lite.generation). The labels mark what is
scored, the response and its eos: SFT learns them, DPO and the KL evaluation sum their
log-probs, the reward model ignores them.
"""
from __future__ import annotations

import torch

from .chat import format_prompt
from .utils import derive_seed, eval_mode

IGNORE_INDEX = -100  # F.cross_entropy skips targets with this value


def prompt_response_ids(tokenizer, prompts: list[str], responses: list[str]
                        ) -> list[tuple[list[int], list[int]]]:
    """(ids of format_prompt(prompt), ids of the response) per pair, no special tokens.

    The response is tokenized with a leading space, as it follows "bot :" in running text
    (no-op for the word-level toy tokenizer; a BPE tokenizer like GPT-2's needs it).
    """
    prompt_ids = tokenizer([format_prompt(p) for p in prompts],
                           add_special_tokens=False)["input_ids"]
    response_ids = tokenizer([" " + r for r in responses], add_special_tokens=False)["input_ids"]
    return list(zip(prompt_ids, response_ids))


def pad_right(rows: list[list[int]], value: int) -> torch.Tensor:
    """Rows of different lengths -> (N, T) long tensor, T = longest row, filled with `value`."""
    out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def encode_responses(tokenizer, prompts: list[str], responses: list[str], terminated: list[bool]
                     ) -> dict[str, torch.Tensor]:
    """format_prompt(prompt) + response + eos if terminated, RIGHT-padded.

    Returns input_ids, attention_mask and labels (N, T), T = the longest sequence: labels hold
    the response tokens and the eos of a terminated response, IGNORE_INDEX on prompt and pad.
    """
    eos = tokenizer.eos_token_id
    rows, labels = [], []
    for (prompt, response), done in zip(prompt_response_ids(tokenizer, prompts, responses),
                                        terminated):
        scored = response + ([eos] if done else [])
        rows.append(prompt + scored)
        labels.append([IGNORE_INDEX] * len(prompt) + scored)
    return {"input_ids": pad_right(rows, tokenizer.pad_token_id),
            "attention_mask": pad_right([[1] * len(row) for row in rows], 0),
            "labels": pad_right(labels, IGNORE_INDEX)}


@torch.no_grad()
def score_distinct(model, score, tokenizer, prompts: list[str], responses: list[str],
                   terminated: list[bool], batch_size: int) -> torch.Tensor:
    """score(model, batch) (N,) of each (prompt, response, terminated), without gradients and
    in eval mode, `batch_size` rows of `encode_responses` at a time. Each distinct triple is
    scored once, so identical responses get exactly equal scores (a tie), whatever batch row
    (and so padded length) they would have sat in."""
    keys = list(zip(prompts, responses, terminated))
    unique = list(dict.fromkeys(keys))
    with eval_mode(model):
        scores = [score(model, encode_responses(tokenizer, *zip(*unique[i: i + batch_size])))
                  for i in range(0, len(unique), batch_size)]
    score_of = dict(zip(unique, torch.cat(scores).tolist()))
    return torch.tensor([score_of[key] for key in keys])


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimizer steps in one pass over `n` examples: ceil(n / batch_size), or with `drop_last`
    only the full batches, floor(n / batch_size)."""
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_batch(n: int, batch_size: int, step: int, seed: int, drop_last: bool = False
                ) -> torch.Tensor:
    """Indices of the examples of optimizer step `step`: shuffled epochs, a function of the step.

    Epoch e is a permutation of range(n) seeded by (seed, e), cut into batches of `batch_size`:
    all of them (the last one smaller), so every example is seen once per epoch, or with
    `drop_last` the full ones only, so every step has `batch_size` examples and each epoch leaves
    out its permutation's last n mod batch_size (other examples every epoch).
    """
    if drop_last and n < batch_size:
        raise ValueError(f"drop_last with {n} examples and batch_size {batch_size}: no full batch")
    epoch, i = divmod(step, steps_per_epoch(n, batch_size, drop_last))
    # on the CPU generator also inside a GPU device context (Preset.runtime): same data anywhere
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, epoch)),
                          device="cpu")
    return perm[i * batch_size: (i + 1) * batch_size]
