"""Runs a notebook trains beside the stages (a beta sweep, one DPO run per beta), side by side
in processes, and saved like the stages so that re-executing the notebook or restarting its
kernel loads them in seconds.

`train_side_by_side(runs, saved_as="kl_sweep")` keeps each run in
artifacts/<preset>/runs/kl_sweep/<run name>.pt, a stage checkpoint (`rlhf_lite.checkpoints`:
one format, read without running code) whose key is the run's recipe:

    recipe   the function's qualified name and every other argument: a config as its fields
             (those that only steer the run left out: `checkpoints.result_fields`), a list of
             prompts or rankings and a tensor by a digest, a tokenizer by its vocabulary, a
             function by its qualified name
    inputs   every model argument by its weights (`checkpoints.fingerprint`)
    data     the data/ files (`checkpoints.data_fingerprint`)

A saved run whose key equals the current one is loaded; one whose key differs is stale and
trained again, saying what changed; a damaged one is set aside (`checkpoints.set_aside`) and
trained again. `retrain=True` (a notebook's RETRAIN switch) trains every run again.

A run function says how its result becomes a checkpoint and back (`saved_with`): PPO's trainer
through `ppo.save_policy`'s fields and `PPOTrainer.resume`; the (model, history) of SFT, the
reward model and DPO through the model's weights and the history (`model_checkpoint`). A
loaded run is the trained one: same weights, optimizer moments, generator state and log
(tests/test_runs.py).
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import re
from pathlib import Path

import torch

from . import checkpoints, paths
from .paths import shown
from .utils import run_in_processes


def saved_with(to_checkpoint, from_checkpoint):
    """Decorator of a run function `fn(*args, **kwargs)`: `to_checkpoint(result)` is the
    `checkpoints.Checkpoint` its result is saved as (recipe and inputs are filled in here), and
    `from_checkpoint(ckpt, *args, **kwargs)` the result again, rebuilt from the same arguments
    (`fn` is then not called)."""
    def declare(fn):
        fn.to_checkpoint, fn.from_checkpoint = to_checkpoint, from_checkpoint
        return fn
    return declare


def model_checkpoint(result: tuple) -> checkpoints.Checkpoint:
    """The checkpoint of a run whose result is (model, history) (`sft.train_sft`,
    `reward.train_reward_model`, `dpo.train_dpo`): the trained weights and the log; the run
    function's `from_checkpoint` builds the model as it does and loads them."""
    model, history = result
    steps = len(history.steps)
    return checkpoints.Checkpoint(model.state_dict(), step=steps, max_steps=steps,
                                  model_config=dataclasses.asdict(model.config),
                                  history=history.to_dict())


def _qualified(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _fingerprint(value, what: str):
    """What the key records of argument `value`: plain numbers and text as they are, a config
    by its fields, anything large by a digest. Anything else is a TypeError: a run that cannot
    be keyed must not be loaded for another."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return checkpoints.result_fields(dataclasses.asdict(value), value)
    if isinstance(value, torch.Tensor):
        return "tensor " + checkpoints.fingerprint({"": value})
    if hasattr(value, "get_vocab"):  # a tokenizer: its token ids and special tokens
        vocab = sorted(value.get_vocab().items())
        return "tokenizer " + _digest(json.dumps([vocab, value.special_tokens_map]).encode())
    if callable(value) and hasattr(value, "__qualname__"):
        return "function " + _qualified(value)
    try:  # prompts, rankings: lists and dicts of plain values
        return "records " + _digest(json.dumps(value, sort_keys=True).encode())
    except TypeError:
        raise TypeError(f"cannot key a saved run by {what} (a {type(value).__name__}): pass "
                        "configs, models, tensors, tokenizers, functions or plain data") from None


def run_key(fn, args: tuple, kwargs: dict) -> tuple[dict, dict]:
    """(recipe, inputs) of the run fn(*args, **kwargs): see the module docstring."""
    named = {**{f"argument {i}": a for i, a in enumerate(args)}, **kwargs}
    inputs = {name: checkpoints.fingerprint(v) for name, v in named.items()
              if isinstance(v, torch.nn.Module)}
    recipe = {"function": _qualified(fn), **{name: _fingerprint(v, name)
                                             for name, v in named.items() if name not in inputs}}
    return recipe, inputs


def run_path(name, saved_as: str, preset: str = "toy") -> Path:
    """Where run `name` of the group `saved_as` is saved: artifacts/<preset>/runs/<saved_as>/
    <name>.pt, the name with anything but letters, digits, ".", "+" and "-" as "_"."""
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", str(name)).strip("_")
    return paths.ARTIFACTS_DIR / preset / "runs" / saved_as / f"{slug}.pt"


def _saved(path: Path, recipe: dict, inputs: dict) -> tuple[checkpoints.Checkpoint | None, str]:
    """(the checkpoint at `path` if it is current, else None; why it is trained instead)."""
    if not path.exists():
        return None, "missing"
    try:
        ckpt = checkpoints.read(path, verify=True)
    except checkpoints.DamagedCheckpoint as e:
        aside = checkpoints.set_aside(path)
        return None, f"damaged: it {e.problem}, set aside as {shown(aside)}"
    if changed := checkpoints.differences(ckpt.recipe, recipe):
        return None, f"stale: its {', '.join(changed)} changed"
    if ckpt.data != checkpoints.data_fingerprint():
        return None, f"stale: the files under {shown(paths.DATA_DIR)} changed"
    if changed := checkpoints.differences(ckpt.inputs, inputs):
        return None, f"stale: its input model {', '.join(changed)} changed"
    return ckpt, ""


def train_side_by_side(runs: dict, saved_as: str | None = None, retrain: bool = False,
                       preset: str = "toy") -> dict:
    """Independent training runs side by side: {name: (fn, args, kwargs)} -> {name: result}.

    Each `fn(*args, **kwargs)` runs in a process of its own (`utils.run_in_processes`: as many
    at once as there are cores, in the order given, each drawing its progress bar here) with
    one torch thread, so its numbers are exactly those of running it alone with one thread; on
    a 2-core laptop two runs take the time of one. `fn` must be a module-level function
    (`ppo.train_run`, `dpo.train_dpo`); its result (models included) comes back through
    `torch.save`. Put the longest runs first: the shorter ones then share the remaining cores.

    `saved_as`: the runs are saved under that group name (`run_path`; `fn` declared with
    `saved_with`) and a current saved run is loaded instead of trained; `retrain`: trained
    again all the same. Each run says in one line whether it is loaded or trained, and why.
    """
    results, todo = {}, {}
    if saved_as is not None:
        _check_saveable(runs, saved_as, preset)
    for name, (fn, args, kwargs) in runs.items():
        if saved_as is None:
            todo[name] = None
            continue
        path = run_path(name, saved_as, preset)
        recipe, inputs = run_key(fn, args, kwargs)
        ckpt, why = (None, "retrained on request") if retrain else _saved(path, recipe, inputs)
        if ckpt is None:
            print(f"run '{name}' is {why}: training it into {shown(path)}")
            todo[name] = (path, recipe, inputs)
            continue
        saved = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        print(f"run '{name}' loaded from {shown(path)} (saved {saved}, trained in "
              f"{ckpt.seconds or 0:.0f} s)")
        results[name] = fn.from_checkpoint(ckpt, *args, **kwargs)
    if todo:
        blobs = run_in_processes(_one_thread, [runs[name] for name in todo],
                                 labels=[str(name) for name in todo])
        for (name, saving), blob in zip(todo.items(), blobs):
            results[name] = torch.load(io.BytesIO(blob), weights_only=False)
            if saving is not None:
                path, recipe, inputs = saving
                ckpt = runs[name][0].to_checkpoint(results[name])
                checkpoints.save(dataclasses.replace(ckpt, recipe=recipe, inputs=inputs), path)
    return {name: results[name] for name in runs}


def _check_saveable(runs: dict, saved_as: str, preset: str) -> None:
    """Refuse, before any training, runs that could not be saved: a function without
    `saved_with`, two names that share a file."""
    for name, (fn, _, _) in runs.items():
        if not hasattr(fn, "from_checkpoint"):
            raise TypeError(f"run '{name}': {_qualified(fn)} does not say how its result is "
                            "saved (runs.saved_with); pass saved_as=None to train it unsaved")
    files = [run_path(name, saved_as, preset) for name in runs]
    if len(set(files)) < len(files):
        raise ValueError(f"runs {list(runs)} of '{saved_as}' would share a file: name them "
                         "apart by letters or digits")


def _one_thread(fn, args: tuple, kwargs: dict) -> bytes:
    torch.set_num_threads(1)
    blob = io.BytesIO()
    torch.save(fn(*args, **kwargs), blob)
    return blob.getvalue()
