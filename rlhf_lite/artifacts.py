"""Trained stages on disk: load a stage's checkpoint, or rebuild it with its canonical recipe.

Each notebook trains one stage and saves it under artifacts/<preset>/<stage>.pt. A later
notebook asks for earlier stages here: if the checkpoint exists, is complete and was made
with the preset's recipe, it is loaded in a second; otherwise the stage is trained again with
that recipe. So every notebook also runs alone, in any order.

A stage is also stale when a model it was trained from has changed since: each checkpoint
records the fingerprints of its inputs (the RM: the SFT model it started from; PPO: the SFT
model and the reward model), and an SFT model retrained in notebook 2 makes the reward
model and the PPO policies stale, which are then trained again from the new one.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from . import distributed, paths
from .hf import PretrainedConfig
from .model import GPT, GPTConfig
from .presets import PRESETS, Preset, get_preset
from .utils import fingerprint, pick_device, run_in_processes


def checkpoint_path(stage: str, preset: str = "toy") -> Path:
    return paths.ARTIFACTS_DIR / preset / f"{stage}.pt"


def rankings_path(split: str, preset: str = "toy") -> Path:
    """Where the "rm" stage saves the rankings it trained ("train") and validated ("validation") on."""
    return paths.ARTIFACTS_DIR / preset / f"rankings_{split}.jsonl"


def _build_base(preset: str) -> None:
    """Pretrain on the world's text, or (a `PretrainedConfig`) convert a GPT-2 checkpoint."""
    from .data import load_records
    from .pretrain import pretrain

    p = get_preset(preset)
    if isinstance(p.pretrain, PretrainedConfig):
        _save_pretrained_base(p.pretrain, checkpoint_path("base", preset))
        return
    texts = {n: [r["text"] for r in load_records(f"pretrain_{n}")] for n in ("train", "val")}
    pretrain(p.pretrain, p.load_tokenizer(), texts["train"], texts["val"],
             checkpoint_path=checkpoint_path("base", preset))


def _save_pretrained_base(cfg: PretrainedConfig, path: Path) -> None:
    """The checkpoint as a finished stage (0 of 0 steps), so later stages load it like any base."""
    from .hf import load_pretrained

    model, _ = load_pretrained(cfg.checkpoint)
    distributed.save_on_main(  # under torchrun one process writes, the others wait for the file
        {"model": model.state_dict(), "step": 0, "config": {"max_steps": 0}, "history": {},
         "extra_state": {"model_config": asdict(model.config), "recipe": cfg.as_dict()}}, path)


def _build_sft(preset: str) -> None:
    from .data import load_records
    from .sft import train_sft

    p, demos = get_preset(preset), load_records("demonstrations")
    train_sft(p.sft, load_model("base", preset), p.load_tokenizer(),
              [d for d in demos if d["prompt_id"].startswith("train-")],
              [d for d in demos if d["prompt_id"].startswith("validation-")],
              checkpoint_path=checkpoint_path("sft", preset))


def _build_rm(preset: str) -> None:
    """Sample and rank completions of the SFT policy (saved as JSONL), then train the RM.

    Rankings of train prompts train it; rankings of validation prompts measure its accuracy
    (the held-out prompts stay unseen for the final evaluation). Sampling is seeded, so a
    resumed build re-creates the same rankings.
    """
    from .data import load_records
    from .reward import train_reward_model

    p = get_preset(preset)
    rankings = {split: _sample_rankings(split, preset) for split in ("train", "validation")}
    save_rankings(rankings, preset)
    train_reward_model(p.reward, load_model("sft", preset), p.load_tokenizer(), rankings["train"],
                       rankings["validation"], load_records("demonstrations"),
                       checkpoint_path=checkpoint_path("rm", preset))


def _sample_rankings(split: str, preset: str) -> list[dict]:
    """The preset's SFT policy sampled and ranked by the gold labeler on one split (seeded)."""
    from .data import load_records
    from .reward import sample_rankings

    p = get_preset(preset)
    return sample_rankings(p.reward, load_model("sft", preset), p.load_tokenizer(),
                           load_records(f"prompts_{split}"), split)


def save_rankings(rankings: dict[str, list[dict]], preset: str = "toy") -> None:
    """Write {split: rankings} where `load_rankings` finds them (one process under torchrun)."""
    from .world import write_jsonl

    if distributed.is_main_process():  # every process sampled the same rankings; one writes
        for split, records in rankings.items():
            rankings_path(split, preset).parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(rankings_path(split, preset), records)
    distributed.barrier()


def load_rankings(split: str, preset: str = "toy") -> list[dict]:
    """The rankings the "rm" stage used on a split; sampled again (seeded) if the file is gone."""
    from . import reward

    path = rankings_path(split, preset)
    if not path.exists():
        save_rankings({split: _sample_rankings(split, preset)}, preset)
    return reward.load_rankings(path)


def _build_ppo(preset: str, stage: str = "ppo") -> None:
    """PPO ("ppo") or PPO-ptx ("ppo_ptx", with the pretraining text) from this preset's SFT."""
    from .data import load_records
    from .labeler import gold_score
    from .ppo import PPOTrainer, save_policy
    from .pretrain import token_stream

    p = get_preset(preset)
    tokenizer = p.load_tokenizer()
    cfg = STAGES[stage].recipe(p)
    stream = (token_stream([r["text"] for r in load_records("pretrain_train")], tokenizer)
              if cfg.ptx_coef > 0 else None)
    trainer = PPOTrainer(cfg, load_model("sft", preset), load_model("rm", p.reward_source),
                         tokenizer, load_records("prompts_train"), gold_judge=gold_score,
                         pretrain_stream=stream)
    trainer.train()
    save_policy(trainer, checkpoint_path(stage, preset))


def _load_gpt(ckpt: dict) -> GPT:
    model = GPT(GPTConfig(**ckpt["extra_state"]["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model


@dataclass
class Stage:
    build: Callable[[str], None]  # trains the stage of a preset into its checkpoint (resumes)
    recipe: Callable[[Preset], object]  # the preset's config dataclass for this stage
    load: Callable[[dict], torch.nn.Module]  # model from a checkpoint dict
    # torch threads its notebook trains it with: float sums depend on the thread count, so a
    # stage rebuilt from another notebook or the pipeline is then the same model bit for bit
    threads: int = 2
    # the models it is trained from: {role in the checkpoint's "inputs": (stage, preset name)}
    inputs: Callable[[Preset], dict[str, tuple[str, str]]] = lambda p: {}


def _load_rm(ckpt: dict) -> torch.nn.Module:
    from .reward import RewardModel

    rm = RewardModel(GPT(GPTConfig(**ckpt["extra_state"]["model_config"])))
    rm.load_state_dict(ckpt["model"])
    return rm


def _policy_inputs(p: Preset) -> dict[str, tuple[str, str]]:
    return {"sft": ("sft", p.name), "rm": ("rm", p.reward_source)}


STAGES = {
    "base": Stage(_build_base, lambda p: p.pretrain, _load_gpt),
    "sft": Stage(_build_sft, lambda p: p.sft, _load_gpt, inputs=lambda p: {"base": ("base", p.name)}),
    "rm": Stage(_build_rm, lambda p: p.reward, _load_rm, inputs=lambda p: {"sft": ("sft", p.name)}),
    "ppo": Stage(_build_ppo, lambda p: p.ppo, _load_gpt, threads=1, inputs=_policy_inputs),
    "ppo_ptx": Stage(lambda preset: _build_ppo(preset, "ppo_ptx"), lambda p: p.ppo_ptx, _load_gpt,
                     threads=1, inputs=_policy_inputs),
}


def stages_of(preset: str) -> list[str]:
    """The stages a preset trains itself: all, but the reward model only when it does not
    borrow another preset's (`Preset.reward_preset`)."""
    borrows = get_preset(preset).reward_source != preset
    return [stage for stage in STAGES if not (stage == "rm" and borrows)]


def status(stage: str, preset: str = "toy") -> str:
    """'missing'; 'stale': made with another recipe, or from an input model (its SFT, its
    reward model) that is not done or has changed since; 'partial' (interrupted); 'done'."""
    path = checkpoint_path(stage, preset)
    if not path.exists():
        return "missing"
    ckpt = _read_checkpoint(path)
    if ckpt["extra_state"]["recipe"] != asdict(STAGES[stage].recipe(get_preset(preset))):
        return "stale"
    recorded = ckpt["extra_state"].get("inputs", {})
    for role, (input_stage, input_preset) in STAGES[stage].inputs(get_preset(preset)).items():
        if (status(input_stage, input_preset) != "done"
                or recorded.get(role) != _checkpoint_fingerprint(input_stage, input_preset)):
            return "stale"
    return "done" if ckpt["step"] >= ckpt["config"]["max_steps"] else "partial"


_fingerprints: dict[tuple, str] = {}  # (path, size, mtime) -> fingerprint: hash each file once


def _checkpoint_fingerprint(stage: str, preset: str) -> str:
    """`utils.fingerprint` of the weights in a stage's checkpoint."""
    path = checkpoint_path(stage, preset)
    file = path.stat()
    key = (str(path.resolve()), file.st_size, file.st_mtime_ns)
    if key not in _fingerprints:
        _fingerprints[key] = fingerprint(_read_checkpoint(path)["model"])
    return _fingerprints[key]


def _read_checkpoint(path: Path) -> dict:
    """A stage's checkpoint, memory-mapped: only what is used is read (status is asked before
    every load). A damaged or foreign file is an error that names it and says what to do."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        missing = [key for key in ("model", "step", "config", "extra_state") if key not in ckpt]
    except Exception as e:
        raise RuntimeError(f"{path} cannot be read ({type(e).__name__}: {e}); delete it to "
                           "retrain the stage") from e
    if missing or "recipe" not in ckpt["extra_state"]:
        raise RuntimeError(f"{path} is not a stage checkpoint of this course (no "
                           f"{', '.join(missing) or 'recipe'}); delete it to retrain the stage")
    return ckpt


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
        threads = torch.get_num_threads()
        torch.set_num_threads(STAGES[stage].threads)
        try:
            with get_preset(preset).runtime():  # the preset's device and autocast
                STAGES[stage].build(preset)
        finally:
            torch.set_num_threads(threads)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = STAGES[stage].load(ckpt).eval()  # on the device of the caller's device context
    for module in model.modules():
        if isinstance(module, GPT):
            module.gradient_checkpointing = get_preset(preset).gradient_checkpointing
    return model


def build_side_by_side(stages: list[str], preset: str = "toy", rebuild: bool = False) -> None:
    """Build independent stages (PPO and PPO-ptx) at once, one process each, when the CPU has a
    core for each; each is the same model bit for bit as built alone (its own thread count).
    On a GPU or under torchrun they are built one after the other."""
    todo = [stage for stage in stages if rebuild or status(stage, preset) != "done"]
    cores_needed = sum(STAGES[stage].threads for stage in todo)
    if (len(todo) < 2 or distributed.is_distributed() or cores_needed > (os.cpu_count() or 1)
            or pick_device(get_preset(preset).device).type != "cpu"):
        for stage in todo:
            load_model(stage, preset, rebuild)
        return
    # the processes start fresh: they get this process's preset and artifacts folder
    printed = run_in_processes(_build_alone, [(stage, get_preset(preset), paths.ARTIFACTS_DIR,
                                               rebuild) for stage in todo])
    print("".join(printed), end="")  # in stage order, not in the order the processes wrote


def _build_alone(stage: str, preset: Preset, artifacts_dir: Path, rebuild: bool) -> str:
    """Build one stage in a fresh process; returns what it printed."""
    PRESETS[preset.name], paths.ARTIFACTS_DIR = preset, artifacts_dir
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        load_model(stage, preset.name, rebuild)
    return printed.getvalue()


def load_history(stage: str, preset: str = "toy") -> list | dict:
    """The training log saved with a stage's checkpoint (for PPO stages: one dict per
    iteration, as `PPOTrainer.history`); the stage is trained first if it is not done."""
    load_model(stage, preset)
    return torch.load(checkpoint_path(stage, preset), map_location="cpu", weights_only=False)["history"]
