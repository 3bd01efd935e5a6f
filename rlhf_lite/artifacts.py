"""Trained stages on disk: load a stage's checkpoint, or rebuild it with its canonical recipe.

Each notebook trains one stage and saves it under artifacts/<preset>/<stage>.pt. A later
notebook asks for earlier stages here: if the checkpoint exists, is complete and was made
with the preset's recipe, it is loaded in a second; otherwise the stage is trained again with
that recipe. So every notebook also runs alone, in any order.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from . import paths
from .model import GPT, GPTConfig
from .presets import Preset, get_preset


def checkpoint_path(stage: str, preset: str = "toy") -> Path:
    return paths.ARTIFACTS_DIR / preset / f"{stage}.pt"


def _build_base(preset: str) -> None:
    from .data import load_records
    from .pretrain import pretrain
    from .tokenizer import load_tokenizer

    texts = {n: [r["text"] for r in load_records(f"pretrain_{n}")] for n in ("train", "val")}
    pretrain(get_preset(preset).pretrain, load_tokenizer(), texts["train"], texts["val"],
             checkpoint_path=checkpoint_path("base", preset))


def _load_gpt(ckpt: dict) -> GPT:
    model = GPT(GPTConfig(**ckpt["extra_state"]["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model


@dataclass
class Stage:
    build: Callable[[str], None]  # trains the stage of a preset into its checkpoint (resumes)
    recipe: Callable[[Preset], object]  # the preset's config dataclass for this stage
    load: Callable[[dict], torch.nn.Module]  # model from a checkpoint dict


STAGES = {"base": Stage(_build_base, lambda p: p.pretrain, _load_gpt)}


def status(stage: str, preset: str = "toy") -> str:
    """'missing', 'stale' (made with another recipe), 'partial' (interrupted) or 'done'."""
    path = checkpoint_path(stage, preset)
    if not path.exists():
        return "missing"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt["extra_state"]["recipe"] != asdict(STAGES[stage].recipe(get_preset(preset))):
        return "stale"
    return "done" if ckpt["step"] >= ckpt["config"]["max_steps"] else "partial"


def load_model(stage: str, preset: str = "toy", rebuild: bool = False) -> torch.nn.Module:
    """The trained model of `stage` (e.g. "base"): loaded, resumed, or trained from scratch."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; choose from {sorted(STAGES)}")
    path, state = checkpoint_path(stage, preset), status(stage, preset)
    if rebuild or state == "stale":
        path.unlink(missing_ok=True)  # another recipe's weights must not be resumed
    if rebuild or state != "done":
        print(f"stage '{stage}' ({preset} preset) is {'rebuilt' if rebuild else state}: "
              f"training it into {path}")
        STAGES[stage].build(preset)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return STAGES[stage].load(ckpt).eval()
