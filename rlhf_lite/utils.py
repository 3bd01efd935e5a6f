"""Small helpers shared by every stage: seeding, devices, threads, progress bars, safe saving,
weight fingerprints, independent jobs in parallel processes.

Imports are kept light on purpose (only torch at module level): every notebook imports this
package first, so anything heavy here would slow every cell that starts a kernel.
"""

import hashlib
import math
import multiprocessing
import os
import random
import sys
import tempfile

import torch


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
    """Fix torch's CPU thread count (default: env RLHF_THREADS, else all cores); returns it.

    Float sums are reduced in a thread-dependent order, so the same thread count is needed
    to reproduce a run bit for bit.
    """
    n = n or int(os.environ.get("RLHF_THREADS") or 0) or os.cpu_count() or 1
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
    does not flood saved notebook outputs.
    """
    from tqdm.auto import tqdm  # lazy: tqdm.auto pulls in IPython machinery in notebooks

    return tqdm(iterable, total=total, desc=desc, disable=quiet_progress(), leave=True, mininterval=1.0)


def atomic_save(obj, path) -> None:
    """torch.save `obj` to `path` so that `path` always holds either the old or the new file.

    We write to a temporary file in the same directory, then os.replace it over `path`
    (atomic on POSIX within one filesystem): a crash or full disk mid-save never leaves a
    truncated checkpoint behind.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


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


def run_in_processes(fn, calls: list[tuple]) -> list:
    """`[fn(*args) for args in calls]`, each call in a process of its own, as many at once
    as the machine has cores (more calls wait for a free process).

    Spawned processes (fresh interpreters, on every OS) are safe whatever threads the caller
    has started; they share nothing, so `fn` must be a module-level function and it gets
    everything it needs through its arguments (pickled), results coming back the same way.
    """
    with multiprocessing.get_context("spawn").Pool(min(len(calls), os.cpu_count() or 1)) as pool:
        results = pool.starmap(fn, calls)
        # let the workers exit normally (leaving the block terminates them): a terminated worker
        # skips its clean-up, and the resource tracker then warns of leaked semaphores
        pool.close()
        pool.join()
    return results
