"""Trained stages on disk: load a stage's checkpoint, or rebuild it with its canonical recipe.

Each notebook trains one stage and saves it under artifacts/<preset>/<stage>.pt. A later
notebook asks for earlier stages here: if the checkpoint exists, is complete and was made
with the preset's recipe, it is loaded in a second; otherwise the stage is trained again with
that recipe. So every notebook also runs alone, in any order.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from . import paths
from .model import GPT, GPTConfig
from .presets import get_preset


def checkpoint_path(stage: str, preset: str = "toy") -> Path:
    return paths.ARTIFACTS_DIR / preset / f"{stage}.pt"


def _build_base(preset: str) -> None:
    from .data import load_records
    from .pretrain import pretrain
    from .tokenizer import load_tokenizer

    texts = {n: [r["text"] for r in load_records(f"pretrain_{n}")] for n in ("train", "val")}
    pretrain(get_preset(preset).pretrain, load_tokenizer(), texts["train"], texts["val"],
             checkpoint_path=checkpoint_path("base", preset))


# stage -> (function that trains it into its checkpoint, the preset's recipe for it)
BUILDERS = {"base": (_build_base, lambda p: p.pretrain)}


def status(stage: str, preset: str = "toy") -> str:
    """'missing', 'stale' (made with another recipe), 'partial' (interrupted) or 'done'."""
    path = checkpoint_path(stage, preset)
    if not path.exists():
        return "missing"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    recipe = BUILDERS[stage][1](get_preset(preset))
    if ckpt["extra_state"]["recipe"] != asdict(recipe):
        return "stale"
    return "done" if ckpt["step"] >= recipe.train.max_steps else "partial"


def load_model(stage: str, preset: str = "toy", rebuild: bool = False) -> GPT:
    """The trained model of `stage` (e.g. "base"): loaded, resumed, or trained from scratch."""
    if stage not in BUILDERS:
        raise KeyError(f"unknown stage {stage!r}; choose from {sorted(BUILDERS)}")
    path, state = checkpoint_path(stage, preset), status(stage, preset)
    if rebuild or state == "stale":
        path.unlink(missing_ok=True)  # another recipe's weights must not be resumed
    if rebuild or state != "done":
        print(f"stage '{stage}' ({preset} preset) is {'rebuilt' if rebuild else state}: "
              f"training it into {path}")
        BUILDERS[stage][0](preset)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**ckpt["extra_state"]["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()
