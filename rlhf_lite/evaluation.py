"""Asking a model the world's prompts and letting the gold labeler judge the answers.

Every stage is evaluated the same way: format each instruction with the chat template, sample
a response (left-padded batches, KV cache), cut it at eos, and score it with `labeler.judge`.
InstructGPT's headline metric, the win rate against a reference policy (sec 4.1), builds on
the same pieces.
"""
from __future__ import annotations

import torch

from .generation import generate
from .labeler import judge
from .world import format_prompt


def complete(model, tokenizer, prompts: list[dict], max_new_tokens: int = 24,
             temperature: float = 1.0, greedy: bool = False, seed: int = 0,
             batch_size: int = 64, prefix: str = "") -> list[tuple[str, bool]]:
    """(response text, ended with eos) for each prompt record.

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
                             pad_token_id=tokenizer.pad_token_id, generator=generator)
        for row in sequences[:, enc["input_ids"].shape[1]:].tolist():
            ended = tokenizer.eos_token_id in row
            row = row[: row.index(tokenizer.eos_token_id)] if ended else row
            out.append((tokenizer.decode(row, skip_special_tokens=True), ended))
    return out


def judge_all(prompts: list[dict], completions: list[tuple[str, bool]]):
    """A pandas table: one row per prompt with its response and the gold components."""
    import pandas as pd

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    rows = [{"category": p["category"], "prompt": p["prompt"], "response": text,
             **judge(p, text, ended).as_dict()} for p, (text, ended) in zip(prompts, completions)]
    return pd.DataFrame(rows)


def win_rate(prompts: list[dict], ours: list[tuple[str, bool]], theirs: list[tuple[str, bool]],
             seed: int = 0) -> dict:
    """How often a gold labeler prefers `ours` to `theirs`, prompt by prompt (paper sec 4.1).

    Each prompt's two responses are ranked by one noisy labeler judgement, as a person would
    choose between them; identical responses therefore split about 50/50. Returns the rate,
    the number of comparisons and a 95% Wilson confidence interval for the rate.
    """
    from .labeler import GoldLabeler

    if not len(prompts) == len(ours) == len(theirs):
        raise ValueError(f"lengths differ: {len(prompts)} prompts, {len(ours)} vs {len(theirs)}")
    labeler = GoldLabeler(seed=seed)
    wins = sum(labeler.rank(p, [a[0], b[0]], [a[1], b[1]])[0] == 0
               for p, a, b in zip(prompts, ours, theirs))
    n = len(prompts)
    low, high = wilson_interval(wins, n)
    return {"win_rate": wins / n, "n": n, "low": low, "high": high}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (better than p +- 2se near 0 or 1)."""
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return center - half, center + half
