"""The toy world: data/ is reproducible from its seed, splits are clean, the vocabulary is
closed."""
import collections
import json
import random

import pytest

from rlhf_lite import world
from rlhf_lite.paths import REPO_ROOT

COMMITTED = REPO_ROOT / "data"
JSONL_FILES = ["pretrain_train.jsonl", "pretrain_val.jsonl", "prompts_train.jsonl",
               "prompts_validation.jsonl", "prompts_heldout.jsonl", "demonstrations.jsonl"]
TOKENIZER_FILES = ["tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"]
SPLIT_NAMES = ["train", "validation", "heldout"]


def read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("world_default_seed")
    counts = world.write_world_data(out)
    return out, counts


@pytest.fixture(scope="module")
def committed():
    return {name: read(COMMITTED / name) for name in JSONL_FILES}


@pytest.fixture(scope="module")
def vocab():
    return set(world.vocabulary())


# ----------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("name", JSONL_FILES + TOKENIZER_FILES)
def test_default_seed_rebuilds_committed_data_byte_for_byte(regenerated, name):
    out, _ = regenerated
    assert (out / name).read_bytes() == (COMMITTED / name).read_bytes(), name


def test_write_world_data_returns_line_counts(regenerated):
    out, counts = regenerated
    assert counts == {"pretrain_train.jsonl": 8000, "pretrain_val.jsonl": 500,
                      "prompts_train.jsonl": 162, "prompts_validation.jsonl": 30,
                      "prompts_heldout.jsonl": 102, "demonstrations.jsonl": 384}
    for name, n in counts.items():
        assert len((out / name).read_text(encoding="utf-8").splitlines()) == n


def test_other_seed_gives_other_data_same_vocabulary(tmp_path):
    world.write_world_data(tmp_path, seed=4321, n_train_docs=300, n_val_docs=50)
    for name in ["pretrain_train.jsonl", "prompts_train.jsonl", "prompts_heldout.jsonl",
                 "demonstrations.jsonl"]:
        assert (tmp_path / name).read_bytes() != (COMMITTED / name).read_bytes(), name
    # same sizes of the prompt splits (they depend on category sizes, not the seed) ...
    for split in SPLIT_NAMES:
        name = f"prompts_{split}.jsonl"
        assert len(read(tmp_path / name)) == len(read(COMMITTED / name))
    # ... and the vocabulary does not depend on the seed
    for name in TOKENIZER_FILES:
        assert (tmp_path / name).read_bytes() == (COMMITTED / name).read_bytes(), name


# ----------------------------------------------------------------------------- prompts and splits
def test_splits_are_disjoint_and_cover_every_category(committed):
    splits = {s: committed[f"prompts_{s}.jsonl"] for s in SPLIT_NAMES}
    strings = {s: [p["prompt"] for p in ps] for s, ps in splits.items()}
    for s in SPLIT_NAMES:
        assert len(set(strings[s])) == len(strings[s]), f"duplicate prompt within {s}"
    for i, a in enumerate(SPLIT_NAMES):
        for b in SPLIT_NAMES[i + 1:]:
            assert not set(strings[a]) & set(strings[b]), (a, b)
    ids = [p["id"] for ps in splits.values() for p in ps]
    assert len(set(ids)) == len(ids)
    for s, ps in splits.items():
        assert {p["category"] for p in ps} == set(world.CATEGORIES), s
        assert all(p["id"].startswith(f"{s}-{p['category']}-") for p in ps)
    # every prompt is a prompt of the world, with its meta unchanged
    known = {p["prompt"]: p for p in world.all_prompts()}
    for ps in splits.values():
        for p in ps:
            assert known[p["prompt"]]["category"] == p["category"]
            assert known[p["prompt"]]["meta"] == p["meta"]


def test_split_sizes_follow_design(committed):
    by_cat = collections.Counter(p["category"] for p in world.all_prompts())
    kept = {c: (90 if c == "arithmetic" else n) for c, n in by_cat.items()}
    total = sum(len(committed[f"prompts_{s}.jsonl"]) for s in SPLIT_NAMES)
    assert total == sum(kept.values()) == 294
    for cat, n in kept.items():
        counts = {s: sum(p["category"] == cat for p in committed[f"prompts_{s}.jsonl"])
                  for s in SPLIT_NAMES}
        assert counts["train"] == round(0.55 * n)
        assert counts["validation"] == max(1, round(0.10 * n))
        assert sum(counts.values()) == n


@pytest.mark.parametrize("seed", [0, 7, 99])
def test_split_prompts_other_seeds_disjoint(seed):
    splits = world.split_prompts(world.all_prompts(), random.Random(seed))
    seen = {}
    for s, ps in splits.items():
        assert {p["category"] for p in ps} == set(world.CATEGORIES)
        for p in ps:
            assert seen.setdefault(p["prompt"], s) == s


def test_format_prompt_exact():
    assert (world.format_prompt("what is two plus three ?")
            == "user : what is two plus three ? bot :")


def test_all_prompts_facts():
    prompts = world.all_prompts()
    by_text = {p["prompt"]: p for p in prompts}
    assert len(by_text) == len(prompts) == 386
    assert by_text["what is seven plus five ?"]["meta"] == {"answer": "twelve"}
    assert by_text["what is nine minus four ?"]["meta"] == {"answer": "five"}
    assert "what is seven plus six ?" not in by_text  # sums stay within twelve
    assert by_text["what color is a zorp ?"]["category"] == "unknown"
    assert by_text["what is the capital of norland ?"]["meta"]["answer"] == "vell"
    assert by_text["name three fruits ."]["meta"] == {"kind": "fruits", "count": 3}


# ----------------------------------------------------------------------------- corpus
def test_unknown_subjects_never_in_pretraining_text(committed):
    unknown = set(world.UNKNOWN_THINGS + world.UNKNOWN_COUNTRIES)
    for name in ["pretrain_train.jsonl", "pretrain_val.jsonl"]:
        for r in committed[name]:
            assert not unknown & set(r["text"].split()), r["text"]
    rng = random.Random(2024)  # and not for another seed either
    for _ in range(3000):
        text = world.pretraining_document(rng)
        assert not unknown & set(text.split()), text
    # yet the unknown prompts do name them
    unknown_prompts = [p for p in world.all_prompts() if p["category"] == "unknown"]
    assert {p["meta"]["subject"] for p in unknown_prompts} == unknown


def test_every_data_token_in_vocabulary(committed, vocab):
    for name, records in committed.items():
        for r in records:
            for field in ("text", "prompt", "response"):
                if field in r:
                    missing = set(r[field].split()) - vocab
                    assert not missing, (name, r[field], missing)


@pytest.mark.parametrize("seed", [1, 2, 3, 11])
def test_generated_text_other_seeds_in_vocabulary(vocab, seed):
    rng = random.Random(seed)
    for p in world.all_prompts():
        for text, _ in world.candidate_responses(p, 6, rng):
            assert not set(text.split()) - vocab, (p["prompt"], text)
        text, _ = world.demonstration(p, rng)
        assert not set(text.split()) - vocab, (p["prompt"], text)
    for _ in range(500):
        text = world.pretraining_document(rng)
        assert not set(text.split()) - vocab, text


def test_vocabulary_sorted_unique_whitespace_free(vocab):
    words = world.vocabulary()
    assert words == sorted(set(words))
    assert len(words) == 192
    assert all(w and not any(c.isspace() for c in w) for w in words)
    assert {"user", "bot", ":", ".", "?", ","} <= vocab


def test_forum_threads_continue_questions(committed):
    """After "bot :", web text mostly asks another question: what the base model copies."""
    replies = questions = threads = 0
    for name in ["pretrain_train.jsonl", "pretrain_val.jsonl"]:
        for r in committed[name]:
            tokens = r["text"].split()
            starts = [i + 2 for i in range(len(tokens) - 1) if tokens[i:i + 2] == ["bot", ":"]]
            threads += bool(starts)
            for start in starts:
                rest = tokens[start:]
                end = next(i for i, t in enumerate(rest) if t in (".", "?"))
                replies += 1
                questions += rest[end] == "?"
    share = questions / replies
    assert threads > 1500  # ~26% of 8500 documents are forum threads
    assert replies > 4000
    assert 0.4 < share < 0.7, share  # designed: 0.65 * 4/5 = 0.52 open with a question


# ----------------------------------------------------------------------------- demonstrations
def test_demonstrations_only_for_train_and_validation_prompts(committed):
    prompts = {s: {p["id"]: p for p in committed[f"prompts_{s}.jsonl"]} for s in SPLIT_NAMES}
    demos = committed["demonstrations.jsonl"]
    per_prompt = collections.Counter(d["prompt_id"] for d in demos)
    assert not set(per_prompt) & set(prompts["heldout"])
    heldout_strings = {p["prompt"] for p in prompts["heldout"].values()}
    assert not {d["prompt"] for d in demos} & heldout_strings
    # two demonstrations for each train and each validation prompt (validation: SFT's val loss)
    assert set(per_prompt) == set(prompts["train"]) | set(prompts["validation"])
    assert set(per_prompt.values()) == {2}
    for d in demos:
        p = prompts["train"].get(d["prompt_id"]) or prompts["validation"][d["prompt_id"]]
        assert (d["prompt"], d["category"]) == (p["prompt"], p["category"])
    assert [d["id"] for d in demos] == [f"demo-{i:04d}" for i in range(len(demos))]


def test_demonstration_flaw_shares_committed(committed):
    demos = committed["demonstrations.jsonl"]
    share = {k: v / len(demos) for k, v in collections.Counter(d["flaw"] for d in demos).items()}
    assert set(share) == {"good", "verbose", "wrong"}
    assert share["good"] > share["verbose"] > share["wrong"] > 0
    assert 0.52 < share["good"] < 0.68, share  # designed: 0.65 (0.6 on unknown prompts)
    assert 0.19 < share["verbose"] < 0.32, share  # designed: 0.25
    assert 0.07 < share["wrong"] < 0.18, share  # designed: 0.1 (0.3 on unknown prompts)
    for d in demos:
        if d["flaw"] == "verbose":
            assert any(d["response"].endswith(" " + f) for f in world.FILLERS), d


def test_demonstration_flaw_probabilities():
    rng = random.Random(5)
    prompts = world.all_prompts()
    counts = {"unknown": collections.Counter(), "other": collections.Counter()}
    for _ in range(40):
        for p in prompts:
            _, flaw = world.demonstration(p, rng)
            counts["unknown" if p["category"] == "unknown" else "other"][flaw] += 1
    for group, p_wrong in [("unknown", 0.3), ("other", 0.1)]:
        n = sum(counts[group].values())
        tol = lambda p: 4 * (p * (1 - p) / n) ** 0.5  # noqa: E731
        assert abs(counts[group]["wrong"] / n - p_wrong) < tol(p_wrong), (group, counts[group])
        assert abs(counts[group]["verbose"] / n - 0.25) < tol(0.25), (group, counts[group])
        p_good = 0.75 - p_wrong
        assert abs(counts[group]["good"] / n - p_good) < tol(p_good), (group, counts[group])
