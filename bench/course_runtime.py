"""How long the course's tests take: each notebook under nbval, then the whole test command.

Runs, in the repository root (or --root), `python -m pytest notebooks/<nb> -p no:cacheprovider
--durations=0` for every notebook in order (a notebook reuses the checkpoints of the ones
before it), then the README's test command, `python -m pytest --durations=0` (unit tests
and notebooks, with pyproject.toml's addopts), keeping each log. From pytest's duration
report it prints, per run, the seconds of each file (setup + call + teardown of its items:
cells for a notebook) and its slowest item, and per run the pytest summary, pytest's own
session time and the wall time (which adds interpreter start-up). The full course takes
minutes: --parse takes the figures from logs of earlier runs instead of running anything.

    python -m bench.course_runtime --log-dir /tmp/course-logs
    python -m bench.course_runtime --skip-whole          # notebooks only
    python -m bench.course_runtime --parse /tmp/course-logs/*.log
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.common import print_table

ROOT = Path(__file__).resolve().parent.parent
# a line of pytest's --durations report: "12.34s call     notebooks/x.ipynb::Cell 3"
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(?:setup|call|teardown)\s+(\S.*?)\s*$")
# its final line: "==== 150 passed, 2 skipped in 812.34s (0:13:32) ===="
SUMMARY = re.compile(r"^=+ (.+?) in (\d+(?:\.\d+)?)s\b.*=+$")
COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # terminal colour codes of a log captured with --color=yes
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
           "RLHF_QUIET": "1", "TRANSFORMERS_VERBOSITY": "error"}  # as in .ci/run


def parse_log(text: str) -> dict:
    """{"files": {file: {item: seconds}}, "outcome": summary text, "seconds": session time}."""
    files: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    outcome, seconds = "no pytest summary line", float("nan")
    for line in COLOUR.sub("", text).splitlines():
        if m := DURATION.match(line):
            file, _, item = m[2].partition("::")
            files[file][item or file] += float(m[1])
        elif m := SUMMARY.match(line.strip()):
            outcome, seconds = m[1], float(m[2])
    return {"files": files, "outcome": outcome, "seconds": seconds}


def run_pytest(name: str, args: list[str], root: Path, log_dir: Path) -> tuple[Path, float]:
    """Run pytest with `args` in `root`; return its log (stdout and stderr) and wall seconds."""
    command = [sys.executable, "-m", "pytest", *args, "--durations=0"]
    print("running:", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=root, env={**OFFLINE, **os.environ}, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    log = log_dir / f"{name}.log"
    log.write_text(proc.stdout + proc.stderr)
    return log, wall


def report(logs: dict[str, tuple[Path, float | None]]):
    """Print the per-file and per-run tables of {run name: (log, wall seconds or None)}."""
    file_rows, run_rows = [], []
    for name, (log, wall) in logs.items():
        parsed = parse_log(log.read_text())
        for file, items in parsed["files"].items():
            slowest = max(items, key=items.get)
            file_rows.append([name, file, len(items), f"{sum(items.values()):.1f}", slowest,
                              f"{items[slowest]:.1f}"])
        run_rows.append([name, parsed["outcome"], f"{parsed['seconds']:.1f}",
                         "" if wall is None else f"{wall:.1f}"])
    print_table("Test time per file (setup + call + teardown of its items)",
                ["run", "file", "items", "seconds", "slowest item", "its seconds"], file_rows)
    print_table("Test time per run", ["run", "pytest summary", "pytest seconds", "wall seconds"],
                run_rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parse", nargs="+", type=Path, metavar="LOG",
                        help="report on saved pytest --durations logs instead of running")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository to test")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where the run logs are written (default: a new temporary folder)")
    parser.add_argument("--skip-whole", action="store_true", help="only the notebooks, one by one")
    args = parser.parse_args(argv)
    if args.parse:
        report({log.stem: (log, None) for log in args.parse})
        return
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="course-runtime-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = {}
    for nb in sorted((args.root / "notebooks").glob("*.ipynb")):
        target = nb.relative_to(args.root).as_posix()
        logs[nb.stem] = run_pytest(nb.stem, [target, "-p", "no:cacheprovider"], args.root, log_dir)
    if not args.skip_whole:
        logs["whole"] = run_pytest("whole", [], args.root, log_dir)
    print(f"logs in {log_dir}")
    report(logs)


if __name__ == "__main__":
    main()
