"""The environment check: versions against the pins, data against its manifest, exit codes."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from rlhf_lite import artifacts, checkpoints, data, doctor, presets
from rlhf_lite.paths import REPO_ROOT


@pytest.fixture
def data_copy(tmp_path):
    out = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "data", out)
    return out


def test_committed_data_matches_its_manifest_and_sha256sum_format():
    check = doctor.check_data(REPO_ROOT / "data")
    assert check.ok and not check.warning, check.detail
    lines = (REPO_ROOT / "data" / data.CHECKSUM_FILE).read_text().splitlines()
    names = [line.split("  ")[1] for line in lines]
    assert "demonstrations.jsonl" in names and "tokenizer/tokenizer.json" in names
    assert names == sorted(names) and len(lines) == len(data.checksums(REPO_ROOT / "data"))


def test_one_changed_byte_is_caught_and_named(data_copy):
    path = data_copy / "prompts_train.jsonl"
    path.write_bytes(path.read_bytes().replace(b"what", b"whAt", 1))
    check = doctor.check_data(data_copy)
    assert not check.ok
    assert ("changed prompts_train.jsonl" in check.detail
            and "python -m rlhf_lite.world" in check.detail)


def test_missing_file_and_missing_manifest_fail_extra_file_warns(data_copy):
    (data_copy / "extra.txt").write_text("notes")
    check = doctor.check_data(data_copy)
    assert check.ok and check.warning and "extra.txt" in check.detail
    (data_copy / "tokenizer" / "tokenizer.json").unlink()
    check = doctor.check_data(data_copy)
    assert not check.ok and "missing tokenizer/tokenizer.json" in check.detail
    (data_copy / data.CHECKSUM_FILE).unlink()
    assert not doctor.check_data(data_copy).ok


def test_malformed_manifest_line_is_named(data_copy):
    manifest = data_copy / data.CHECKSUM_FILE
    manifest.write_text(manifest.read_text() + "not a checksum line\n")
    check = doctor.check_data(data_copy)
    lines = len(manifest.read_text().splitlines())
    assert not check.ok and f"line {lines}" in check.detail


def test_package_versions_against_pins():
    installed = doctor.metadata.version("nbval")
    assert (doctor.check_package("nbval", {"nbval": installed})
            == doctor.Check("nbval", True, installed))
    other = doctor.check_package("nbval", {"nbval": "0.0.1"})
    assert other.ok and other.warning and "pins 0.0.1" in other.detail
    torch_version = doctor.metadata.version("torch")  # a local label (+cpu) is the same release
    assert not doctor.check_package("torch", {"torch": torch_version.split("+")[0]}).warning
    missing = doctor.check_package("no-such-package-rlhf", {})
    assert not missing.ok and "pip install -r requirements.txt" in missing.detail


def test_pins_are_read_from_requirements(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\ntorch==2.13.0\nNumPy==2.4.6  # why\n-e .\n")
    assert doctor.pinned_versions(req) == {"torch": "2.13.0", "numpy": "2.4.6"}
    assert doctor.pinned_versions(tmp_path / "absent.txt") == {}


def test_unreadable_checkpoint_fails_missing_one_does_not(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts.paths, "ARTIFACTS_DIR", tmp_path)
    check = doctor.check_artifacts("toy")
    assert check.ok and "base missing" in check.detail and "ppo_ptx missing" in check.detail
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "sft.pt").write_bytes(b"truncated")
    check = doctor.check_artifacts("toy")
    assert not check.ok and "sft.pt cannot be read" in check.detail and "delete it" in check.detail
    # a reward model trained from that SFT names the damaged SFT file, not its own, once
    checkpoints.save(checkpoints.Checkpoint({}, step=1, max_steps=1, inputs={"sft": "x"},
                                            recipe=presets.get_preset("toy").rm.as_dict()),
                     tmp_path / "toy" / "rm.pt")
    check = doctor.check_artifacts("toy")
    assert not check.ok and check.detail.count("sft.pt cannot be read") == 1
    assert "rm.pt" not in check.detail


def test_leftover_files_of_interrupted_saves_are_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts.paths, "ARTIFACTS_DIR", tmp_path)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "sft.pt.k2j4.tmp").write_bytes(b"half a checkpoint")
    check = doctor.check_artifacts("toy")
    assert check.ok and check.warning
    assert "leftover files of interrupted saves, safe to delete: sft.pt.k2j4.tmp" in check.detail


def test_partial_files_are_reported_with_what_the_next_run_does(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts.paths, "ARTIFACTS_DIR", tmp_path)
    (tmp_path / "toy").mkdir()
    recipe = presets.get_preset("toy").base
    ckpt = checkpoints.Checkpoint({"w": torch.zeros(2)}, step=1, max_steps=3,
                                  recipe=recipe.as_dict())
    checkpoints.save(ckpt, tmp_path / "toy" / "base.partial.pt")
    check = doctor.check_artifacts("toy")
    assert check.ok and check.warning and "base partial" in check.detail
    assert ("partial files: base.partial.pt resumable (step 1 of 3): the next run resumes it"
            in check.detail)
    ckpt.recipe = {**ckpt.recipe, "n_layer": 1}
    checkpoints.save(ckpt, tmp_path / "toy" / "base.partial.pt")
    assert ("base.partial.pt stale (the recipe's n_layer changed): the next run deletes it and "
            "trains base afresh") in doctor.check_artifacts("toy").detail
    ckpt.step = ckpt.max_steps  # a finished base.pt of that recipe: stale, and says why
    checkpoints.save(ckpt, tmp_path / "toy" / "base.pt")
    assert ("base stale (retrained: the recipe's n_layer changed)"
            in doctor.check_artifacts("toy").detail)
    (tmp_path / "toy" / "base.partial.pt").write_bytes(b"truncated")
    check = doctor.check_artifacts("toy")  # damaged: a warning, the next run sets it aside
    assert check.ok and check.warning and "base.partial.pt damaged (" in check.detail
    assert "base.partial.pt cannot be read" in check.detail
    assert ("the next run sets it aside as base.partial.damaged.pt and trains base afresh"
            in check.detail)


def test_bad_settings_are_named_with_their_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor.paths, "ARTIFACTS_DIR", tmp_path)
    for name in ("RLHF_THREADS", "RLHF_QUIET", "RLHF_HH_DATA", "RLHF_GPT2_CHECKPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert doctor.check_settings().ok
    (tmp_path / "afile").write_text("")
    monkeypatch.setattr(doctor.paths, "ARTIFACTS_DIR", tmp_path / "afile" / "artifacts")
    monkeypatch.setattr(doctor.paths, "DATA_DIR", tmp_path / "no-data")
    monkeypatch.setenv("RLHF_THREADS", "0")
    monkeypatch.setenv("RLHF_QUIET", "yes")
    monkeypatch.setenv("RLHF_HH_DATA", str(tmp_path / "hh.jsonl.gz"))
    monkeypatch.setenv("RLHF_GPT2_CHECKPOINT", "gpt2-medium")  # a hub name: not checked here
    check = doctor.check_settings()
    assert not check.ok and check.detail == "; ".join(doctor.paths.settings_problems())
    assert doctor.paths.settings_problems() == [
        f"RLHF_ARTIFACTS_DIR='{tmp_path / 'afile' / 'artifacts'}': cannot create "
        f"{tmp_path / 'afile' / 'artifacts'}: {tmp_path / 'afile'} is a file, so no trained "
        "stage could be saved; set RLHF_ARTIFACTS_DIR to a writable folder",
        f"RLHF_DATA_DIR='{tmp_path / 'no-data'}' is not a folder: set it to a copy of data/, or "
        "unset it for the repository's",
        "RLHF_THREADS='0' is not a thread count: set it to a whole number >= 1, or unset it to "
        "use every core",
        "RLHF_QUIET='yes': set it to 1 to hide progress bars, or to 0 (or unset it) to show them",
        f"RLHF_HH_DATA='{tmp_path / 'hh.jsonl.gz'}': no such file or folder; set it to a data "
        "file that exists or to a hub name, or unset it"]


def test_a_preset_that_borrows_a_reward_model_says_whose(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts.paths, "ARTIFACTS_DIR", tmp_path)
    detail = doctor.check_artifacts("tiny").detail
    assert "rm from toy" in detail and "rm missing" not in detail


def test_python_range_fails_below_warns_above():
    assert doctor.check_python((3, 11, 0)).ok and not doctor.check_python((3, 14, 2)).warning
    old = doctor.check_python((3, 10, 14))
    assert not old.ok and "install on Python 3.11 to 3.14" in old.detail
    new = doctor.check_python((3, 15, 0))
    assert new.ok and new.warning and "torch 2.13.0 has no wheel after 3.14" in new.detail


def test_readme_and_pyproject_state_the_doctors_python_range():
    low, high = (".".join(map(str, v)) for v in doctor.PYTHONS)
    assert f'requires-python = ">={low}"' in (REPO_ROOT / "pyproject.toml").read_text()
    assert f"Python {low} to {high}" in (REPO_ROOT / "README.md").read_text()


def test_the_course_trains_on_the_cpu_and_gpt2_on_a_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    cpu = doctor.check_device()
    assert cpu.ok and cpu.detail.startswith("toy, tiny, gpt2, gpt2-hh train on cpu (no CUDA")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Some GPU")
    assert (doctor.check_device().detail
            == "toy, tiny train on cpu; gpt2, gpt2-hh train on cuda (Some GPU)")


def test_threads_are_the_stages_and_the_notebooks_own():
    detail = doctor.check_threads().detail
    assert "Toy stages: 2 threads for base, sft, rm; 1 thread for ppo, ppo_ptx, dpo, rloo" in detail
    assert "RLHF_THREADS is only the bench scripts' default" in detail
    counts = doctor.notebook_threads()
    numbers = sorted(p.name[:2] for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(n for names in counts.values() for n in names) == numbers  # each sets its own
    assert f"{min(counts)} in {', '.join(counts[min(counts)])}" in detail


def test_notebook_threads_are_read_from_the_first_code_cell(tmp_path):
    def notebook(name, *sources):
        cells = [{"cell_type": "markdown", "source": ["set_threads(9)"]}]
        cells += [{"cell_type": "code", "source": [source]} for source in sources]
        (tmp_path / name).write_text(json.dumps({"cells": cells}))

    notebook("01_a.ipynb", "x = 1\nset_threads(2)  # why", "set_threads(1)")
    notebook("02_b.ipynb", "set_threads(1);")
    notebook("03_c.ipynb", "import torch", "set_threads(4)")  # not in the first cell: unknown
    assert doctor.notebook_threads(tmp_path) == {2: ["01"], 1: ["02"]}
    assert doctor.notebook_threads(tmp_path / "absent") == {}


def test_report_lists_failures_last():
    text = doctor.report([doctor.Check("python", True, "3.11"),
                          doctor.Check("data", False, "changed x")])
    assert text.splitlines() == [" ok   python  3.11", "FAIL  data    changed x",
                                 "1 problem(s): data"]


def test_command_prints_every_check_and_exits_by_its_findings(tmp_path):
    env = {"PATH": "", "HF_HUB_OFFLINE": "1", "RLHF_ARTIFACTS_DIR": str(tmp_path / "artifacts")}
    good = subprocess.run([sys.executable, "-m", "rlhf_lite.doctor"], capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT)
    for name in ("python", "settings", "torch", "transformers", "datasets", "nbval", "device",
                 "threads",
                 "data", "artifacts (toy)"):
        assert f"  {name} " in good.stdout, name
    assert good.returncode == 0, good.stdout
    bad_data = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "data", bad_data)
    (bad_data / "demonstrations.jsonl").write_text("{}\n")
    bad = subprocess.run([sys.executable, "-m", "rlhf_lite.doctor"], capture_output=True, text=True,
                         env={**env, "RLHF_DATA_DIR": str(bad_data)}, cwd=REPO_ROOT)
    assert bad.returncode == 1 and "changed demonstrations.jsonl" in bad.stdout
