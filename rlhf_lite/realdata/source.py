"""A preference data set as the stages' data source, and the gold reward model it is judged by.

`PreferenceSource` gives the stages a real data set through the interface the toy world
gives them its data (`rlhf_lite.datasource`), divided by prompt once
(`preference_data.split_comparisons`): SFT learns the preferred responses of the policy
half, the reward model its pairs, PPO samples its prompts. There is no gold labeler to ask
about new answers, so the "gold_rm" stage (`build_gold`) trains the judge on the gold half,
which no other stage reads (Gao et al. 2022, "Scaling laws for reward model
overoptimization"), and `rlhf_lite.realdata.gold_eval` judges the policies with it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import reward
from ..datasource import stage_recipe
from ..utils import integer, nested, optional, rule
from .preference_data import (
    PreferenceData,
    preferred_as_demonstrations,
    prompt_records,
    split_comparisons,
)


@dataclass
class PreferenceRewardConfig(reward.RewardConfig):
    """A reward model on a preference data set's pairs: the "rm" stage learns from its policy
    half, the "gold_rm" stage from its gold half. The fields that sample and rank (k, rounds,
    val_rounds, temperature, the seeds) are unused: people made the rankings."""
    # train on the first N comparisons of its part only (random prompts): Gao et al. (2022)
    # vary how much data a proxy RM has, and train the gold RM on more; None: all of them
    max_pairs: int | None = rule(None, optional(integer(1)))


@dataclass(frozen=True)
class PreferenceSource:
    """The data source of a real-data preset (`rlhf_lite.datasource.DataSource`): the parts of
    `dataset` (`preference_data.PARTS`). Its rankings are K = 2 pairs that people labelled; the
    preferred responses stand in for demonstrations."""
    dataset: PreferenceData = nested(PreferenceData)
    gold_judge = None  # no labeler to ask about a new answer: the gold RM judges afterwards

    @property
    def recipe(self) -> dict:
        """The source, its division and its file's digest: another file makes a stage stale."""
        return {"data": dataclasses.asdict(self.dataset)}

    def part(self, name: str, tokenizer) -> list[dict]:
        return split_comparisons(self.dataset, tokenizer)[name]

    def demonstrations(self, split: str, tokenizer) -> list[dict]:
        return preferred_as_demonstrations(self.part(split, tokenizer))

    def rankings(self, split: str, tokenizer, sft_model, rm_cfg: PreferenceRewardConfig
                 ) -> list[dict]:
        """The pairs of `split`; for "train" the first `rm_cfg.max_pairs`."""
        pairs = self.part(split, tokenizer)
        return pairs[: rm_cfg.max_pairs] if split == "train" else pairs

    def normalizing_demonstrations(self, train_rankings: list[dict]) -> list[dict]:
        return preferred_as_demonstrations(train_rankings)

    def prompts(self, split: str, tokenizer) -> list[dict]:
        return prompt_records(self.part(split, tokenizer))

    def pretraining_text(self, split: str) -> list[str]:
        raise ValueError("a preference data set has no pretraining text of its kind: PPO-ptx "
                         "(ptx_coef > 0) is for the toy world only; set ptx_coef to 0")


def build_gold(cfg: PreferenceRewardConfig, data: PreferenceSource, tokenizer, inputs: dict,
               path) -> None:
    """The "gold_rm" stage (rlhf_lite.stages): the judge of a real-data preset, a reward model
    trained on the gold half of its data set, which no other stage reads, from the base model
    (not from SFT, which learnt the policy half), into `path`. Gao et al. (2022) judge
    policies offline so: the proxy RM that PPO optimises is not the judge."""
    if not isinstance(data, PreferenceSource):
        raise TypeError(f"the gold_rm stage trains on a preference data set's gold half: its "
                        f"preset's data must be a PreferenceSource, got {type(data).__name__}")
    pairs = data.part("gold_train", tokenizer)[: cfg.max_pairs]
    reward.train_reward_model(cfg, inputs["base"], tokenizer, pairs,
                              data.part("gold_validation", tokenizer),
                              preferred_as_demonstrations(pairs), checkpoint_path=path,
                              start_role="base", recipe=stage_recipe(cfg, data))
