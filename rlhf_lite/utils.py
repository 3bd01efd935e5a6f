"""Small helpers shared by every stage: seeding, devices, threads, progress bars, eval mode,
seed streams, atomic writes, config checks, independent jobs in parallel processes.

Imports are kept light on purpose (only torch and `paths` at module level): every notebook
imports this package first, so anything heavy here would slow every cell that starts a kernel.
"""

import dataclasses
import errno
import math
import multiprocessing
import numbers
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

import torch

from .paths import env_threads


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, torch (all devices) and numpy if it is already imported."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds the CUDA and MPS generators
    if "numpy" in sys.modules:  # don't import numpy just to seed it
        sys.modules["numpy"].random.seed(seed)


def pick_device(prefer: str | None = None) -> torch.device:
    """The best available device (cuda, then mps, then cpu); `prefer` (e.g. "cpu") overrides."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_threads(n: int | None = None) -> int:
    """Fix torch's CPU thread count (default: env RLHF_THREADS, `paths.env_threads`, else all
    cores); returns it.

    Float sums are reduced in a thread-dependent order, so the same thread count is needed
    to reproduce a run bit for bit.
    """
    n = n or env_threads() or os.cpu_count() or 1
    torch.set_num_threads(n)
    return torch.get_num_threads()


def quiet_progress() -> bool:
    """True when progress bars should be hidden: on CI, with RLHF_QUIET=1 / TQDM_DISABLE=1, and
    in every torchrun process but rank 0 (one bar per run, not one per GPU)."""
    on_ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    not_rank_0 = os.environ.get("RANK", "0") != "0"
    return (on_ci or not_rank_0 or os.environ.get("RLHF_QUIET") == "1"
            or os.environ.get("TQDM_DISABLE") == "1")


def progress(iterable=None, total: int | None = None, desc: str | None = None):
    """A tqdm bar (a widget in Jupyter, text in a terminal), hidden when `quiet_progress()`.

    leave=True keeps the finished bar as a record of how long the stage took; mininterval=1
    redraws at most once a second, so the bar costs nothing next to a training step and
    does not flood saved notebook outputs. In a worker of `run_in_processes` with labels the
    parent draws it.
    """
    if _forward is not None:  # in a worker process: its parent draws the bar
        return _ForwardedBar(iterable, total)
    from tqdm.auto import tqdm  # lazy: tqdm.auto pulls in IPython machinery in notebooks

    return tqdm(iterable, total=total, desc=desc, disable=quiet_progress(), leave=True,
                mininterval=1.0)


@contextmanager
def eval_mode(model: torch.nn.Module):
    """`with eval_mode(model):` runs the block with dropout off, then restores the model's
    train/eval mode, also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# Seeds of the per-step data streams: seed * STRIDE + index. A prime stride keeps the streams
# of seeds s and s + 1 apart for the first STRIDE indices; each stream has its own stride, so
# two streams of one run never share a seed.
SEED_STRIDES = {"batches": 100_003, "ptx": 1_000_003, "rank": 1_000_003,
                "samples": 100_019}


def derive_seed(seed: int, index: int, stream: str = "batches") -> int:
    """The seed of item `index` (a step, an epoch, a rank) of the named stream of a run."""
    return seed * SEED_STRIDES[stream] + index


def _write_atomically(path, write) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it over `path` (atomic on
    POSIX within one filesystem): `path` always holds the old file or the complete new one.
    A full disk is reported as such, with the file's name."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        os.remove(tmp)
        if isinstance(e, Exception) and _disk_full(e, directory):
            raise OSError(errno.ENOSPC, f"could not write {path}: the disk is full "
                          f"({shutil.disk_usage(directory).free:,} bytes free)") from e
        raise


def _disk_full(error: Exception, directory: str) -> bool:
    # torch.save reports a full disk as a RuntimeError ("unexpected pos ..."), not ENOSPC
    return (getattr(error, "errno", None) == errno.ENOSPC
            or shutil.disk_usage(directory).free < 1 << 20)


def atomic_save(obj, path) -> None:
    """torch.save `obj` to `path` atomically (see `_write_atomically`)."""
    _write_atomically(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path, text: str) -> None:
    """Write a text file (UTF-8) atomically: every file the course writes goes through here or
    `atomic_save`."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _write_atomically(path, write)


def check_finite(value, what: str, step: int, lr: float | None = None) -> float:
    """Return `value` (a number or one-element tensor) as a float; raise if it is NaN or inf.

    Raising before the optimizer step means a NaN never reaches the weights, and the
    message says where it happened and what to try.
    """
    value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    if not math.isfinite(value):
        at_lr = f" (lr {lr:.1e})".replace("e-0", "e-") if lr is not None else ""
        raise FloatingPointError(
            f"{what} is {value} at step {step}{at_lr}. Lower the learning rate or check the data; "
            "the last good checkpoint is kept."
        )
    return value


# ----------------------------------------------------------------------------- config checks
# Every field of a config carries its rule beside it (`rule`, `nested`), and one validator,
# `check_config`, called by each config's __post_init__, checks them all: a bad value fails at
# construction with one line naming the field, instead of minutes later as an unrelated error
# deep in training (or not at all: a negative lr runs gradient ascent). A field without a rule
# fails too (and tests/test_config_validation.py finds it before anyone builds the config).
# A rule is (what is allowed, in words; a test of one value).
def rule(default, allowed: tuple, run_control: bool = False):
    """A config field: its default (`dataclasses.MISSING`: none) and its rule. `run_control`:
    the field steers the run without changing its result (a progress-bar label, how often to
    validate or to checkpoint), so it never makes a checkpoint stale
    (`checkpoints.result_fields`)."""
    return dataclasses.field(default=default,
                             metadata={"rule": allowed, "run_control": run_control})


def nested(default_factory, allowed: tuple | None = None):
    """A config field holding another config, built by `default_factory`: checked by its own
    class when it is built, so its rule only asks for a config dataclass, or what `allowed`
    asks of it (e.g. training.set_by_epochs)."""
    return dataclasses.field(default_factory=default_factory, metadata={"rule": allowed or (
        "a config dataclass", lambda v: dataclasses.is_dataclass(v) and not isinstance(v, type))})


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int = 1) -> tuple:
    """Rule: an int >= `low` (sizes: 1; step counts, intervals where 0 means "none", seeds: 0)."""
    return f"an int >= {low}", lambda v: _is_int(v) and v >= low


def number(low: float = 0.0, high: float = math.inf, low_open: bool = False,
           high_open: bool = False) -> tuple:
    """Rule: a finite number from `low` to `high` (an open end excludes that bound)."""
    if high == math.inf:
        allowed = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        allowed = f"a number in {left}{low:g}, {high:g}{right}"

    def ok(v) -> bool:
        return (_is_number(v) and (v > low if low_open else v >= low)
                and (v < high if high_open else v <= high))
    return allowed, ok


def boolean() -> tuple:
    """Rule: True or False (not 0, 1 or "no")."""
    return "a bool", lambda v: isinstance(v, bool)


def text() -> tuple:
    """Rule: a str (a name, a label, a path)."""
    return "a str", lambda v: isinstance(v, str)


def one_of(choices) -> tuple:
    """Rule: one of `choices` (e.g. rlhf_lite.kl.KINDS)."""
    return f"one of {tuple(choices)}", lambda v: v in choices


def optional(inner: tuple) -> tuple:
    """Rule: None, or what `inner` allows."""
    allowed, ok = inner
    return f"None or {allowed}", lambda v: v is None or ok(v)


def check_config(config, divisible: tuple[str, str] | None = None) -> None:
    """Raise ValueError, naming class, field, value and what is allowed, for the first field of
    `config` that breaks its rule (a field without one is a TypeError); `divisible=("n_embd",
    "n_head")`: the first a multiple of the second (checked once both are valid ints)."""
    cls = type(config).__name__
    for f in dataclasses.fields(config):
        if "rule" not in f.metadata:
            raise TypeError(f"{cls}.{f.name} has no rule: declare it with utils.rule or nested")
        allowed, ok = f.metadata["rule"]
        value = getattr(config, f.name)
        if not ok(value):
            raise ValueError(f"{cls}.{f.name} must be {allowed}, got {value!r}")
    if divisible:
        name, by = divisible
        if getattr(config, name) % getattr(config, by):
            raise ValueError(f"{cls}.{name} must be divisible by {by} = {getattr(config, by)}, "
                             f"got {getattr(config, name)}")


def _end_with_parent(parent: int) -> None:
    """In a worker: exit as soon as the parent process is gone. A killed notebook kernel or
    pipeline must not leave workers that go on training and write checkpoints after it."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def run_in_processes(fn, calls: list[tuple], processes: int | None = None,
                     labels: list[str] | None = None) -> list:
    """`[fn(*args) for args in calls]`, each call in a process of its own, `processes` at once
    (None: as many as the machine has cores; more calls wait for a free process).

    Spawned processes (fresh interpreters, on every OS) are safe whatever threads the caller
    has started; they share nothing, so `fn` must be a module-level function and it gets
    everything it needs through its arguments (pickled), results coming back the same way.
    `labels` (one per call): each call's progress bars (`progress`) are drawn here, in the
    caller's notebook or terminal, under its label, instead of in the worker's own stderr,
    which a notebook never shows (nothing is sent when `quiet_progress()`).
    """
    processes = min(len(calls), processes or os.cpu_count() or 1)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue() if labels and not quiet_progress() else None
    bars: dict[int, object] = {}
    try:
        with context.Pool(processes, initializer=_start_worker,
                          initargs=(os.getpid(), queue)) as pool:
            pending = pool.starmap_async(_call, [(fn, i, args) for i, args in enumerate(calls)])
            while queue is not None and not pending.ready():
                _update_bars(queue, bars, labels, wait=0.2)
            results = pending.get()
            # let the workers exit normally (leaving the block terminates them): a terminated
            # worker skips its clean-up, and the resource tracker then warns of leaked semaphores
            pool.close()
            pool.join()
        if queue is not None:  # the reports sent last, flushed by the workers as they exited
            _update_bars(queue, bars, labels, wait=0)
    finally:
        for bar in bars.values():
            bar.close()
    return results


_reports = None  # in a worker of run_in_processes with labels: the queue to its parent
_forward = None  # in such a worker, during a call: (that queue, the call's index)


def _start_worker(parent: int, reports) -> None:
    global _reports
    _end_with_parent(parent)
    _reports = reports


def _call(fn, index: int, args: tuple):
    global _forward
    _forward = (_reports, index) if _reports is not None else None
    return fn(*args)


class _ForwardedBar:
    """A worker's progress bar (`progress` in a call of `run_in_processes` with labels): every
    step is sent to the parent as (call, steps done, total, postfix), which draws it."""

    def __init__(self, iterable, total: int | None):
        self.iterable, self.total, self.postfix = iterable, total, None

    def __iter__(self):
        queue, call = _forward
        queue.put((call, 0, self.total, None))  # the bar appears when the run starts
        for done, item in enumerate(self.iterable, 1):
            yield item
            queue.put((call, done, self.total, self.postfix))

    def set_postfix(self, postfix: dict, refresh: bool = True) -> None:
        self.postfix = dict(postfix)


def _update_bars(queue, bars: dict, labels: list[str], wait: float) -> None:
    """Draw every report waiting in `queue` (waiting up to `wait` seconds for the first): one
    bar per call, labelled, opened at its first report (again when its total changes)."""
    from queue import Empty

    try:
        while True:
            call, done, total, postfix = queue.get(timeout=wait)
            wait = 0
            bar = bars.get(call)
            if bar is None or bar.total != total:
                if bar is not None:
                    bar.close()
                bar = bars[call] = progress(total=total, desc=labels[call])
            bar.update(done - bar.n)
            if postfix:
                bar.set_postfix(postfix, refresh=False)
    except Empty:
        pass
