"""Where the course keeps its data and trained artifacts (overridable for tests and CI)."""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RLHF_DATA_DIR", REPO_ROOT / "data"))
ARTIFACTS_DIR = Path(os.environ.get("RLHF_ARTIFACTS_DIR", REPO_ROOT / "artifacts"))


def shown(path) -> str:
    """A path as messages print it: relative to the repository when inside it (no user's
    home directory in a notebook's committed output)."""
    path = Path(path).resolve()
    inside = path.is_relative_to(REPO_ROOT)
    return str(path.relative_to(REPO_ROOT)) if inside else str(path)
