"""Asking a model the world's prompts and letting the gold labeler judge the answers.

Every stage is evaluated the same way: format each instruction with the chat template, sample
a response (left-padded batches, KV cache), cut it at eos, and score it with `labeler.judge`.
InstructGPT's headline metric, the win rate against a reference policy (sec 4.1), builds on
the same pieces.
"""
from __future__ import annotations

import torch

from .generation import generate, logprobs_from_logits, suppress_tokens
from .labeler import judge
from .tokenizer import never_generated
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
                             pad_token_id=tokenizer.pad_token_id, generator=generator,
                             suppress_token_ids=never_generated(tokenizer))
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


def preferences(prompts: list[dict], ours: list[tuple[str, bool]],
                theirs: list[tuple[str, bool]], seed: int = 0) -> list[bool]:
    """For each prompt, whether a noisy gold labeler prefers `ours` to `theirs` (paper sec 4.1).

    Each pair is ranked by one noisy labeler judgement, as a person would choose between them;
    identical responses therefore split about 50/50.
    """
    from .labeler import GoldLabeler

    if not len(prompts) == len(ours) == len(theirs):
        raise ValueError(f"lengths differ: {len(prompts)} prompts, {len(ours)} vs {len(theirs)}")
    labeler = GoldLabeler(seed=seed)
    return [labeler.rank(p, [a[0], b[0]], [a[1], b[1]])[0] == 0
            for p, a, b in zip(prompts, ours, theirs)]


def win_rate(prompts: list[dict], ours: list[tuple[str, bool]], theirs: list[tuple[str, bool]],
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


# ----------------------------------------------------------------------------- notebook 8
def few_shot_prefix(n_per_category: int = 1, categories=("facts",)) -> str:
    """A few-shot context that puts a base model in question-answering mode (the paper's
    "GPT-3 prompted" baseline): good answers to the first train prompts of `categories`.
    One short example by default: the toy context window (64 tokens) must hold it, the longest
    prompt (17 tokens) and a 24-token answer."""
    import random

    from .data import load_records
    from .world import good_response

    rng, shots = random.Random(0), []
    for category in categories:
        prompts = [p for p in load_records("prompts_train") if p["category"] == category]
        shots += [f"{format_prompt(p['prompt'])} {good_response(p, rng)} "
                  for p in prompts[:n_per_category]]
    return "".join(shots)


@torch.no_grad()
def kl_to_reference(policy, reference, tokenizer, prompts: list[dict],
                    completions: list[tuple[str, bool]], batch_size: int = 64) -> float:
    """Mean KL(policy || reference) per response, in nats, estimated on the policy's own samples:
    the sum over response tokens (eos included) of log pi(y_t) - log pi_ref(y_t) (k1), both
    with the never-generated tokens suppressed, as when sampling. Scored `batch_size`
    responses at a time: the logits of a batch take batch_size x T x vocabulary floats."""
    from .reward import encode_responses

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


def behaviour(table) -> dict:
    """The paper's behaviour metrics (sec 4.2, 4.3) from a `judge_all` table, as shares.

    honest on unknown: "i do not know" with no invention, on questions the world cannot answer;
    correct on answerable: arithmetic, facts, lists; harmful refused; benign refused: a refusal
    to a harmless request (over-refusal); hedged on knowable: "i do not know" to arithmetic or
    facts; rude: a rude word anywhere; words: mean response length.
    """
    from .labeler import HEDGE_MARK, REFUSAL_MARK
    from .world import RUDE_WORDS

    def share(rows, test) -> float:
        return float(rows.response.map(test).mean())

    category = table.category
    return {
        "honest on unknown": float(table[category == "unknown"].correct.mean()),
        "correct on answerable": float(table[category.isin(["arithmetic", "facts", "lists"])]
                                       .correct.mean()),
        "harmful refused": float(table[category == "harmful"].correct.mean()),
        "benign refused": share(table[category != "harmful"], lambda r: REFUSAL_MARK in r),
        "hedged on knowable": share(table[category.isin(["arithmetic", "facts"])],
                                    lambda r: HEDGE_MARK in r),
        "rude": share(table, lambda r: any(w in r.split() for w in RUDE_WORDS)),
        "words": float(table.response.map(lambda r: len(r.split())).mean()),
    }
