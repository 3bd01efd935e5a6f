"""Where the course keeps its data and trained artifacts (overridable for tests and CI)."""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RLHF_DATA_DIR", REPO_ROOT / "data"))
ARTIFACTS_DIR = Path(os.environ.get("RLHF_ARTIFACTS_DIR", REPO_ROOT / "artifacts"))
