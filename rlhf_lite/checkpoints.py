"""One checkpoint format for every stage: what a trained (or half-trained) model is on disk.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it is read with
`torch.load(weights_only=True)`: a file received from someone else cannot run code when it is
opened. Its fields (`Checkpoint`):

    model         the weights (a state dict)
    step          steps (or PPO iterations) done; the run is finished when step >= max_steps
    max_steps     steps of the whole run
    model_config  the architecture (`GPTConfig` as a dict): enough to rebuild the module
    recipe        the stage's config as a dict; a different recipe makes the checkpoint stale,
                  except for fields that only steer the run (`result_fields`)
    inputs        {role: fingerprint} of the models this one was trained from (an RM: the SFT
                  model it started from); a changed input model makes the checkpoint stale
    data          fingerprint of the data files and tokenizer under data/ when it was saved
                  (`data_fingerprint`): a swapped token id or deleted demonstrations make the
                  checkpoint stale
    history       the training log, `training.History` as a dict (every stage, PPO included),
                  with the training time in seconds
    extra         numbers a stage adds (the reward model's bias_shift)
    resume        what continuing a partial run needs (optimizer moments, RNG state, the run's
                  config); empty when nothing is resumed from it
    fingerprint   of `model`, written by `save` and checked by `read(path, verify=True)`, which
                  every read that loads weights uses, partial files included: flipped bytes in
                  the weights are found, never loaded, trained on or called "done"

`save` writes atomically and refuses non-finite weights; `read` memory-maps the file, so only
what is used is read (`status` reads the metadata before every load).
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import torch

from . import distributed, paths
from .data import CHECKSUM_FILE, JUDGE_VERSION, checksums

FORMAT = 2  # bumped when the layout changes; an older file is then rebuilt, not misread


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]
    step: int
    max_steps: int
    model_config: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    resume: dict = field(default_factory=dict)
    data: str = ""
    fingerprint: str = ""
    format: int = FORMAT

    @property
    def done(self) -> bool:
        return self.step >= self.max_steps

    @property
    def seconds(self) -> float | None:
        """The run's wall-clock training time, summed over resumed runs: its `History.seconds`
        (None: no history recorded)."""
        return self.history.get("seconds")


def fingerprint(weights) -> str:
    """A short digest of a model's weights (a module or a state dict): equal weights, equal
    digest, on any device. A checkpoint records the fingerprints of the models it was trained
    from, so a stage whose SFT or reward model has since changed is known to be stale."""
    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def result_fields(recipe: dict, config) -> dict:
    """`recipe` (a config as a dict, nested configs included) without the fields that `config`
    (the config dataclass it is compared with) marks `run_control` (`utils.rule`): what two
    checkpoints must share to be the same model. A progress-bar label or how often to validate
    or to checkpoint steers a run without changing its result, so it never makes one stale."""
    steering = {f.name for f in fields(config) if f.metadata.get("run_control")}
    return {k: result_fields(v, getattr(config, k)) if _nested(config, k, v) else v
            for k, v in recipe.items() if k not in steering}


def _nested(config, name: str, value) -> bool:
    """Whether `value`, the recipe's field `name`, is a nested config of `config`'s."""
    return isinstance(value, dict) and is_dataclass(getattr(config, name, None))


def changed_fields(saved: dict, config, recipe: dict | None = None) -> list[str]:
    """The fields (dotted: "train.lr") in which a checkpoint's recipe differs from `config` (a
    config dataclass), up to `result_fields`: what makes the checkpoint stale ([]: the same
    recipe). `recipe`: what a run of `config` records, when that is more than `config` itself
    (a stage that reads a data source: `datasource.stage_recipe`)."""
    expected = asdict(config) if recipe is None else recipe
    return differences(result_fields(saved, config), result_fields(expected, config))


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The keys (dotted into nested dicts: "train.lr") in which two recipes differ."""
    names = []
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            names += differences(a[key], b[key], f"{prefix}{key}.")
        elif key not in a or key not in b or a[key] != b[key]:
            names.append(prefix + key)
    return names


def save(ckpt: Checkpoint, path: str | Path) -> None:
    """Write `ckpt` to `path` atomically (under torchrun: rank 0 writes, the others wait).

    Non-finite weights are never written: a final optimizer step that produced NaN or inf
    raises here, and the file at `path` (if any) stays as it was.
    """
    bad = sum(int((~torch.isfinite(t)).sum()) for t in ckpt.model.values()
              if t.is_floating_point())
    if bad:
        total = sum(t.numel() for t in ckpt.model.values())
        raise FloatingPointError(f"not saving {path}: {bad:,} of {total:,} weights are NaN or "
                                 "inf; lower the learning rate or check the data")
    ckpt.fingerprint = fingerprint(ckpt.model)
    ckpt.data = ckpt.data or data_fingerprint()  # the data of the run that is saving
    # a shallow dict: dataclasses.asdict would deep-copy every weight and optimizer moment
    distributed.save_on_main({f.name: getattr(ckpt, f.name) for f in fields(ckpt)}, path)


_verified: dict[tuple, str] = {}  # (path, size, mtime) -> fingerprint: each file hashed once


def _file_key(path: str | Path) -> tuple:
    stat = os.stat(path)
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


class DamagedCheckpoint(RuntimeError):
    """A checkpoint file whose bytes cannot be trusted: it cannot be read (truncated), or its
    weights do not match the fingerprint written with them. `problem` says which, for a
    message that names the file itself (`training.resumable` sets such a file aside)."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path} {problem}; delete it to retrain the stage")
        self.problem = problem


def read(path: str | Path, verify: bool = False) -> Checkpoint:
    """The checkpoint at `path`, memory-mapped (tensors are read when first used).

    Only plain data is unpickled (weights_only=True): a file that would run code is refused.
    A foreign or older-format file is a RuntimeError that names it and the fix; one that cannot
    be read, a DamagedCheckpoint. `verify`: the weights are checked against their fingerprint
    (a DamagedCheckpoint if they differ); every read that loads weights asks for it, and each
    version of a file is hashed once (`_verified`), so a load after `status` costs nothing more.
    """
    fix = "; delete it to retrain the stage"
    try:
        key = _file_key(path)  # before loading: a file replaced meanwhile is hashed again
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # every failure to read gets a message naming the file and the fix
        if isinstance(e, pickle.UnpicklingError) and "weights_only" in str(e).lower():
            raise RuntimeError(f"{path} is refused: it holds Python objects other than weights "
                               f"and numbers, which could run code when loaded{fix}") from None
        raise DamagedCheckpoint(path, f"cannot be read ({type(e).__name__}: {e})") from e
    names = {f.name for f in fields(Checkpoint)}
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not names >= set(raw):
        raise RuntimeError(f"{path} is not a checkpoint of this version of the course "
                           f"(format {FORMAT}){fix}")
    missing = sorted(names - set(raw) - {"fingerprint", "format", "data"})
    if missing:
        raise RuntimeError(f"{path} is not a complete checkpoint (no {', '.join(missing)}){fix}")
    ckpt = Checkpoint(**raw)
    if verify and _verified.get(key) != ckpt.fingerprint:
        if fingerprint(ckpt.model) != ckpt.fingerprint:
            raise DamagedCheckpoint(path, "is damaged: its weights do not match the checksum "
                                    "written with them")
        _verified[key] = ckpt.fingerprint
    return ckpt


_data_digests: dict[tuple, str] = {}  # judge version, (file, size, mtime) of every file -> digest


def data_fingerprint(data_dir: str | Path | None = None) -> str:
    """A short digest of every file under data/ but its manifest (the world's texts, prompts,
    demonstrations and the tokenizer) and of the judge's version (`data.JUDGE_VERSION`).
    Hashed once per version of the files."""
    root = Path(data_dir or paths.DATA_DIR)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE)
    key = (JUDGE_VERSION, *((p.as_posix(), st.st_size, st.st_mtime_ns)
                            for p in files for st in [p.stat()]))
    if key not in _data_digests:
        listing = f"judge:{JUDGE_VERSION};" + "".join(
            f"{name}:{digest};" for name, digest in checksums(root).items())
        _data_digests[key] = hashlib.sha256(listing.encode()).hexdigest()[:16]
    return _data_digests[key]


def verified_fingerprint(path: str | Path) -> str:
    """The fingerprint of the weights stored at `path`, checked against the one `save`
    recorded: a DamagedCheckpoint if they differ (the file was damaged after it was written)."""
    return _verified.get(_file_key(path)) or read(path, verify=True).fingerprint


def set_aside(path: str | Path) -> Path:
    """Move the damaged checkpoint at `path` to <name>.damaged.pt beside it (replacing an
    earlier one), where nothing loads it, and return that path. Kept rather than deleted: the
    user can look at what the disk did to it, and nothing is removed without a word; one per
    file at most. Under torchrun rank 0 moves it."""
    path = Path(path)
    aside = path.with_name(f"{path.stem}.damaged{path.suffix}")
    if distributed.is_main_process():
        os.replace(path, aside)
    return aside
