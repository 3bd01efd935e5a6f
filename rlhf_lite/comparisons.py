"""Rankings: the comparisons a reward model (and DPO) learns from.

InstructGPT's labelers ranked K = 4..9 completions of a prompt (Ouyang et al. 2022, sec 3.4);
a ranking of K implies C(K, 2) comparisons. This module holds everything about rankings that
is not a model: sampling K completions from the SFT policy and having a labeler rank them
(`make_rankings`, `sample_rankings`), checking a record (`check_ranking`), reading and writing
them beside a stage's checkpoint (`read_rankings`, `save_rankings`), and laying a batch of
rankings out as rows and pairs (`flatten_rankings`). The reward model (rlhf_lite.reward) and
DPO (rlhf_lite.dpo) both train on them.

A ranking record: {"prompt_id", "prompt", "responses" (K texts without eos), "terminated"
(K bools: ended with eos), "ranking" (K indices, best first)}.
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import distributed
from .data import SCHEMAS, DataError, read_jsonl, write_jsonl
from .generation import complete
from .labeler import GoldLabeler, ranking_to_pairs
from .model import GPT


def make_rankings(policy: GPT, tokenizer, prompts: list[dict], k: int, labeler: GoldLabeler,
                  rounds: int = 1, seed: int = 0, temperature: float = 1.0,
                  max_new_tokens: int = 24) -> list[dict]:
    """Sample K completions per prompt and round from `policy`; `labeler` ranks each set.

    Returns one record per (round, prompt): {"prompt_id", "prompt", "responses" (K texts
    without eos), "terminated" (K bools: ended with eos), "ranking" (K indices, best first)}.
    """
    repeated = [p for _ in range(rounds) for p in prompts for _ in range(k)]
    completions = complete(policy, tokenizer, repeated, max_new_tokens=max_new_tokens,
                           temperature=temperature, seed=seed, batch_size=256)
    return rank_groups(repeated, completions, k, labeler)


def rank_groups(repeated: list[dict], completions: list, k: int, labeler: GoldLabeler
                ) -> list[dict]:
    """One ranking record per consecutive group of K `completions` (`generation.Completion`s)
    of the prompt records `repeated` (each prompt K times in a row), ranked by `labeler`."""
    records = []
    for i in range(0, len(repeated), k):
        prompt, group = repeated[i], completions[i: i + k]
        responses, terminated = [c.text for c in group], [c.terminated for c in group]
        records.append({"prompt_id": prompt["id"], "prompt": prompt["prompt"],
                        "responses": responses, "terminated": terminated,
                        "ranking": labeler.rank(prompt, responses, terminated)})
    return records


def sample_rankings(cfg, policy: GPT, tokenizer, prompts: list[dict], split: str
                    ) -> list[dict]:
    """The rankings of a split ("train" or "validation") with the rounds, seeds, K and sampling
    settings of `cfg` (a `reward.RewardConfig`).

    Each split has its own labeler and sampling seed: validation rankings come from other
    samples ranked by another labeler than the ones the RM trains on.
    """
    recipes = {"train": (cfg.rounds, cfg.labeler_seed, cfg.sample_seed),
               "validation": (cfg.val_rounds, cfg.val_labeler_seed, cfg.sample_seed + 1)}
    if split not in recipes:
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    rounds, labeler_seed, seed = recipes[split]
    return make_rankings(policy, tokenizer, prompts, cfg.k, GoldLabeler(seed=labeler_seed), rounds,
                         seed, cfg.temperature, cfg.max_new_tokens)


def check_ranking(record: dict, where: str) -> None:
    """Raise a DataError (prefixed with `where`, e.g. "file, line 3") unless `record` is a
    valid ranking: K >= 2 responses, K terminated flags, and a permutation of range(K)."""
    for name, kind in SCHEMAS["rankings"].items():
        if not isinstance(record.get(name), kind):
            raise DataError(f"{where}: field '{name}' should be {kind.__name__}, "
                            f"got {type(record.get(name)).__name__}")
    responses, terminated, ranking = record["responses"], record["terminated"], record["ranking"]
    k = len(responses)
    if k < 2:
        raise DataError(f"{where}: field 'responses' needs at least 2 responses to rank, got {k}")
    if not all(isinstance(r, str) for r in responses):
        raise DataError(f"{where}: field 'responses' should hold strings")
    if len(terminated) != k or not all(isinstance(t, bool) for t in terminated):
        raise DataError(f"{where}: field 'terminated' should hold {k} booleans (one per "
                        f"response), got {terminated}")
    if not all(type(i) is int for i in ranking) or sorted(ranking) != list(range(k)):
        raise DataError(f"{where}: field 'ranking' should be a permutation of 0..{k - 1} (each "
                        f"response once, best first), got {ranking}")


def read_rankings(path: str | Path) -> list[dict]:
    """Rankings saved as JSONL (data.write_jsonl), each checked with `check_ranking`."""
    records = read_jsonl(path, SCHEMAS["rankings"])
    for line_no, record in enumerate(records, start=1):  # read_jsonl allows no blank lines
        check_ranking(record, f"{path}, line {line_no}")
    return records


def flatten_rankings(rankings: list[dict]
                     ) -> tuple[list[str], list[str], list[bool], torch.Tensor, torch.Tensor]:
    """Every response of `rankings` as one row, and every pair as two row indices.

    Returns prompts, responses, terminated (M each, M = sum of the rankings' K, in order) and
    chosen, rejected (P,): the rows of each pair's preferred and dispreferred response,
    P = sum of C(K, 2).
    """
    prompts, responses, terminated, chosen, rejected = [], [], [], [], []
    for record in rankings:
        offset = len(responses)
        for c, r in ranking_to_pairs(record["ranking"]):
            chosen.append(offset + c)
            rejected.append(offset + r)
        prompts += [record["prompt"]] * len(record["responses"])
        responses += record["responses"]
        terminated += record["terminated"]
    return prompts, responses, terminated, torch.tensor(chosen), torch.tensor(rejected)


def pairs_ordered(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """(P,) per pair of scores: 1 where chosen > rejected, 1/2 for an exact tie (a coin flip),
    else 0: the per-pair outcomes whose mean is the accuracy, to pair two scorers pair by pair."""
    return (chosen > rejected).float() + 0.5 * (chosen == rejected).float()


def accuracy_from_scores(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of pairs with chosen > rejected; an exact tie counts 1/2 (a coin flip)."""
    return pairs_ordered(chosen, rejected).mean().item()


def pair_prompt_ids(rankings: list[dict]) -> list[str]:
    """The prompt id of every pair of `rankings`, in `flatten_rankings`'s order (P,): the
    groups to resample when comparing two scorers pair by pair."""
    return [record["prompt_id"] for record in rankings
            for _ in ranking_to_pairs(record["ranking"])]


def rankings_file(folder: str | Path, split: str) -> Path:
    """Where the "rm" stage keeps the rankings of a split, beside its checkpoint."""
    return Path(folder) / f"rankings_{split}.jsonl"


def save_rankings(rankings: dict[str, list[dict]], folder: str | Path) -> None:
    """Write {split: rankings} into `folder` (atomically; one process under torchrun)."""
    if distributed.is_main_process():  # every process sampled the same rankings; one writes
        for split, records in rankings.items():
            write_jsonl(rankings_file(folder, split), records)
    distributed.barrier()
