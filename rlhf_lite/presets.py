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

# PPO-ptx's gamma in the toy world (the paper: 27.8 with its own loss scaling); notebook 7's sweep
PTX_COEF = 0.1


@dataclass
class Preset:
    name: str  # the name notebooks and the pipeline use
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # stage 0: base model
    sft: SFTConfig = field(default_factory=SFTConfig)  # stage 1: supervised fine-tuning
    reward: RewardConfig = field(default_factory=RewardConfig)  # stage 2: reward model
    ppo: PPOConfig = field(default_factory=PPOConfig)  # stage 3: PPO against the reward model
    ppo_ptx: PPOConfig = field(  # stage 3 with pretraining gradients mixed in (notebook 7)
        default_factory=lambda: PPOConfig(ptx_coef=PTX_COEF))
    # whose reward model PPO trains against: None = this preset's own; the paper used one
    # 6B reward model for policies of every size, so a smaller preset can borrow a larger one's
    reward_preset: str | None = None

    @property
    def reward_source(self) -> str:
        return self.reward_preset or self.name


PRESETS = {
    "toy": Preset("toy"),
    # about 12x fewer parameters than toy (68k vs 826k): the small model of notebook 8, trained
    # against toy's reward model like the paper's 1.3B policy against its 6B reward model
    "tiny": Preset("tiny", pretrain=PretrainConfig(n_layer=2, n_head=4, n_embd=48),
                   reward_preset="toy"),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
