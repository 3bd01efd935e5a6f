"""Where the course keeps its data and trained artifacts (overridable for tests and CI), and
the environment variables that change how it runs, checked before any work
(`settings_problems`)."""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RLHF_DATA_DIR", REPO_ROOT / "data"))
ARTIFACTS_DIR = Path(os.environ.get("RLHF_ARTIFACTS_DIR", REPO_ROOT / "artifacts"))
CHECKPOINT_ENV = "RLHF_GPT2_CHECKPOINT"  # overrides the gpt2 preset's default checkpoint
HH_DATA_ENV = "RLHF_HH_DATA"  # overrides the gpt2-hh preset's preference data


def shown(path) -> str:
    """A path as messages print it: relative to the repository when inside it (no user's
    home directory in a notebook's committed output)."""
    path = Path(path).resolve()
    inside = path.is_relative_to(REPO_ROOT)
    return str(path.relative_to(REPO_ROOT)) if inside else str(path)


def folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot hold the files the course writes (None if it can): it is a file,
    a file stands where one of its parents should be created, or it is not writable."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} exists and is not a folder"
    parent = folder
    while not parent.exists():  # the nearest existing ancestor (a relative path ends at ".")
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {folder}: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable"
    return None


def env_threads() -> int | None:
    """RLHF_THREADS as a thread count (None: unset). Only `utils.set_threads()` called without
    a count reads it (the bench scripts without --threads): notebooks and the pipeline give
    each stage its own count, so that a stage is the same model bit for bit wherever it is
    built."""
    value = os.environ.get("RLHF_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"RLHF_THREADS={value!r} is not a thread count: set it to a whole "
                         "number >= 1, or unset it to use every core")
    return int(value)


def _looks_local(value: str) -> bool:
    """Whether a hub-name-or-path setting names a local path (a hub name is "owner/name")."""
    return value.startswith(("/", ".")) or value.endswith((".json", ".jsonl", ".gz"))


def settings_problems() -> list[str]:
    """What is wrong with the RLHF_* environment variables, one message each, naming the
    variable, its value and the fix ([] when nothing is). Checked before any training (the
    pipeline, `artifacts.build`) and by the doctor: found at the first checkpoint save, a bad
    setting would cost the training before it."""
    problems = []
    if problem := folder_problem(ARTIFACTS_DIR):
        problems.append(f"RLHF_ARTIFACTS_DIR={str(ARTIFACTS_DIR)!r}: {problem}, so no trained "
                        "stage could be saved; set RLHF_ARTIFACTS_DIR to a writable folder")
    if not DATA_DIR.is_dir():
        problems.append(f"RLHF_DATA_DIR={str(DATA_DIR)!r} is not a folder: set it to a copy "
                        "of data/, or unset it for the repository's")
    try:
        env_threads()
    except ValueError as e:
        problems.append(str(e))
    if os.environ.get("RLHF_QUIET", "") not in ("", "0", "1"):
        problems.append(f"RLHF_QUIET={os.environ['RLHF_QUIET']!r}: set it to 1 to hide "
                        "progress bars, or to 0 (or unset it) to show them")
    for name, kind in ((CHECKPOINT_ENV, "a checkpoint folder"), (HH_DATA_ENV, "a data file")):
        value = os.environ.get(name, "")
        if _looks_local(value) and not Path(value).exists():
            problems.append(f"{name}={value!r}: no such file or folder; set it to {kind} "
                            "that exists or to a hub name, or unset it")
    return problems
