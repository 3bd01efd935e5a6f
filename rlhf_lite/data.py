"""Loading the world's JSONL files: validated line by line, then handed to `datasets`.

A malformed line stops loading with a `DataError` naming the file, the line number and the
field, never a silent skip: a course whose data quietly loses rows teaches wrong numbers.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .paths import DATA_DIR
from .utils import atomic_write_text

# Required fields and their types, per kind of file.
SCHEMAS = {
    "pretrain": {"text": str},
    "prompts": {"id": str, "category": str, "prompt": str, "meta": dict},
    "demonstrations": {"id": str, "prompt_id": str, "category": str, "prompt": str,
                       "response": str, "flaw": str},
    "comparisons": {"prompt_id": str, "prompt": str, "chosen": str, "rejected": str},
    # K responses of one prompt, ranked best first (checked further by reward.check_ranking)
    "rankings": {"prompt_id": str, "prompt": str, "responses": list, "terminated": list,
                 "ranking": list},
}
FILES = {
    "pretrain_train": ("pretrain_train.jsonl", "pretrain"),
    "pretrain_val": ("pretrain_val.jsonl", "pretrain"),
    "prompts_train": ("prompts_train.jsonl", "prompts"),
    "prompts_validation": ("prompts_validation.jsonl", "prompts"),
    "prompts_heldout": ("prompts_heldout.jsonl", "prompts"),
    "demonstrations": ("demonstrations.jsonl", "demonstrations"),
}


class DataError(ValueError):
    """A data file that does not match its schema; the message names file, line and field."""


def read_jsonl(path: str | Path, schema: dict[str, type]) -> list[dict]:
    """Every record of a JSONL file, each checked against `schema` (field -> type)."""
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                raise DataError(f"{path}, line {line_no}: empty line")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {line_no}: expected a JSON object")
            for field, kind in schema.items():
                if field not in record:
                    raise DataError(f"{path}, line {line_no}: missing field '{field}'")
                if not isinstance(record[field], kind):
                    raise DataError(f"{path}, line {line_no}: field '{field}' should be "
                                    f"{kind.__name__}, got {type(record[field]).__name__}")
                if kind is str and not record[field].strip():
                    raise DataError(f"{path}, line {line_no}: field '{field}' is empty")
            records.append(record)
    if not records:
        raise DataError(f"{path}: no records")
    return records


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    """Write records as JSONL (sorted keys, one object per line), atomically: a crash or a full
    disk leaves the old file or the complete new one, never a truncated file that loads."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


CHECKSUM_FILE = "CHECKSUMS.sha256"  # the manifest of data/, in `sha256sum -c` format


def checksums(data_dir: str | Path) -> dict[str, str]:
    """sha256 of every file under `data_dir` but the manifest: relative path -> hex digest."""
    root = Path(data_dir)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != CHECKSUM_FILE}


def load_records(name: str, data_dir: str | Path | None = None) -> list[dict]:
    """The validated records of one of the world's files (a key of `FILES`)."""
    if name not in FILES:
        raise KeyError(f"unknown data file {name!r}; choose from {sorted(FILES)}")
    filename, kind = FILES[name]
    return read_jsonl(Path(data_dir or DATA_DIR) / filename, SCHEMAS[kind])


def load_dataset(name: str, data_dir: str | Path | None = None):
    """The same records as a `datasets.Dataset` (columns = fields)."""
    from datasets import Dataset  # heavy: imported when used

    records = load_records(name, data_dir)
    if "meta" in records[0]:  # meta differs per category: keep it as JSON text in the table
        records = [{**r, "meta": json.dumps(r["meta"], sort_keys=True)} for r in records]
    return Dataset.from_list(records)
