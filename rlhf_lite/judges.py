"""Judging sampled policies: one evaluation per policy, two judges, one table.

A policy is sampled on held-out prompts, and a judge compares each of its completions with a
reference completion of the same prompt (SFT's, sampled with other seeds): `policy_row` turns
the verdicts into one row of numbers, the same for every judge,

    params, win_rate_vs_sft, win_rate_ci (95%, a bootstrap over prompts), the judge's own
    numbers, rm_score (the mean score of the proxy reward model the policy was trained
    against), kl_to_sft, what the caller adds, and "tables" (the judged completions)

and `by_column` lays the rows of every model out as results.json holds them, {key: {model:
value}}. Two judges plug in:

* `LabelerJudge`, the toy world's gold labeler (paper sec 4.1): a noisy labeler prefers one of
  the two answers; its numbers are the mean gold score, the behaviour metrics and the win rate
  per prompt category;
* `realdata.gold_eval.GoldRMJudge`, a gold reward model where no labeler exists (real data):
  the higher gold score wins.

`markdown_table` renders any of these results as the report's table.
"""
from __future__ import annotations

import re
from string import Formatter
from typing import Protocol

from .evaluation import bootstrap_interval, judge_all, preferences
from .generation import Completion, complete
from .labeler import behaviour
from .reward import score_responses


class Judge(Protocol):
    def judge(self, prompts: list[dict], completions: list[Completion]) -> tuple:
        """(a pandas table with one row per completion and a "win" column against the
        reference: 1, 0 or 1/2, the judge's own numbers for the policy as a dict)."""


def sample(model, tokenizer, prompts: list[dict], samples: int, seed: int, **kwargs
           ) -> list[Completion]:
    """`samples` completions of every prompt (seeds seed, seed + 1, ...): all the prompts'
    first samples, then their second ones, as `prompts * samples` lists them."""
    return sum((complete(model, tokenizer, prompts, seed=seed + s, **kwargs)
                for s in range(samples)), [])


def policy_row(judge: Judge, prompts: list[dict], completions: list[Completion], reward_model,
               tokenizer, params: int, kl: float | None, seed: int = 0, **extra) -> dict:
    """One policy's row (module docstring): `judge`'s verdicts on its `completions` of
    `prompts`, the proxy `reward_model`'s mean score, `kl` (its KL to SFT, None where it does
    not apply) and `extra` numbers."""
    table, numbers = judge.judge(prompts, completions)
    wins = table.win.tolist()
    rm_scores = score_responses(reward_model, tokenizer, [p["prompt"] for p in prompts],
                                [c.text for c in completions], [c.terminated for c in completions])
    return {"params": params, "win_rate_vs_sft": sum(wins) / len(wins),
            "win_rate_ci": list(bootstrap_interval(wins, [p["id"] for p in prompts], seed)),
            **numbers, "rm_score": rm_scores.mean().item(), "kl_to_sft": kl, **extra,
            "tables": table}


def by_column(rows: dict[str, dict]) -> dict[str, dict]:
    """{model: row} -> {key: {model: value}}, the layout of results.json (a key that only
    some rows have, e.g. best-of-n's KL bound, lists only those models)."""
    columns = {}
    for name, row in rows.items():
        for key, value in row.items():
            columns.setdefault(key, {})[name] = value
    return columns


class LabelerJudge:
    """The toy world's gold labeler: one noisy judgement per pair of answers
    (`evaluation.preferences`) against `reference`, the SFT completions of the same prompts."""

    def __init__(self, reference: list[Completion], seed: int = 0):
        self.reference, self.seed = reference, seed

    def judge(self, prompts: list[dict], completions: list[Completion]) -> tuple:
        table = judge_all(prompts, completions)
        table["win"] = preferences(prompts, completions, self.reference, seed=self.seed)
        return table, {"mean_gold": float(table.total.mean()), "behaviour": behaviour(table),
                       "win_rate_by_category": table.groupby("category").win.mean().to_dict()}


def markdown_table(results: dict, columns: dict[str, str]) -> list[str]:
    """The lines of a Markdown table with a row per model of `results` (`by_column`'s layout)
    and a column per {header: template}: a template formats the model's values of the keys it
    names ("{mean_gold:.2f}", "{win_rate_ci[0]:.1%}"); a cell with a None value reads n/a."""
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name in results["win_rate_vs_sft"]:
        cells = []
        for template in columns.values():
            keys = [re.split(r"[.\[]", field)[0]
                    for _, field, _, _ in Formatter().parse(template) if field]
            row = {key: results[key][name] for key in keys}
            cells.append("n/a" if None in row.values() else template.format(**row))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
