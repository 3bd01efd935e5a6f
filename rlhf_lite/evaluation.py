"""Judging sampled answers: gold tables, win rates with confidence intervals, KL to a reference.

Every stage is evaluated the same way: sample answers to the held-out prompts
(`generation.complete`), score each with `labeler.judge`, and compare two models pair by pair
with a noisy labeler: InstructGPT's headline metric, the win rate against a reference policy
(sec 4.1). The world-specific parts (the few-shot prefix of the prompted base model, the
behaviour metrics) live beside the judge in `rlhf_lite.labeler`.
"""
from __future__ import annotations

import torch

from .batching import encode_responses
from .chat import format_prompt
from .generation import Completion, logprobs_from_logits, suppress_tokens
from .labeler import GoldLabeler, judge
from .tokenizer import never_generated


def judge_all(prompts: list[dict], completions: list[Completion]):
    """A pandas table: one row per prompt with its response and the gold components."""
    import pandas as pd  # in the function: importing rlhf_lite stays light

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    rows = [{"category": p["category"], "prompt": p["prompt"], "response": text,
             **judge(p, text, ended).as_dict()} for p, (text, ended) in zip(prompts, completions)]
    return pd.DataFrame(rows)


def preferences(prompts: list[dict], ours: list[Completion],
                theirs: list[Completion], seed: int = 0) -> list[bool]:
    """For each prompt, whether a noisy gold labeler prefers `ours` to `theirs` (paper sec 4.1).

    Each pair is ranked by one noisy labeler judgement, as a person would choose between them;
    identical responses therefore split about 50/50.
    """
    if not len(prompts) == len(ours) == len(theirs):
        raise ValueError(f"lengths differ: {len(prompts)} prompts, {len(ours)} vs {len(theirs)}")
    labeler = GoldLabeler(seed=seed)
    return [labeler.rank(p, [a[0], b[0]], [a[1], b[1]])[0] == 0
            for p, a, b in zip(prompts, ours, theirs)]


def win_rate(prompts: list[dict], ours: list[Completion], theirs: list[Completion],
             seed: int = 0) -> dict:
    """How often a gold labeler prefers `ours` to `theirs` (`preferences`): the rate, the
    number of comparisons and a 95% Wilson confidence interval for the rate."""
    wins = sum(preferences(prompts, ours, theirs, seed))
    n = len(prompts)
    low, high = wilson_interval(wins, n)
    return {"win_rate": wins / n, "n": n, "low": low, "high": high}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (better than p +- 2se near 0 or 1)."""
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return center - half, center + half


@torch.no_grad()
def kl_to_reference(policy, reference, tokenizer, prompts: list[dict],
                    completions: list[Completion], batch_size: int = 64) -> float:
    """Mean KL(policy || reference) per response, in nats, estimated on the policy's own samples:
    the sum over response tokens (eos included) of log pi(y_t) - log pi_ref(y_t) (k1), both
    with the never-generated tokens suppressed, as when sampling. Scored `batch_size`
    responses at a time: the logits of a batch take batch_size x T x vocabulary floats."""
    texts, ended = [c[0] for c in completions], [c[1] for c in completions]
    enc = encode_responses(tokenizer, [p["prompt"] for p in prompts], texts, ended)  # right-padded
    prompt_len = torch.tensor([len(tokenizer(format_prompt(p["prompt"]))["input_ids"])
                               for p in prompts])  # (N,)
    targets = enc["input_ids"][:, 1:]  # (N, T-1): position t predicts token t+1
    positions = torch.arange(1, enc["input_ids"].shape[1])  # (T-1,) index of each target
    mask = (positions >= prompt_len[:, None]) & enc["attention_mask"][:, 1:].bool()  # response
    suppressed, per_response = never_generated(tokenizer), []
    for i in range(0, len(prompts), batch_size):
        rows = slice(i, i + batch_size)
        logp = [logprobs_from_logits(suppress_tokens(
                    model(enc["input_ids"][rows], enc["attention_mask"][rows])[:, :-1],
                    suppressed), targets[rows])  # (b, T-1)
                for model in (policy, reference)]
        per_response.append(((logp[0] - logp[1]) * mask[rows]).sum(1))  # (b,)
    return torch.cat(per_response).mean().item()
