"""Loading the JSONL files: every committed file validates; malformed lines fail loudly."""
import json

import pytest

from rlhf_lite.data import (
    FILES,
    PROMPT_META,
    SCHEMAS,
    DataError,
    load_dataset,
    load_records,
    locate,
    read_jsonl,
)
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
    ids = [f"heldout-p{i}" for i in range(1, 6)]
    lines = [json.dumps({**GOOD, "id": i}) for i in ids]
    lines[2] = json.dumps({**GOOD, "id": ids[2], "extra": [1, 2]})  # extra fields are kept
    path = write_lines(tmp_path / "prompts_heldout.jsonl", lines)
    records = read_jsonl(path, SCHEMAS["prompts"])
    assert len(records) == 5
    assert [r["id"] for r in records] == ids
    assert records[2]["extra"] == [1, 2]
    ds = load_dataset("prompts_heldout", tmp_path)
    assert len(ds) == 5 and ds["id"] == ids


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


# ----------------------------------------------------------------------------- meaning
# Malformed copies of the committed files: one line changed, the message must name file,
# line and field. The committed data passes every check (test_committed_file_loads).
def copy_world_files(tmp_path):
    for name in ("prompts_train", "prompts_validation", "prompts_heldout", "demonstrations"):
        filename = FILES[name][0]
        (tmp_path / filename).write_bytes((DATA / filename).read_bytes())
    return tmp_path


def change_line(path, line_no, change):
    """Apply `change` to the record on line `line_no` of `path`, in place."""
    lines = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[line_no - 1])
    change(record)
    lines[line_no - 1] = json.dumps(record)
    write_lines(path, lines)


def first_line_of(path, category):
    with open(path, encoding="utf-8") as f:
        return next(n for n, line in enumerate(f, 1) if json.loads(line)["category"] == category)


def assert_data_error(name, data_dir, filename, line_no, words):
    with pytest.raises(DataError) as err:
        load_records(name, data_dir)
    message = str(err.value)
    assert message.startswith(f"{data_dir / filename}, line {line_no}: "), message
    for word in words:
        assert word in message, message


def test_prompt_meta_table_is_the_worlds():
    """data.py holds the category table (world imports data, not the other way round): it
    must list world.CATEGORIES in order and the meta keys world writes for each."""
    from rlhf_lite import world

    assert list(PROMPT_META) == world.CATEGORIES
    for prompt in world.all_prompts():
        meta, needs = prompt["meta"], PROMPT_META[prompt["category"]]
        assert set(meta) == set(needs), prompt
        assert all(type(meta[key]) is kind for key, kind in needs.items()), prompt


def test_unknown_category_is_an_error(tmp_path):
    path = copy_world_files(tmp_path) / "prompts_train.jsonl"
    change_line(path, 3, lambda r: r.update(category="poetry"))
    assert_data_error("prompts_train", tmp_path, path.name, 3,
                      ["field 'category' is 'poetry'", "not a category of the world",
                       "arithmetic, facts, unknown, lists, harmful, tone"])


@pytest.mark.parametrize("category,key", [(c, k) for c, keys in PROMPT_META.items()
                                          for k in keys])
def test_meta_lacking_a_key_its_category_needs_is_an_error(tmp_path, category, key):
    path = copy_world_files(tmp_path) / "prompts_validation.jsonl"
    line_no = first_line_of(path, category)
    change_line(path, line_no, lambda r: r["meta"].pop(key))
    assert_data_error("prompts_validation", tmp_path, path.name, line_no,
                      [f"field 'meta' lacks '{key}'", f"a '{category}' prompt needs"])


@pytest.mark.parametrize("count,got", [("three", "str"), (True, "bool"), (3.0, "float")])
def test_meta_value_of_the_wrong_type_is_an_error(tmp_path, count, got):
    path = copy_world_files(tmp_path) / "prompts_heldout.jsonl"
    line_no = first_line_of(path, "lists")
    change_line(path, line_no, lambda r: r["meta"].update(count=count))
    assert_data_error("prompts_heldout", tmp_path, path.name, line_no,
                      [f"field 'meta.count' should be int, got {got}"])


@pytest.mark.parametrize("name", ["prompts_train", "demonstrations"])
def test_duplicate_id_is_an_error_naming_both_lines(tmp_path, name):
    path = copy_world_files(tmp_path) / FILES[name][0]
    first_id = json.loads(path.read_text(encoding="utf-8").splitlines()[1])["id"]
    change_line(path, 9, lambda r: r.update(id=first_id))
    assert_data_error(name, tmp_path, path.name, 9,
                      [f"field 'id' '{first_id}' repeats the id of line 2"])


def test_prompt_id_must_name_its_split(tmp_path):
    path = copy_world_files(tmp_path) / "prompts_validation.jsonl"
    change_line(path, 4, lambda r: r.update(id="train-facts-900"))
    assert_data_error("prompts_validation", tmp_path, path.name, 4,
                      ["field 'id' 'train-facts-900' should start with 'validation-'"])


def heldout_prompt():
    return load_records("prompts_heldout", DATA)[0]


@pytest.mark.parametrize("prompt_id", ["heldout", "train-facts-999", "demo"])
def test_demonstration_of_no_train_or_validation_prompt_is_an_error(tmp_path, prompt_id):
    """The toy world gives SFT the demonstrations whose prompt_id starts with "train-" or
    "validation-": any other would be dropped without a word, so loading refuses it."""
    path = copy_world_files(tmp_path) / "demonstrations.jsonl"
    held = heldout_prompt()
    prompt_id = held["id"] if prompt_id == "heldout" else prompt_id
    change_line(path, 7, lambda r: r.update(prompt_id=prompt_id, prompt=held["prompt"],
                                            category=held["category"]))
    assert_data_error("demonstrations", tmp_path, path.name, 7,
                      [f"field 'prompt_id' '{prompt_id}' matches no prompt of "
                       "prompts_train.jsonl or prompts_validation.jsonl"])


@pytest.mark.parametrize("field", ["category", "prompt"])
def test_demonstration_must_repeat_its_prompt(tmp_path, field):
    path = copy_world_files(tmp_path) / "demonstrations.jsonl"
    change_line(path, 12, lambda r: r.update({field: "poetry"}))
    assert_data_error("demonstrations", tmp_path, path.name, 12,
                      [f"field '{field}' 'poetry' differs from that of prompt"])


def test_committed_demonstrations_are_all_selected_by_sft():
    demos = load_records("demonstrations", DATA)
    train = [d for d in demos if d["prompt_id"].startswith("train-")]
    validation = [d for d in demos if d["prompt_id"].startswith("validation-")]
    assert (len(train), len(validation)) == (324, 60)


def test_records_know_their_line_but_stay_plain_dicts():
    import pickle

    demos = load_records("demonstrations", DATA)
    assert locate(demos[6]) == f"{DATA / 'demonstrations.jsonl'}, line 7"
    with open(DATA / "demonstrations.jsonl", encoding="utf-8") as f:
        first = json.loads(next(f))
    assert demos[0] == first and json.dumps(demos[0]) == json.dumps(first)
    assert locate(pickle.loads(pickle.dumps(demos[6]))) == locate(demos[6])
    assert locate(dict(demos[6])) is None and locate({"id": "d0"}) is None
    assert locate(load_records("pretrain_val", DATA)[0]) is None  # a stream: plain dicts
