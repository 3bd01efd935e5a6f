"""Named recipes: one object holds every stage's configuration for a scale of the course.

`toy` is the CPU course the notebooks run by default. Later stages add their config here,
so a notebook or the pipeline switches scale by changing one name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .ppo import PPOConfig
from .pretrain import PretrainConfig
from .reward import RewardConfig
from .sft import SFTConfig


@dataclass
class Preset:
    name: str  # the name notebooks and the pipeline use
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # stage 0: base model
    sft: SFTConfig = field(default_factory=SFTConfig)  # stage 1: supervised fine-tuning
    reward: RewardConfig = field(default_factory=RewardConfig)  # stage 2: reward model
    ppo: PPOConfig = field(default_factory=PPOConfig)  # stage 3: PPO against the reward model


PRESETS = {"toy": Preset("toy")}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
