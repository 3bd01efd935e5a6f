"""Where the stages get their data: one small interface, the toy world its first implementation.

Every stage that learns from data asks its preset's data source (`Preset.data`) and nothing
else, so the stage modules do not know which world they train in:

    demonstrations(split, tokenizer)    SFT's {"prompt_id", "prompt", "response"} records
    rankings(split, tokenizer, sft, rm) the reward model's rankings (rlhf_lite.comparisons)
    normalizing_demonstrations(train)   what the trained RM's bias is shifted to score 0 on
    prompts(split, tokenizer)           the {"id", "prompt"} records PPO samples from
    pretraining_text(split)             the text PPO-ptx keeps the policy close to
    gold_judge                          (prompt, response, terminated) -> score, logged by
                                        PPO; None where no gold labeler exists
    recipe                              what the checkpoint of a stage that reads it records
                                        beside the stage's config (`stage_recipe`): another
                                        data set makes that stage stale

Splits are "train" and "validation"; the held-out prompts are only the evaluation's.

`ToyWorld` is the course's world: the files under data/ (their bytes and the gold labeler's
version are every checkpoint's `data` fingerprint already, so its `recipe` adds nothing), the
gold labeler, and rankings
sampled from the SFT policy and ranked by that labeler. A real preference data set is the
other implementation (`rlhf_lite.realdata.PreferenceSource`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, ClassVar, Protocol

from .comparisons import sample_rankings
from .data import load_records
from .labeler import gold_score


class DataSource(Protocol):
    gold_judge: Callable[[dict, str, bool], float] | None
    recipe: dict

    def demonstrations(self, split: str, tokenizer) -> list[dict]: ...

    def rankings(self, split: str, tokenizer, sft_model, rm_cfg) -> list[dict]: ...

    def normalizing_demonstrations(self, train_rankings: list[dict]) -> list[dict]: ...

    def prompts(self, split: str, tokenizer) -> list[dict]: ...

    def pretraining_text(self, split: str) -> list[str]: ...


def stage_recipe(cfg, data: DataSource | None) -> dict:
    """What a stage's checkpoint records as its recipe: its config, and what `data` (None: a
    stage that reads no data source) says about itself."""
    return {**asdict(cfg), **(data.recipe if data is not None else {})}


@dataclass(frozen=True)
class ToyWorld:
    """The toy world (module docstring): labeler demonstrations, sampled and labelled rankings."""
    gold_judge: ClassVar = staticmethod(gold_score)
    recipe: ClassVar[dict] = {}  # the data files are in every checkpoint's data fingerprint

    def demonstrations(self, split: str, tokenizer) -> list[dict]:
        return [d for d in load_records("demonstrations") if d["prompt_id"].startswith(f"{split}-")]

    def rankings(self, split: str, tokenizer, sft_model, rm_cfg) -> list[dict]:
        """K completions of each prompt of `split`, sampled from the SFT policy (seeded) and
        ranked by the gold labeler (`comparisons.sample_rankings`)."""
        return sample_rankings(rm_cfg, sft_model, tokenizer, load_records(f"prompts_{split}"),
                               split)

    def normalizing_demonstrations(self, train_rankings: list[dict]) -> list[dict]:
        return load_records("demonstrations")  # the labelers' own answers (paper sec 3.5)

    def prompts(self, split: str, tokenizer) -> list[dict]:
        return load_records(f"prompts_{split}")

    def pretraining_text(self, split: str) -> list[str]:
        return [r["text"] for r in load_records(f"pretrain_{split}")]
