"""Repository contracts: pinned environments agree, the package imports light, notebooks are clean."""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins(lines):
    return {m.group(1).lower(): m.group(2) for line in lines
            if (m := re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", line))}


def test_environment_yml_pins_the_same_versions_as_requirements():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = pins((ROOT / "environment.yml").read_text().splitlines())
    assert req["torch"] == "2.13.0"
    assert req == env
    assert "-e ." in (ROOT / "requirements.txt").read_text()


def test_package_imports_without_transformers_or_datasets():
    code = ("import sys, rlhf_lite, rlhf_lite.model, rlhf_lite.generation, rlhf_lite.training, "
            "rlhf_lite.world, rlhf_lite.labeler, rlhf_lite.data, rlhf_lite.pretrain, "
            "rlhf_lite.artifacts, rlhf_lite.evaluation, rlhf_lite.tokenizer; "
            "print([m for m in ('transformers', 'datasets', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_notebooks_state_objectives_and_runtime_and_hold_no_errors():
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks, "no notebooks found"
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        first = "".join(cells[0]["source"]).lower()
        assert "objectives" in first and "runtime" in first, path.name
        errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{path.name} has committed error outputs"
