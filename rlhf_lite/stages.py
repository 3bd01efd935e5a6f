"""The stage registry: every stage of the pipeline, declared once.

A stage is a model trained by one recipe from the models of earlier stages. Its entry says
everything the rest of the course needs to know about it:

- `artifacts` stores it as artifacts/<preset>/<name>.pt, rebuilds it with the preset's recipe
  (`Preset.<name>`) when it is missing or stale, and loads its `inputs` first;
- `pipeline` builds the stages group by group (a group's stages are independent and train
  side by side) and evaluates every stage that has a `label`;
- `doctor` reports the state of each stage on disk; notebook 8 tables the labelled ones.

To add a stage: write its module (a config dataclass and `build(cfg, data, tokenizer,
inputs, path)`, which trains into `path` and may resume from it; `data` is the preset's data
source, `rlhf_lite.datasource`), add its recipe as a `Preset` field of the same name (`None`
in a preset that does not train it), and add one entry below.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import dpo, ppo, pretrain, reward, sft
from .model import GPT, GPTConfig
from .realdata import build_gold


@dataclass
class Stage:
    name: str  # checkpoint file name and the Preset field that holds the stage's recipe
    # build(recipe, data, tokenizer, {input stage: model}, path): trains into `path`, resuming
    # there; `data` is the preset's data source, or None for a stage that reads none
    build: Callable[..., None]
    model: Callable[[GPTConfig], torch.nn.Module] = GPT  # the module a checkpoint loads into
    inputs: tuple[str, ...] = ()  # stages whose trained models it starts from
    group: int = 0  # build order; the stages of one group are independent of each other
    label: str | None = None  # its name in evaluation tables; None: not evaluated as a policy
    prompted: bool = False  # evaluated with a few-shot prefix (the paper's prompted GPT-3)
    # torch threads it is trained with: float sums depend on the thread count, so a stage
    # rebuilt from another notebook or the pipeline is then the same model bit for bit
    threads: int = 2
    # whether it learns from the preset's data source (`rlhf_lite.datasource`), whose `recipe`
    # its checkpoint then records: the base model learns the world's text whatever the data,
    # DPO the rankings its reward model stage saved
    reads_data: bool = True
    # file_inputs(folder) -> {name: digest} of the files in its preset's artifacts folder it
    # trains from (DPO: the rankings the rm stage saved there), which its checkpoint records
    # among its inputs: an edited file makes it stale. None: it reads no such file (the data
    # source's files are in every checkpoint's data fingerprint or its recipe)
    file_inputs: Callable[[Path], dict[str, str]] | None = None


def _reward_model(config: GPTConfig) -> torch.nn.Module:
    return reward.RewardModel(GPT(config))


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("base", pretrain.build, group=0, label="base (prompted)", prompted=True,
          reads_data=False),
    Stage("sft", sft.build, inputs=("base",), group=1, label="SFT"),
    Stage("rm", reward.build, _reward_model, inputs=("sft",), group=2),
    # real-data presets only (gpt2-hh): the judge, a reward model on comparisons no other
    # stage sees, from the base model; not a policy, so not evaluated as one
    Stage("gold_rm", build_gold, _reward_model, inputs=("base",), group=2),
    Stage("ppo", ppo.build, inputs=("sft", "rm"), group=3, label="PPO", threads=1),
    Stage("ppo_ptx", ppo.build, inputs=("sft", "rm"), group=3, label="PPO-ptx", threads=1),
    # beyond InstructGPT (notebook 9): no RL, and RL without a value model
    Stage("dpo", dpo.build, inputs=("sft", "rm"), group=3, label="DPO", threads=1,
          reads_data=False, file_inputs=dpo.file_inputs),
    Stage("rloo", ppo.build, inputs=("sft", "rm"), group=3, label="RLOO", threads=1),
    # notebook 10: Dr. GRPO against the verifier (the rm stage's model is its input only
    # because PPOTrainer takes one; it scores nothing)
    Stage("grpo_verifier", ppo.build, inputs=("sft", "rm"), group=3, label="GRPO (verifier)",
          threads=1),
)}


def models() -> dict[str, Stage]:
    """The stages evaluated as policies (the paper's Figure 1), in order: label -> stage."""
    return {s.label: s for s in STAGES.values() if s.label}


def groups() -> list[list[str]]:
    """Stage names by group, in build order."""
    order = sorted({s.group for s in STAGES.values()})
    return [[s.name for s in STAGES.values() if s.group == g] for g in order]


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; choose from {sorted(STAGES)}")
    return STAGES[name]
