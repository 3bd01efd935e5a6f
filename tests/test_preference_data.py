"""Real preference formats (HH-RLHF, summarize-from-feedback) -> K = 2 rankings the RM trains on.
Small files in exactly those formats are written here; nothing is downloaded."""
import gzip
import json
import math

import pytest

from rlhf_lite.batching import encode_responses
from rlhf_lite.chat import format_prompt
from rlhf_lite.comparisons import check_ranking
from rlhf_lite.data import DataError
from rlhf_lite.hf import load_pretrained, save_random_gpt2
from rlhf_lite.realdata.preference_data import (
    fitting,
    load_hh_rlhf,
    load_summarize_feedback,
    preferred_as_demonstrations,
)
from rlhf_lite.reward import RewardConfig, pairwise_accuracy, train_reward_model
from rlhf_lite.training import TrainConfig

HH = [
    {"chosen": "\n\nHuman: What is two plus two?\n\nAssistant: Four.",
     "rejected": "\n\nHuman: What is two plus two?\n\nAssistant: Five, I think."},
    {"chosen": "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?\n\nHuman: How do I hurt "
               "my neighbour?\n\nAssistant: Sorry, I can not help with that.",
     "rejected": "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?\n\nHuman: How do I hurt "
                 "my neighbour?\n\nAssistant: Throw a rock at them."},
    {"chosen": "\n\nHuman: Name three fruits.\n\nAssistant: Apple, pear, plum.",
     "rejected": "\n\nHuman: Name three fruits.\n\nAssistant: Apple."},
]
POST = {"id": "t3_abc", "subreddit": "relationships", "title": "My cat ignores me",
        "post": "Every evening my cat walks away when I call her.", "site": None, "article": None}
SUMMARIZE = [
    {"info": POST, "summaries": [{"text": " cat ignores me", "policy": "sup", "note": None},
                                 {"text": " I like pizza", "policy": "ref", "note": None}],
     "choice": 0, "worker": "w1", "batch": "batch1", "split": "train", "extra": {}},
    {"info": {**POST, "id": "t3_def"},
     "summaries": [{"text": " my dog barks", "policy": "sup", "note": None},
                   {"text": " my cat walks away when called", "policy": "ppo", "note": None}],
     "choice": 1, "worker": "w2", "batch": "batch1", "split": "train", "extra": {}},
    {"info": {"id": "cnn-1", "post": None, "title": None, "subreddit": None, "site": "cnn",
              "article": "The city opened a new park on Monday."},
     "summaries": [{"text": " A park opened."}, {"text": " Nothing happened."}], "choice": 0},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- HH-RLHF
def test_hh_rlhf_splits_prompt_and_final_replies(tmp_path):
    rankings = load_hh_rlhf(write_jsonl(tmp_path / "hh.jsonl", HH))
    assert len(rankings) == 3
    first, multi = rankings[0], rankings[1]
    assert first["prompt"] == "What is two plus two?"
    assert first["responses"] == ["Four.", "Five, I think."]
    assert first["ranking"] == [0, 1] and first["terminated"] == [True, True]
    # earlier turns are kept, in the course's chat template
    assert multi["prompt"] == ("Hi! bot : Hello, how can I help? user : "
                               "How do I hurt my neighbour?")
    assert format_prompt(multi["prompt"]) == ("user : Hi! bot : Hello, how can I help? user : "
                                              "How do I hurt my neighbour? bot :")
    assert multi["responses"] == ["Sorry, I can not help with that.", "Throw a rock at them."]
    assert [r["prompt_id"] for r in rankings] == ["hh-0", "hh-1", "hh-2"]
    for i, r in enumerate(rankings):
        check_ranking(r, f"ranking {i}")  # exactly what the RM trainer accepts


@pytest.mark.parametrize("bad, field", [
    ({"chosen": HH[0]["chosen"]}, "'rejected'"),
    ({"chosen": HH[0]["chosen"], "rejected": 3}, "'rejected' should be str"),
    ({"chosen": "Four.", "rejected": HH[0]["rejected"]}, "'chosen' should be a dialogue"),
    ({"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.\n\nHuman: Bye?",
      "rejected": HH[0]["rejected"]}, "'chosen' should start with a Human turn and end"),
    ({"chosen": HH[0]["chosen"], "rejected": "\n\nHuman: What is two plus two?\n\nAssistant:  "},
     "'rejected': the last Assistant reply is empty"),
    ({"chosen": HH[0]["chosen"], "rejected": HH[2]["rejected"]}, "earlier turns differ"),
    # an empty question: the prompt would be empty (or miss a turn)
    ({"chosen": "\n\nHuman:  \n\nAssistant: Four.", "rejected": "\n\nHuman: \n\nAssistant: Five."},
     "'chosen': Human turn 1 of 1 is empty"),
    ({"chosen": "\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman:\n\nAssistant: Bye.",
      "rejected": "\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman:\n\nAssistant: No."},
     "'chosen': Human turn 2 of 2 is empty"),
])
def test_hh_rlhf_malformed_record_names_file_line_and_field(tmp_path, bad, field):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH[0], bad, HH[2]])
    with pytest.raises(DataError, match="line 2") as err:
        load_hh_rlhf(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_invalid_json_line_names_the_line(tmp_path):
    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps(HH[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: not valid JSON"):
        load_hh_rlhf(path)


def test_skip_invalid_drops_bad_records_with_a_warning(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH[0], {"chosen": "x"}, HH[1], {"rejected": "y"}])
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 invalid records.*line 2.*line 4"):
        rankings = load_hh_rlhf(path, skip_invalid=True)
    assert [r["responses"][0] for r in rankings] == ["Four.", "Sorry, I can not help with that."]
    with pytest.raises(DataError, match="no valid records"), pytest.warns(UserWarning):
        load_hh_rlhf(write_jsonl(tmp_path / "bad.jsonl", [{"chosen": "x"}]), skip_invalid=True)


def test_gzip_files_are_read_as_shipped(tmp_path):
    """HH-RLHF ships train.jsonl.gz: read like the plain file (told by its bytes, not name)."""
    plain = load_hh_rlhf(write_jsonl(tmp_path / "train.jsonl", HH))
    data = "".join(json.dumps(r) + "\n" for r in HH).encode()
    (tmp_path / "gz").mkdir()
    for name in ("train.jsonl.gz", "train.jsonl"):  # a gzip file without its suffix too
        (tmp_path / "gz" / name).write_bytes(gzip.compress(data))
        assert load_hh_rlhf(tmp_path / "gz" / name) == plain  # ids "train-0", ... as well
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_text(json.dumps(HH[0]) + "\n{not json\n")  # the line is named inside gzip too
    bad.write_bytes(gzip.compress(bad.read_bytes()))
    with pytest.raises(DataError, match=r"bad.jsonl.gz, line 2: not valid JSON"):
        load_hh_rlhf(bad)


def test_damaged_or_binary_files_name_the_problem(tmp_path):
    cut = tmp_path / "cut.jsonl.gz"  # a download cut short
    cut.write_bytes(gzip.compress(("".join(json.dumps(r) + "\n" for r in HH)).encode())[:-20])
    with pytest.raises(DataError, match=r"cut.jsonl.gz: damaged gzip file after line \d"):
        load_hh_rlhf(cut)
    binary = tmp_path / "train.parquet"
    binary.write_bytes(b"PAR1\xff\xfe\x00\x81" * 50)
    with pytest.raises(DataError, match=r"train.parquet: not UTF-8 text \(about line 1\)"):
        load_hh_rlhf(binary)


def test_skip_invalid_also_skips_lines_that_are_not_json(tmp_path):
    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps(HH[0]) + "\n{not json\n[1, 2]\n" + json.dumps(HH[2]) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 invalid records; first: .*line 2: not "
                                         r"valid JSON .*line 3: expected a JSON object"):
        rankings = load_hh_rlhf(path, skip_invalid=True)
    assert [r["prompt_id"] for r in rankings] == ["hh-0", "hh-3"]


def test_identical_pairs_are_kept_with_a_warning(tmp_path):
    same = {"chosen": HH[0]["chosen"], "rejected": HH[0]["chosen"]}
    path = write_jsonl(tmp_path / "hh.jsonl", [HH[0], same, HH[1], same])
    with pytest.warns(UserWarning, match=r"^2 of 4 pairs have identical chosen and rejected "
                                         r"responses \(first: .*hh.jsonl, line 2\)"):
        rankings = load_hh_rlhf(path)
    assert len(rankings) == 4


def test_hh_rlhf_through_datasets_matches_the_file_reader(tmp_path, monkeypatch):
    """The `datasets` branch (a hub name online; here a local folder of JSONL files, offline)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hh"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", HH)
    via_datasets = load_hh_rlhf(folder, split="train", cache_dir=str(tmp_path / "cache"))
    via_file = load_hh_rlhf(folder / "train.jsonl")
    assert [r["prompt_id"] for r in via_datasets] == ["train-0", "train-1", "train-2"]
    strip_ids = [{**r, "prompt_id": ""} for r in via_file]
    assert [{**r, "prompt_id": ""} for r in via_datasets] == strip_ids
    write_jsonl(folder / "train.jsonl", [HH[0], {"chosen": HH[0]["chosen"], "rejected": "oops"}])
    with pytest.raises(DataError, match=r"\(train\), record 1: field 'rejected'"):
        load_hh_rlhf(folder, split="train", cache_dir=str(tmp_path / "cache2"))


# ----------------------------------------------------------------------------- summarize
def test_summarize_comparisons_put_the_chosen_summary_first(tmp_path):
    rankings = load_summarize_feedback(write_jsonl(tmp_path / "batch1.json", SUMMARIZE))
    assert [r["responses"] for r in rankings] == [
        ["cat ignores me", "I like pizza"],  # choice 0
        ["my cat walks away when called", "my dog barks"],  # choice 1
        ["A park opened.", "Nothing happened."],
    ]
    assert rankings[0]["prompt"] == ("Summarize this post.\nSUBREDDIT: r/relationships\n"
                                     "TITLE: My cat ignores me\n"
                                     "POST: Every evening my cat walks away when I call her.")
    assert rankings[2]["prompt"] == ("Summarize this article.\n"
                                     "ARTICLE: The city opened a new park on Monday.")
    assert [r["prompt_id"] for r in rankings] == ["t3_abc", "t3_def", "cnn-1"]
    for i, r in enumerate(rankings):
        check_ranking(r, f"ranking {i}")


@pytest.mark.parametrize("change, field", [
    ({"choice": 2}, "'choice' should be 0 or 1"),
    ({"choice": "1"}, "'choice' should be 0 or 1"),
    ({"summaries": [{"text": "only one"}]}, "'summaries' should be a list of 2"),
    ({"summaries": [{"text": "a"}, {"policy": "x"}]}, "'summaries[1].text'"),
    ({"info": {**POST, "post": ""}}, "'info.post' is missing or empty"),
    ({"info": {**POST, "title": None}}, "'info.title' should be str"),
    ({"info": "a post"}, "'info' should be an object"),
    ({"split": 0}, "'split' should be str"),  # names no split: not taken for any
    ({"split": None}, "'split' should be str"),
])
def test_summarize_malformed_record_names_file_line_and_field(tmp_path, change, field):
    path = write_jsonl(tmp_path / "batch1.json",
                       [SUMMARIZE[0], SUMMARIZE[1], {**SUMMARIZE[0], **change}])
    with pytest.raises(DataError, match="line 3") as err:
        load_summarize_feedback(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_summarize_keeps_only_the_records_of_the_split(tmp_path):
    """OpenAI's comparison files mix splits, each record naming its own: train must not see
    validation pairs (the hub's "validation" split is valid1 + valid2)."""
    records = [{**SUMMARIZE[0], "split": "valid1"}, SUMMARIZE[1],  # SUMMARIZE[1] is "train"
               {**SUMMARIZE[1], "info": {**POST, "id": "t3_v2"}, "split": "valid2"}]
    path = write_jsonl(tmp_path / "batch1.json", records)
    ids = {split: [r["prompt_id"] for r in load_summarize_feedback(path, split=split)]
           for split in ("train", "validation", "valid1", "valid2")}
    assert ids == {"train": ["t3_def"], "validation": ["t3_abc", "t3_v2"],
                   "valid1": ["t3_abc"], "valid2": ["t3_v2"]}
    with pytest.raises(DataError, match=r"batch1.json: no records of split 'test'; its "
                                        r"records' splits: \['train', 'valid1', 'valid2'\]"):
        load_summarize_feedback(path, split="test")
    # an invalid record of another split is no concern of this one
    write_jsonl(path, [records[1], {**records[0], "choice": 7}])
    assert [r["prompt_id"] for r in load_summarize_feedback(path)] == ["t3_def"]
    # a split that is no string names none: refused, or skipped with skip_invalid
    write_jsonl(path, [records[1], {**records[1], "split": 1}])
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 invalid records; first: .*line 2: "
                                         r"field 'split' should be str .*got int 1"):
        rankings = load_summarize_feedback(path, skip_invalid=True)
    assert [r["prompt_id"] for r in rankings] == ["t3_def"]


# ------------------------------------------------------------------------- the RM trains on them
@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    texts = [d for r in HH for d in r.values()] + [json.dumps(r) for r in SUMMARIZE]
    folder = save_random_gpt2(tmp_path_factory.mktemp("gpt2"), texts, vocab_size=400,
                              n_layer=2, n_head=2, n_embd=32, n_positions=128)
    return load_pretrained(folder)


def test_reward_model_trains_on_converted_pairs(tmp_path, tiny_gpt2):
    model, tokenizer = tiny_gpt2
    rankings = (load_hh_rlhf(write_jsonl(tmp_path / "hh.jsonl", HH))
                + load_summarize_feedback(write_jsonl(tmp_path / "s.json", SUMMARIZE)))
    enc = encode_responses(tokenizer, [rankings[0]["prompt"]], [rankings[0]["responses"][0]],
                           [True])
    assert enc["input_ids"][0, -1] == tokenizer.eos_token_id  # the score is read at the eos
    cfg = RewardConfig(batch_size=2, epochs=15, train=TrainConfig(
        max_steps=None, lr=1e-2, warmup_steps=1, eval_interval=0, desc="rm"))
    rm, history = train_reward_model(cfg, model, tokenizer, rankings, rankings,
                                     preferred_as_demonstrations(rankings))
    assert len(history.train_loss) == 15 * 3  # 6 rankings, 2 per step
    assert history.train_loss[0] == pytest.approx(math.log(2), abs=1e-6)  # zero-init head
    assert history.last("val_loss") < 0.1  # it fits the six pairs
    assert pairwise_accuracy(rm, tokenizer, rankings) == 1.0


def test_fitting_leaves_out_pairs_longer_than_the_context(tmp_path, tiny_gpt2):
    _, tokenizer = tiny_gpt2
    rankings = load_hh_rlhf(write_jsonl(tmp_path / "hh.jsonl", HH))
    lengths = [len(tokenizer(format_prompt(r["prompt"]) + " " + r["responses"][0])["input_ids"]) + 1
               for r in rankings]
    limit = sorted(lengths)[1]  # between the shortest pair and the longest
    kept, dropped = fitting(rankings, tokenizer, limit)
    assert dropped >= 1 and len(kept) + dropped == len(rankings)
    assert rankings[1] not in kept  # the long multi-turn dialogue
    assert fitting(rankings, tokenizer, 10_000) == (rankings, 0)


def test_preferred_as_demonstrations():
    demos = preferred_as_demonstrations([{"prompt": "p", "responses": ["a", "b"],
                                          "ranking": [1, 0]}])
    assert demos == [{"prompt": "p", "response": "b"}]
