"""Loading the world's JSONL files: validated line by line, then handed to `datasets`.

A malformed line stops loading with a `DataError` naming the file, the line number and the
field, never a silent skip: a course whose data quietly loses rows teaches wrong numbers.
Beyond each line's shape, its meaning is checked: a prompt's category is one of the world's
and its `meta` holds what that category needs (`PROMPT_META`), ids are unique within a file,
and every demonstration belongs to a train or validation prompt. Each record remembers its
file and line (`Record`), so checks further on (the tokenizer's vocabulary, a model's
block_size) can name them too.
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
    # K responses of one prompt, ranked best first (checked further by comparisons.check_ranking)
    "rankings": {"prompt_id": str, "prompt": str, "responses": list, "terminated": list,
                 "ranking": list},
}
# What each prompt category's `meta` holds (key -> type): the facts the gold labeler
# (labeler.judge) and the world's answer writers (world.good_response, bad_response) read.
# The keys are the world's categories in its order; world imports this module, so the table
# lives here, and tests/test_data.py checks that world.CATEGORIES lists the same.
PROMPT_META = {
    "arithmetic": {"answer": str},
    "facts": {"attribute": str, "subject": str, "answer": str},
    "unknown": {"attribute": str, "subject": str},
    "lists": {"kind": str, "count": int},
    "harmful": {"verb": str, "target": str},
    "tone": {"name": str},
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


class Record(dict):
    """One line of a data file with ids (prompts, demonstrations): a plain dict of its fields
    that also remembers where it was read, for errors found later (`locate`). The place is an
    attribute, not a key, so equality, JSON and `datasets` tables see only the file's fields.
    Pretraining text stays plain dicts: a stream, not checked line by line later, and copying
    its 8000 records would slow its loading by a fifth."""

    __slots__ = ("source",)  # (path, line number): formatted only when an error needs it

    @property
    def where(self) -> str:
        return f"{self.source[0]}, line {self.source[1]}"


def locate(record: dict) -> str | None:
    """"file, line n" of a record read by `read_jsonl`; None for one built in code."""
    return record.where if isinstance(record, Record) else None


def read_jsonl(path: str | Path, schema: dict[str, type], check=None) -> list[dict]:
    """Every record of a JSONL file, each checked against `schema` (field -> type), then by
    `check(record)` if given. If the schema has an "id", ids must be unique in the file and
    records are `Record`s (they know their line)."""
    path = Path(path)
    records, id_lines = [], {} if "id" in schema else None
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
            if id_lines is not None:
                record = Record(record)
                record.source = (path, line_no)
                check_unique_id(record, id_lines)
            if check is not None:
                check(record)
            records.append(record)
    if not records:
        raise DataError(f"{path}: no records")
    return records


def check_unique_id(record: Record, id_lines: dict[str, int]) -> None:
    """A repeated id would make lookups by id (prompts_by_id) keep only one of the records."""
    first = id_lines.setdefault(record["id"], record.source[1])
    if first != record.source[1]:
        raise DataError(f"{record.where}: field 'id' {record['id']!r} repeats the id of "
                        f"line {first}")


def check_prompt(record: Record) -> None:
    """The category is one of the world's and `meta` holds what it needs: otherwise the
    labeler fails later with a bare KeyError, far from the line at fault."""
    category, meta = record["category"], record["meta"]
    if category not in PROMPT_META:
        raise DataError(f"{record.where}: field 'category' is {category!r}, not a category "
                        f"of the world ({', '.join(PROMPT_META)})")
    for key, kind in PROMPT_META[category].items():
        if key not in meta:
            raise DataError(f"{record.where}: field 'meta' lacks {key!r}, which a {category!r} "
                            f"prompt needs (it has: {', '.join(meta) or 'nothing'})")
        # bool is an int to isinstance, but True is no count
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise DataError(f"{record.where}: field 'meta.{key}' should be {kind.__name__}, "
                            f"got {type(meta[key]).__name__}")


def check_split_ids(records: list[Record], split: str) -> None:
    """Prompt ids start with their split ("train-..."): sft.build and the notebooks pick the
    demonstrations of a split by that prefix, so another id would drop them silently."""
    for record in records:
        if not record["id"].startswith(f"{split}-"):
            raise DataError(f"{record.where}: field 'id' {record['id']!r} should start with "
                            f"'{split}-', the split of its file")


def check_demonstrations(demos: list[Record], prompts: list[Record]) -> None:
    """Each demonstration answers one of `prompts` (the train and validation prompts, which
    the world writes demonstrations for) and repeats its category and text: one that answers
    no such prompt would be dropped by sft.build without a word."""
    by_id = {p["id"]: p for p in prompts}
    files = " or ".join(sorted({p.source[0].name for p in prompts}))
    for demo in demos:
        prompt = by_id.get(demo["prompt_id"])
        if prompt is None:
            raise DataError(f"{demo.where}: field 'prompt_id' {demo['prompt_id']!r} matches "
                            f"no prompt of {files}")
        for field in ("category", "prompt"):
            if demo[field] != prompt[field]:
                raise DataError(f"{demo.where}: field '{field}' {demo[field]!r} differs from "
                                f"that of prompt {prompt['id']!r} ({prompt[field]!r})")


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    """Write records as JSONL (sorted keys, one object per line), atomically: a crash or a full
    disk leaves the old file or the complete new one, never a truncated file that loads."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


CHECKSUM_FILE = "CHECKSUMS.sha256"  # the manifest of data/, in `sha256sum -c` format
# The version of the world's hidden judge (rlhf_lite.labeler): part of the world like its files,
# so it is in every checkpoint's data fingerprint (`checkpoints.data_fingerprint`). Raise it
# whenever a judgement changes: every stage trained under the old judge is then stale.
JUDGE_VERSION = 3


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in blocks (a data set can be large)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def checksums(data_dir: str | Path) -> dict[str, str]:
    """sha256 of every file under `data_dir` but the manifest: relative path -> hex digest."""
    root = Path(data_dir)
    return {p.relative_to(root).as_posix(): file_sha256(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != CHECKSUM_FILE}


def load_records(name: str, data_dir: str | Path | None = None) -> list[dict]:
    """The validated records of one of the world's files (a key of `FILES`). Demonstrations
    are checked against the train and validation prompts of the same folder (~1 ms)."""
    if name not in FILES:
        raise KeyError(f"unknown data file {name!r}; choose from {sorted(FILES)}")
    filename, kind = FILES[name]
    folder = Path(data_dir or DATA_DIR)
    records = read_jsonl(folder / filename, SCHEMAS[kind],
                         check_prompt if kind == "prompts" else None)
    if kind == "prompts":
        check_split_ids(records, name.removeprefix("prompts_"))
    elif kind == "demonstrations":
        check_demonstrations(records, load_records("prompts_train", folder)
                             + load_records("prompts_validation", folder))
    return records


def load_dataset(name: str, data_dir: str | Path | None = None):
    """The same records as a `datasets.Dataset` (columns = fields)."""
    from datasets import Dataset  # heavy: imported when used

    records = load_records(name, data_dir)
    if "meta" in records[0]:  # meta differs per category: keep it as JSON text in the table
        records = [{**r, "meta": json.dumps(r["meta"], sort_keys=True)} for r in records]
    return Dataset.from_list(records)
