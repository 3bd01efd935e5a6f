"""Loading the JSONL files: every committed file validates; malformed lines fail loudly."""
import json

import pytest

from rlhf_lite.data import FILES, SCHEMAS, DataError, load_dataset, load_records, read_jsonl
from rlhf_lite.paths import REPO_ROOT

DATA = REPO_ROOT / "data"
EXPECTED_LINES = {"pretrain_train": 8000, "pretrain_val": 500, "prompts_train": 162,
                  "prompts_validation": 30, "prompts_heldout": 102, "demonstrations": 384}


@pytest.mark.parametrize("name", sorted(FILES))
def test_committed_file_loads(name):
    filename, kind = FILES[name]
    records = load_records(name, DATA)
    with open(DATA / filename, encoding="utf-8") as f:
        n_lines = sum(1 for _ in f)
    assert len(records) == n_lines == EXPECTED_LINES[name]
    for r in records:
        for field, typ in SCHEMAS[kind].items():
            assert isinstance(r[field], typ)


@pytest.mark.parametrize("name", ["pretrain_val", "prompts_validation", "demonstrations"])
def test_load_dataset_columns_and_length(name):
    from datasets import Dataset

    ds = load_dataset(name, DATA)
    assert isinstance(ds, Dataset)
    assert len(ds) == EXPECTED_LINES[name]
    kind = FILES[name][1]
    assert set(ds.column_names) == set(SCHEMAS[kind])
    key = "text" if kind == "pretrain" else "id"
    assert ds[key] == [r[key] for r in load_records(name, DATA)]


def test_load_dataset_keeps_meta_as_json_text():
    ds = load_dataset("prompts_validation", DATA)
    records = load_records("prompts_validation", DATA)
    assert "meta" in ds.column_names
    for row, record in zip(ds, records):
        assert isinstance(row["meta"], str)
        assert json.loads(row["meta"]) == record["meta"]
        assert row["prompt"] == record["prompt"]


def test_unknown_file_name_raises_key_error():
    with pytest.raises(KeyError, match="prompts_test"):
        load_records("prompts_test", DATA)
    with pytest.raises(KeyError):
        load_dataset("comparisons", DATA)


# ----------------------------------------------------------------------------- malformed input
GOOD = {"id": "p1", "category": "facts", "prompt": "what color is a pear ?",
        "meta": {"attribute": "color", "subject": "pear", "answer": "green"}}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def good_line(i):
    return json.dumps({**GOOD, "id": f"p{i}"})


def bad_file(tmp_path, bad, line_no, total=4):
    lines = [good_line(i) for i in range(1, total + 1)]
    lines[line_no - 1] = bad
    return write_lines(tmp_path / "prompts_train.jsonl", lines)


MALFORMED = [
    # (bad line, where it goes, words the message must contain)
    ('{"id": "p3", "category": ', 3, ["not valid JSON"]),
    (json.dumps({k: v for k, v in GOOD.items() if k != "prompt"}), 2,
     ["missing field", "'prompt'"]),
    (json.dumps({**GOOD, "meta": "color"}), 4, ["'meta'", "should be dict", "got str"]),
    (json.dumps({**GOOD, "id": 7}), 1, ["'id'", "should be str", "got int"]),
    (json.dumps({**GOOD, "category": None}), 3, ["'category'", "got NoneType"]),
    (json.dumps({**GOOD, "prompt": "   "}), 2, ["'prompt'", "is empty"]),
    (json.dumps({**GOOD, "id": ""}), 4, ["'id'", "is empty"]),
    ("", 2, ["empty line"]),
    ("   \t", 3, ["empty line"]),
    (json.dumps([GOOD]), 2, ["expected a JSON object"]),
    ('"just a string"', 1, ["expected a JSON object"]),
]


@pytest.mark.parametrize("bad,line_no,words", MALFORMED,
                         ids=[f"line{c[1]}-{c[2][0]}" for c in MALFORMED])
def test_malformed_line_raises_data_error(tmp_path, bad, line_no, words):
    path = bad_file(tmp_path, bad, line_no)
    with pytest.raises(DataError) as err:
        read_jsonl(path, SCHEMAS["prompts"])
    message = str(err.value)
    assert str(path) in message
    assert f"line {line_no}:" in message
    for word in words:
        assert word in message, message
    # through load_records too, and DataError is a ValueError
    with pytest.raises(ValueError, match=f"line {line_no}:"):
        load_records("prompts_train", tmp_path)


def test_trailing_blank_line_is_an_error(tmp_path):
    path = tmp_path / "pretrain_val.jsonl"
    path.write_text('{"text": "a cat says meow ."}\n\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: empty line"):
        load_records("pretrain_val", tmp_path)


def test_first_error_is_reported(tmp_path):
    lines = [good_line(1), json.dumps({**GOOD, "prompt": 3}), "not json"]
    path = write_lines(tmp_path / "prompts_train.jsonl", lines)
    with pytest.raises(DataError, match=r"line 2: field 'prompt' should be str, got int"):
        read_jsonl(path, SCHEMAS["prompts"])


def test_nothing_silently_dropped(tmp_path):
    lines = [good_line(i) for i in range(1, 6)]
    lines[2] = json.dumps({**GOOD, "id": "p3", "extra": [1, 2]})  # extra fields are kept
    path = write_lines(tmp_path / "prompts_heldout.jsonl", lines)
    records = read_jsonl(path, SCHEMAS["prompts"])
    assert len(records) == 5
    assert [r["id"] for r in records] == ["p1", "p2", "p3", "p4", "p5"]
    assert records[2]["extra"] == [1, 2]
    ds = load_dataset("prompts_heldout", tmp_path)
    assert len(ds) == 5 and ds["id"] == ["p1", "p2", "p3", "p4", "p5"]


def test_last_line_without_newline_is_read(tmp_path):
    path = tmp_path / "pretrain_train.jsonl"
    path.write_text('{"text": "one plus one is two ."}\n{"text": "a dog says woof ."}',
                    encoding="utf-8")
    assert [r["text"] for r in load_records("pretrain_train", tmp_path)] == [
        "one plus one is two .", "a dog says woof ."]


def test_empty_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match="empty.jsonl: no records"):
        read_jsonl(path, {"text": str})
