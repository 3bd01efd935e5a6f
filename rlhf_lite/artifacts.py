"""Trained stages on disk: load a stage's checkpoint, or rebuild it with its canonical recipe.

Each notebook trains one stage and saves it under artifacts/<preset>/<stage>.pt. A later
notebook asks for earlier stages here: if the checkpoint exists, is complete and was made
with the preset's recipe, it is loaded in a second; otherwise the stage is trained again with
that recipe (`rlhf_lite.stages` declares what each stage is built from). So every notebook
also runs alone, in any order.

A stage is also stale when a model it was trained from has changed since: each checkpoint
records the fingerprints of its inputs (the RM: the SFT model it started from; PPO: the SFT
model and the reward model), and an SFT model retrained in notebook 2 makes the reward
model and the PPO policies stale, which are then trained again from the new one. The same
holds for a file of this folder a stage trains from (DPO: the rankings the rm stage saved,
`Stage.file_inputs`): an edited ranking makes DPO stale.

Nothing good is deleted before its replacement exists: a stage is trained into
<stage>.partial.pt (resumed from there after an interruption) and moved over <stage>.pt only
when it has finished. A partial file whose weights no longer match their fingerprint is never
resumed: it is set aside as <stage>.partial.damaged.pt and the stage trains afresh, saying so
(`partial_state`).
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch

from . import checkpoints, comparisons, distributed, paths
from .datasource import stage_recipe
from .model import GPT, GPTConfig
from .paths import shown
from .presets import Preset, get_preset
from .stages import STAGES, get_stage
from .training import History
from .utils import pick_device, run_in_processes


def _preset(preset: str | Preset) -> Preset:
    return preset if isinstance(preset, Preset) else get_preset(preset)


def _source(p: Preset, stage: str) -> Preset:
    """The preset whose `stage` `p` uses: `p` itself (also as passed to a fresh process, where
    a test's preset is not registered), or the one it borrows the reward model from."""
    return p if p.source_of(stage) == p.name else get_preset(p.source_of(stage))


def _folder(preset: str | Preset) -> Path:
    """artifacts/<preset>/ under paths.ARTIFACTS_DIR (RLHF_ARTIFACTS_DIR, read at import)."""
    return paths.ARTIFACTS_DIR / _preset(preset).name


def checkpoint_path(stage: str, preset: str | Preset = "toy") -> Path:
    """Where a stage's finished checkpoint lives."""
    return _folder(preset) / f"{stage}.pt"


def partial_path(stage: str, preset: str | Preset = "toy") -> Path:
    """Where a stage is trained until it has finished (then it replaces `checkpoint_path`)."""
    return _folder(preset) / f"{stage}.partial.pt"


def rankings_path(split: str, preset: str | Preset = "toy") -> Path:
    """Where the "rm" stage saves the rankings it trained ("train") and validated
    ("validation") on."""
    return comparisons.rankings_file(_folder(preset), split)


def stages_of(preset: str | Preset) -> list[str]:
    """The stages a preset trains itself: those it has a recipe for (a `None` field: not
    trained), and the reward model only when it does not borrow another preset's
    (`Preset.reward_preset`)."""
    p = _preset(preset)
    return [stage for stage in STAGES
            if p.source_of(stage) == p.name and p.recipe(stage) is not None]


def _data(p: Preset, stage: str):
    """The data source `stage` of `p` learns from: the preset's, or None (`Stage.reads_data`)."""
    return p.data if get_stage(stage).reads_data else None


def _stale_reason(ckpt: checkpoints.Checkpoint, stage: str, p: Preset) -> str:
    """Why checkpoint `ckpt` of `stage` of `p` is stale, to be retrained ("" if it is not): its
    recipe, the data/ files, an input model or an input file (DPO's rankings) changed."""
    spec, cfg = get_stage(stage), p.recipe(stage)
    changed = checkpoints.changed_fields(ckpt.recipe, cfg, stage_recipe(cfg, _data(p, stage)))
    if changed:
        return f"the recipe's {', '.join(changed)} changed"
    if ckpt.data != checkpoints.data_fingerprint():
        return f"the files under {shown(paths.DATA_DIR)} changed"
    expected = spec.file_inputs(_folder(p)) if spec.file_inputs else {}
    for role in spec.inputs:
        source = _source(p, role)
        if (state := status(role, source)) != "done":
            return f"its input '{role}' is {state}, trained first"
        expected[role] = checkpoints.verified_fingerprint(checkpoint_path(role, source))
    if ckpt.inputs != expected:
        changed = [name for name in expected if ckpt.inputs.get(name) != expected[name]]
        return (f"its input {', '.join(repr(name) for name in changed)} changed since"
                if changed else "it records other inputs")
    return ""


def _state(ckpt: checkpoints.Checkpoint, stage: str, p: Preset) -> str:
    """'stale', 'partial' or 'done' for `ckpt`, a checkpoint of `stage` of `p`."""
    if _stale_reason(ckpt, stage, p):
        return "stale"
    return "done" if ckpt.done else "partial"


def stale_reason(stage: str, preset: str | Preset = "toy") -> str:
    """Why the finished checkpoint of `stage` is stale ("" if it is not, or there is none)."""
    final = checkpoint_path(stage, preset)
    return _stale_reason(checkpoints.read(final), stage, _preset(preset)) if final.exists() else ""


def partial_state(stage: str, preset: str | Preset = "toy", verify: bool = True
                  ) -> tuple[str, str]:
    """(state, why) of `stage`'s partial file; the state says what the next build does with it:
    "none": there is none; "resumable" (why: its step): a run of the current recipe from the
    current inputs, it continues from there; "stale" (why: `stale_reason`): deleted, the stage
    trains afresh; "damaged" (why: the error): it cannot be read or its weights do not match
    their fingerprint, set aside as <stage>.partial.damaged.pt, the stage trains afresh and says
    so (`training.resumable`). `verify=False` reads the metadata only (`status`): changed
    weights then read "resumable", and the build's own verified read finds them. A foreign
    file is a RuntimeError naming it."""
    path = partial_path(stage, preset)
    if not path.exists():
        return "none", ""
    try:
        ckpt = checkpoints.read(path, verify=verify)
    except checkpoints.DamagedCheckpoint as e:
        return "damaged", str(e)
    if reason := _stale_reason(ckpt, stage, _preset(preset)):
        return "stale", reason
    return "resumable", f"step {ckpt.step} of {ckpt.max_steps}"


def status(stage: str, preset: str | Preset = "toy") -> str:
    """'missing'; 'stale': made with another recipe, or from an input model (its SFT, its
    reward model) or input file (DPO's rankings) that is not done or has changed since;
    'partial': a run of the current recipe was interrupted (it resumes: `partial_state`);
    'done'. A damaged or foreign finished checkpoint is a RuntimeError naming it."""
    p, final = _preset(preset), checkpoint_path(stage, preset)
    final_state = _state(checkpoints.read(final), stage, p) if final.exists() else None
    if final_state == "done":
        checkpoints.verified_fingerprint(final)  # flipped bytes in the weights are not "done"
        return "done"
    if partial_state(stage, p, verify=False)[0] == "resumable":  # metadata only: cheap
        return "partial"
    return final_state or "missing"


def stage_threads(stage: str, preset: str | Preset = "toy") -> int:
    """The torch threads `stage` trains with: the preset's `threads` (0: every core), or when
    that is None the registry's `Stage.threads`."""
    chosen = _preset(preset).threads
    chosen = get_stage(stage).threads if chosen is None else chosen
    return chosen or os.cpu_count() or 1


def build(stage: str, preset: str | Preset = "toy", rebuild: bool = False) -> None:
    """Train `stage` with the preset's recipe from its input models (loaded, or built first),
    into its partial file, then move it over the finished checkpoint. `rebuild` starts the
    partial file afresh; the old finished checkpoint stays until the new one replaces it. A
    damaged partial file is set aside by the stage's trainer (`training.resumable`)."""
    if problems := paths.settings_problems():  # found at the first save, after training
        raise RuntimeError("; ".join(problems))
    p, spec = _preset(preset), get_stage(stage)
    final, partial = checkpoint_path(stage, p), partial_path(stage, p)
    # verified (hashed once: the trainer's own read reuses it), so what is said is what happens
    partial_now, _ = partial_state(stage, p)
    if partial.exists() and (rebuild or partial_now == "stale"):
        partial.unlink()  # another recipe's (or a forced run's) weights must not be resumed
    inputs = {role: load_model(role, _source(p, role)) for role in spec.inputs}
    state = ("rebuilt" if rebuild else "partial, but damaged" if partial_now == "damaged"
             else status(stage, p))
    print(f"stage '{stage}' ({p.name} preset) is {state}: training it into {shown(final)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(stage_threads(stage, p))
    try:
        with p.runtime():  # the preset's device and precision
            spec.build(p.recipe(stage), _data(p, stage), p.load_tokenizer(), inputs, partial)
    finally:
        torch.set_num_threads(threads)
    if distributed.is_main_process():
        os.replace(partial, final)
    distributed.barrier()


def load_model(stage: str, preset: str | Preset = "toy", rebuild: bool = False
               ) -> torch.nn.Module:
    """The trained model of `stage` (e.g. "base"): loaded, resumed, or trained from scratch."""
    spec, p = get_stage(stage), _preset(preset)
    if rebuild or status(stage, p) != "done":
        build(stage, p, rebuild)
    ckpt = checkpoints.read(checkpoint_path(stage, p), verify=True)  # hashed once, by status
    model = spec.model(GPTConfig(**ckpt.model_config))  # on the caller's device context
    model.load_state_dict(ckpt.model)
    for module in model.modules():
        if isinstance(module, GPT):
            module.gradient_checkpointing = p.gradient_checkpointing
    return model.eval()


def build_side_by_side(stages: list[str], preset: str | Preset = "toy", rebuild: bool = False,
                       processes: int | None = None) -> None:
    """Build independent single-threaded stages (the PPO stages, DPO) in processes of their
    own, `processes` at once (None: as many as the CPU has cores; the others wait for a free
    one); each is the same model bit for bit as built alone (its own thread count). Stages that
    use more threads, a single process or core, a GPU or torchrun: one after the other, here.
    Each process's progress bar is drawn here, labelled with its stage."""
    p = _preset(preset)
    processes = processes or os.cpu_count() or 1
    todo = [stage for stage in stages if rebuild or status(stage, p) != "done"]
    if (len(todo) < 2 or distributed.is_distributed() or processes < 2
            or any(stage_threads(stage, p) > 1 for stage in todo)
            or pick_device(p.device).type != "cpu"):
        for stage in todo:
            load_model(stage, p, rebuild)
        return
    # fresh processes: they get the preset itself and this process's artifacts folder (which a
    # test may have moved) as arguments
    printed = run_in_processes(_build_alone, [(stage, p, paths.ARTIFACTS_DIR, rebuild)
                                              for stage in todo], processes, labels=todo)
    print("".join(printed), end="")  # in stage order, not in the order the processes wrote


def _build_alone(stage: str, preset: Preset, artifacts_dir: Path, rebuild: bool) -> str:
    """Build one stage in a fresh process, under `artifacts_dir`; returns what it printed."""
    paths.ARTIFACTS_DIR = artifacts_dir
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        load_model(stage, preset, rebuild)
    return printed.getvalue()


def load_history(stage: str, preset: str | Preset = "toy") -> History:
    """The training log saved with a stage's checkpoint (PPO stages: one step per iteration,
    their metrics in `History.metrics`); the stage is trained first if it is not done."""
    load_model(stage, preset)
    return History.from_dict(checkpoints.read(checkpoint_path(stage, preset)).history)


def train_seconds(stage: str, preset: str | Preset = "toy"
                  ) -> float | None:
    """How long the finished checkpoint of `stage` took to train (seconds, summed over resumed
    runs; the rm stage: its training, not the sampling and ranking before it); None when the
    checkpoint does not record it or does not exist."""
    path = checkpoint_path(stage, preset)
    return checkpoints.read(path).seconds if path.exists() else None


def save_rankings(rankings: dict[str, list[dict]], preset: str | Preset = "toy") -> None:
    """Write {split: rankings} where `load_rankings` finds them."""
    comparisons.save_rankings(rankings, _folder(preset))


def load_rankings(split: str, preset: str | Preset = "toy"
                  ) -> list[dict]:
    """The rankings the "rm" stage used on a split; asked of the data source again if the file
    is gone (the toy world samples them again, seeded)."""
    path = rankings_path(split, preset)
    if not path.exists():
        p = _preset(preset)
        records = p.data.rankings(split, p.load_tokenizer(), load_model("sft", p),
                                  p.rm)
        save_rankings({split: records}, p)
    return comparisons.read_rankings(path)
