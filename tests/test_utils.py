import os
import random
import subprocess
import sys
import time

import pytest
import torch

from rlhf_lite.utils import (
    check_finite,
    pick_device,
    progress,
    quiet_progress,
    seed_everything,
    set_threads,
)


def test_pick_device_cpu_and_prefer(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    assert pick_device("cuda:1") == torch.device("cuda:1")  # prefer wins, even if unavailable
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


def test_check_finite_messages():
    assert check_finite(torch.tensor(2.5), "x", 0) == 2.5
    with pytest.raises(FloatingPointError) as err:
        check_finite(float("nan"), "pretrain: loss", 37, lr=1.2e-3)
    assert str(err.value) == (
        "pretrain: loss is nan at step 37 (lr 1.2e-3). Lower the learning rate or check the data; "
        "the last good checkpoint is kept."
    )
    with pytest.raises(FloatingPointError, match=r"^sft: gradient norm is inf at step 3\. "):
        check_finite(torch.tensor(float("inf")), "sft: gradient norm", 3)


@pytest.mark.parametrize(
    "env, quiet",
    [({}, False), ({"CI": "true"}, True), ({"CI": "false"}, False), ({"RLHF_QUIET": "1"}, True),
     ({"RLHF_QUIET": "0"}, False), ({"TQDM_DISABLE": "1"}, True)],
)
def test_quiet_progress(monkeypatch, env, quiet):
    for name in ("CI", "RLHF_QUIET", "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert quiet_progress() is quiet
    bar = progress(range(3), desc="t")
    assert bar.disable is quiet and list(bar) == [0, 1, 2]


def test_seed_everything_reproducible():
    seed_everything(7)
    first = (random.random(), torch.rand(3))
    seed_everything(7)
    assert random.random() == first[0] and torch.equal(torch.rand(3), first[1])


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        monkeypatch.setenv("RLHF_THREADS", "2")
        assert set_threads() == 2
        for bad in ("abc", "0"):  # named with the fix, not "invalid literal for int()"
            monkeypatch.setenv("RLHF_THREADS", bad)
            with pytest.raises(ValueError, match=f"RLHF_THREADS='{bad}' is not a thread count"):
                set_threads()
    finally:
        torch.set_num_threads(before)


def test_import_is_light():
    # torch itself imports plain tqdm; the notebook-aware tqdm.auto must wait until a bar is drawn
    code = ("import sys, rlhf_lite.utils, rlhf_lite.training; "
            "print('transformers' in sys.modules, 'tqdm.auto' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_run_in_processes_returns_in_order_and_leaves_no_leaked_semaphores(tmp_path):
    # each job shows a progress bar, as a PPO run does: tqdm creates a multiprocessing lock,
    # which a worker terminated instead of ended never releases
    (tmp_path / "jobs.py").write_text(
        "from rlhf_lite.utils import progress\n"
        "def square(x):\n"
        "    for _ in progress(range(2), desc='job'):\n"
        "        pass\n"
        "    return x * x\n")
    script = ("from rlhf_lite.utils import run_in_processes\n"
              "import jobs\n"
              "if __name__ == '__main__':\n"
              "    print(run_in_processes(jobs.square, [(1,), (2,), (3,)]))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()]),
           "TQDM_DISABLE": "1"}  # hidden bars (CI, RLHF_QUIET) showed the leak
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 4, 9]"
    assert "leaked semaphore" not in done.stderr, done.stderr


def test_workers_end_when_their_parent_is_killed(tmp_path):
    """A killed kernel or pipeline must not leave workers that go on training and write
    checkpoints after it: each worker watches its parent and exits when it is gone."""
    (tmp_path / "jobs.py").write_text(
        "import os, pathlib, time\n"
        "def slow(folder):\n"
        "    pathlib.Path(folder, f'{os.getpid()}.started').touch()\n"
        "    time.sleep(30)\n"
        "    pathlib.Path(folder, 'finished').touch()  # what a checkpoint write would be\n")
    script = ("from rlhf_lite.utils import run_in_processes\n"
              "import jobs, sys\n"
              "if __name__ == '__main__':\n"
              "    run_in_processes(jobs.slow, [(sys.argv[1],), (sys.argv[1],)])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("*.started"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = [int(p.stem) for p in tmp_path.glob("*.started")]
    assert len(workers) == 2, "the workers did not start"
    parent.kill()  # SIGKILL: the parent cannot clean up
    parent.wait()
    time.sleep(3)  # a watcher polls every 0.5 s
    assert not [pid for pid in workers if running(pid)]
    assert not (tmp_path / "finished").exists()


def running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, exited but not yet reaped, does not)."""
    stat = f"/proc/{pid}/stat"
    if os.path.exists("/proc"):
        try:
            with open(stat) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
