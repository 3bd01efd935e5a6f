"""Environment check: `python -m rlhf_lite.doctor` says whether this machine can run the course.

It prints the versions of Python (against the range the pins install on) and of the libraries
the course depends on (against the pins of requirements.txt), the RLHF_* settings, the device
each preset trains on and the thread counts the stages and notebooks set,
whether data/ matches its checksum manifest (data/CHECKSUMS.sha256, written by
`python -m rlhf_lite.world`), and which trained stages are on disk (why a stale one is
retrained; partial files, and what the next run does with them). The exit code is 1 when
something would break the course (a missing library, a bad setting, changed or missing data,
an unreadable checkpoint), 0 otherwise: a missing checkpoint is normal, the notebooks train it.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import paths

# The Python versions every pin of requirements.txt has wheels for on PyPI (Linux, Windows,
# macOS arm64; checked 2026-12-06): numpy 2.4.6, pandas 3.1.1, matplotlib 3.11.2, transformers
# 5.23.0 and ipykernel 7.4.0 require 3.11 or newer; torch 2.13.0 has no wheel after 3.14.
PYTHONS = ((3, 11), (3, 14))
# What the course imports; versions are read from package metadata, without importing.
PACKAGES = ("torch", "transformers", "datasets", "nbval", "tokenizers", "ipywidgets", "matplotlib",
            "pandas")


@dataclass
class Check:
    name: str  # what was checked, e.g. "torch"
    ok: bool  # False: the course will not run as is (the exit code becomes 1)
    detail: str  # the finding, and on failure what to do about it
    warning: bool = False  # ok, but worth knowing (e.g. a version other than the pinned one)


def pinned_versions(requirements: Path = paths.REPO_ROOT / "requirements.txt") -> dict[str, str]:
    """name -> version of every `name==version` line of requirements.txt ({} if it is absent)."""
    if not requirements.exists():
        return {}
    lines = requirements.read_text(encoding="utf-8").splitlines()
    return {m.group(1).lower(): m.group(2) for line in lines
            if (m := re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", line))}


def check_python(version: tuple[int, ...] | None = None) -> Check:
    """This Python (or `version`) against `PYTHONS`: older fails (the pins do not install),
    newer warns (torch 2.13.0 publishes no wheel for it, so it was installed some other way)."""
    version = version or sys.version_info[:3]
    found = ".".join(map(str, version))
    low, high = (".".join(map(str, v)) for v in PYTHONS)
    supported = f"the pinned versions install on Python {low} to {high}"
    if version[:2] < PYTHONS[0]:
        return Check("python", False, f"{found}: too old, {supported} (numpy 2.4.6 and pandas "
                     f"3.1.1 need {low}): install one of those and make the environment with it")
    if version[:2] > PYTHONS[1]:
        return Check("python", True, f"{found}: newer than the course is checked on, "
                     f"{supported} (torch 2.13.0 has no wheel after {high})", warning=True)
    return Check("python", True, f"{found} ({sys.executable}); {supported}")


def check_package(name: str, pins: dict[str, str]) -> Check:
    """Installed (from package metadata, without importing it) and equal to its pin?"""
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return Check(name, False, "not installed: run `pip install -r requirements.txt`")
    pin = pins.get(name)
    if pin is not None and version.split("+")[0] != pin:  # "2.13.0+cpu" is torch 2.13.0
        return Check(name, True, f"{version} (requirements.txt pins {pin}: results may differ "
                     "from the committed outputs in late decimals)", warning=True)
    return Check(name, True, version)


# The checks import torch and the package inside the functions: the doctor must run, and say
# what is missing, on a machine where torch is not installed.


def check_device() -> Check:
    """Where each preset trains (`Preset.device`): the course's presets (toy, tiny) on the CPU
    whatever the machine has, the GPT-2 presets on the best device found."""
    import torch

    from .presets import PRESETS
    from .utils import pick_device

    where: dict[str, list[str]] = {}
    for name, preset in PRESETS.items():
        device = pick_device(preset.device).type
        if device == "cuda":
            device = f"cuda ({torch.cuda.get_device_name(0)})"
        elif device == "mps":
            device = "mps (Apple GPU)"
        where.setdefault(device, []).append(name)
    detail = "; ".join(f"{', '.join(names)} train on {device}" for device, names in where.items())
    if list(where) == ["cpu"]:
        detail += " (no CUDA or MPS device found: fine for the course, which trains on the CPU)"
    return Check("device", True, detail)


def check_settings() -> Check:
    """The RLHF_* environment variables (`paths.settings_problems`), and those that are set."""
    problems = paths.settings_problems()
    names = sorted(name for name in os.environ if name.startswith("RLHF_"))
    settings = ", ".join(f"{name}={os.environ[name]}" for name in names)
    return Check("settings", not problems, "; ".join(problems) or settings or "none set")


def notebook_threads(folder: Path = paths.REPO_ROOT / "notebooks") -> dict[int, list[str]]:
    """threads -> the numbers of the notebooks whose first code cell calls `set_threads(n)`
    ({} without the notebooks folder)."""
    counts: dict[int, list[str]] = {}
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        first = next(("".join(c["source"]) for c in cells if c["cell_type"] == "code"), "")
        if m := re.search(r"set_threads\((\d+)\)", first):
            counts.setdefault(int(m.group(1)), []).append(path.name[:2])
    return counts


def check_threads() -> Check:
    """The torch threads the toy course trains with: each stage's own (`Stage.threads`, the
    single-threaded ones side by side, one process per core) and what each notebook sets for
    its cells; fixed counts, so that results are the same bit for bit wherever a stage is built."""
    from .artifacts import stage_threads, stages_of

    cores = os.cpu_count() or 1
    by_count: dict[int, list[str]] = {}
    for stage in stages_of("toy"):
        by_count.setdefault(stage_threads(stage, "toy"), []).append(stage)
    stages = "; ".join(f"{n} thread{'s' if n > 1 else ''} for {', '.join(names)}"
                       + (f" (side by side, up to {cores} at once)" if n == 1 else "")
                       for n, names in sorted(by_count.items(), reverse=True))
    notebooks = "; ".join(f"{n} in {', '.join(names)}"
                          for n, names in sorted(notebook_threads().items(), reverse=True))
    return Check("threads", True, f"this machine has {cores} CPU cores. Toy stages: {stages}. "
                 "Notebook cells (set_threads in each first cell): "
                 f"{notebooks or 'no notebooks found'}; the runs a notebook trains side by side: "
                 "1 each. RLHF_THREADS is only the bench scripts' default")


def check_data(data_dir: Path | None = None) -> Check:
    """Every file listed in the manifest exists and has its sha256; extra files are reported."""
    from .data import CHECKSUM_FILE, checksums

    data_dir = Path(data_dir or paths.DATA_DIR)
    manifest = data_dir / CHECKSUM_FILE
    fix = "; rebuild it with `python -m rlhf_lite.world`"
    if not manifest.exists():
        return Check("data", False, f"no manifest {manifest}{fix}")
    expected = {}
    for line_no, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        digest, _, name = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not name:
            return Check("data", False, f"{manifest}, line {line_no}: expected "
                         f"'<sha256>  <file>', got {line!r}{fix}")
        expected[name] = digest
    actual = checksums(data_dir)
    missing = [n for n in expected if n not in actual]
    changed = [n for n in expected if n in actual and actual[n] != expected[n]]
    extra = [n for n in actual if n not in expected]
    if missing or changed:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
                   ([f"changed {', '.join(changed)}"] if changed else [])
        return Check("data", False, f"{data_dir}: {'; '.join(problems)}{fix}")
    note = f" (not in the manifest: {', '.join(extra)})" if extra else ""
    return Check("data", True, f"{len(expected)} files match {manifest.name}{note}",
                 warning=bool(extra))


def check_artifacts(preset: str) -> Check:
    """The state of each stage's checkpoint of `preset`; only an unreadable one is a failure."""
    from .artifacts import partial_path, stages_of, stale_reason, status
    from .presets import get_preset
    from .stages import STAGES

    states, broken, partials = [], [], []
    for stage in STAGES:
        if stage not in stages_of(preset):  # not trained, or the reward model of another preset
            p = get_preset(preset)
            states.append(f"{stage} not in this preset" if p.recipe(stage) is None
                          else f"{stage} from {p.reward_source}")
            continue
        try:
            state = status(stage, preset)
            states.append(f"{stage} {state}" + (f" (retrained: {stale_reason(stage, preset)})"
                                                if state == "stale" else ""))
            if partial_path(stage, preset).exists():
                partials.append(_partial(stage, preset, state))
        except RuntimeError as e:  # a truncated or foreign file (this stage's or an input's)
            if str(e) not in broken:
                broken.append(str(e))
    detail = ", ".join(states) + (" (missing stages are trained by the notebooks)"
                                  if any(s.endswith("missing") for s in states) else "")
    if partials:
        detail += f"; partial files: {'; '.join(partials)}"
    # an interrupted save leaves its temporary file (utils.atomic_save): never loaded, but
    # worth deleting
    leftovers = sorted(p.name for p in (paths.ARTIFACTS_DIR / preset).glob("*.tmp"))
    if leftovers:
        detail += f"; leftover files of interrupted saves, safe to delete: {', '.join(leftovers)}"
    return Check(f"artifacts ({preset})", not broken,
                 "; ".join(broken + partials) if broken else detail,
                 warning=bool(leftovers or partials))


def _partial(stage: str, preset: str, stage_state: str) -> str:
    """A stage's partial file: its state (`artifacts.partial_state`) and what the next run of
    the stage (now `stage_state`) does with it."""
    from .artifacts import partial_path, partial_state

    state, reason = partial_state(stage, preset)
    name = partial_path(stage, preset).name
    if stage_state == "done":  # nothing reads it (a forced rebuild deletes it first)
        return f"{name} {state} ({reason}), unused while {stage}.pt is done: safe to delete"
    if state == "damaged":  # set aside by the next run (training.resumable)
        return (f"{name} damaged ({reason}): the next run sets it aside as "
                f"{stage}.partial.damaged.pt and trains {stage} afresh")
    if state == "stale":
        return f"{name} stale ({reason}): the next run deletes it and trains {stage} afresh"
    return f"{name} resumable ({reason}): the next run resumes it"


def run_checks(data_dir: Path | None = None) -> list[Check]:
    from .presets import PRESETS

    checks = [check_python(), check_settings()]
    pins = pinned_versions()
    checks += [check_package(name, pins) for name in PACKAGES]
    checks.append(check_data(data_dir))
    if all(c.ok for c in checks if c.name == "torch"):  # the rest imports torch
        checks += [check_device(), check_threads()] + [check_artifacts(p) for p in PRESETS]
    return checks


def report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'FAIL' if not c.ok else 'warn' if c.warning else ' ok '}  {c.name:{width}s}  "
             f"{c.detail}" for c in checks]
    failed = [c.name for c in checks if not c.ok]
    lines.append(f"{len(failed)} problem(s): {', '.join(failed)}" if failed
                 else "everything the course needs is in place")
    return "\n".join(lines)


def main() -> int:
    checks = run_checks()
    print(report(checks))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
