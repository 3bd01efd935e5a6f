"""Named recipes: one object holds every stage's configuration for a scale of the course.

`toy` is the CPU course the notebooks run by default. Later stages add their config here,
so a notebook or the pipeline switches scale by changing one name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .pretrain import PretrainConfig


@dataclass
class Preset:
    name: str  # the name notebooks and the pipeline use
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # stage 0: base model


PRESETS = {"toy": Preset("toy")}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
