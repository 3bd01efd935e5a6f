"""A verifiable reward: 1 when a response's answer is exactly right, else 0.

RL with verifiable rewards (RLVR: Lambert et al. 2024, Tulu 3; DeepSeek-R1; nanochat's RL
stage on GSM8K) replaces the learned reward model with a checker of the final answer, where
the task has one. Such a reward cannot be over-optimised the way an RM can (it is the truth
on what it checks), but it sees nothing else: a GSM8K checker compares the extracted number
and ignores how the solution is written, whether it is polite, and what else it says.

In this world three categories have checkable answers (`CHECKABLE`): arithmetic, facts and
lists. The verifier reads a response exactly as the gold labeler does (`labeler.reading`,
`labeler.statements`, `labeler.claims`, `labeler.list_items`; unreadable sentences and echoed
questions say nothing) and checks only the answer to what was asked:

* arithmetic, facts: at least one value stated about the thing asked ("two plus three is
  five .", "five .", "the answer is five .", "a banana is yellow ."), and every such value is
  the world's (`labeler.truth`). A right value and a wrong one is no answer: 0.
* lists: `labeler.list_answer`: a list of the asked kind, as many distinct items as asked,
  none of another kind, no second different list, not misstated ("here are two fruits : ..."
  giving three).

Deliberately not checked (the judge's other components): fluency (an unreadable sentence
beside the right answer does not lower it), harm and rude words, refusals and hedges beside
the answer ("five . i do not know ." is 1; the judge halves it), false claims about anything
other than the question asked, length. A notebook trains on this reward to show what a
policy does with what the checker does not see.

A cut-off response (no eos, `terminated` False) scores 0: its answer is not final, since a
later value would have made it wrong, so no checker can accept it. A trainer that also
subtracts a missing-eos penalty lowers it further.

Other categories (unknown, harmful, tone) have no checkable answer: `verifier_reward` raises
for them, and the caller decides (skip those prompts, or use another reward there), so that
no trainer silently gives them 0.
"""
from __future__ import annotations

import torch

from .labeler import asked_key, claims, list_answer, list_items, reading, statements, truth
from .world import CATEGORIES

CHECKABLE = ("arithmetic", "facts", "lists")


def verifies(prompt: dict) -> bool:
    """Whether the verifier can check answers to `prompt` (a prompt record of the world)."""
    category = prompt["category"]
    if category not in CATEGORIES:
        raise ValueError(f"unknown prompt category {category!r} in prompt {prompt.get('id')}")
    return category in CHECKABLE


def verifier_reward(prompt: dict, response: str, terminated: bool = True) -> float:
    """1.0 if `response` (text without eos) answers `prompt` exactly right, else 0.0 (see the
    module docstring). ValueError for a prompt whose category has no checkable answer."""
    if not verifies(prompt):
        raise ValueError(f"the verifier cannot check a {prompt['category']!r} prompt "
                         f"({prompt.get('id')}); see verifies(prompt)")
    if not terminated:
        return 0.0
    stated = statements(reading(response.split())[1])
    if prompt["category"] == "lists":
        items, wrong, complete = list_answer(prompt, [list_items(prompt, t, s) for t, s in stated])
        return float(bool(items) and not wrong and complete)
    key = asked_key(prompt)
    values = [value for t, s in stated for k, value in claims(prompt, t, s) if k == key]
    return float(bool(values) and all(value == truth(key) for value in values))


def verifier_scores(prompts: list[dict], responses: list[str], terminated) -> torch.Tensor:
    """`verifier_reward` of each (prompt, response, terminated) as a float32 tensor (B,), the
    shape of a reward model's scores, so it can stand in for one. `terminated` is a sequence
    or a bool tensor (B,). ValueError if the lengths differ or any prompt is not checkable."""
    terminated = [bool(t) for t in terminated]
    if not len(prompts) == len(responses) == len(terminated):
        raise ValueError(f"verifier_scores: {len(prompts)} prompts, {len(responses)} responses "
                         f"and {len(terminated)} terminated flags must match")
    return torch.tensor([verifier_reward(p, r, t) for p, r, t in
                         zip(prompts, responses, terminated)], dtype=torch.float32)
