"""The gpt2-hh preset end to end, offline: a small file in HH-RLHF's format (multi-turn
dialogues, prompts asked twice) and a tiny random GPT-2 stand in for the hub's data set and
checkpoint; every stage runs through `pipeline.run` with a few steps, then the gold-RM
evaluation. The stages' training functions are wrapped to record what data they were given,
so the split is checked where it matters: no comparison of the gold half reaches a policy or
the proxy reward model."""
import gzip
import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from synthetic import accuracy_by_hand

from rlhf_lite import (
    artifacts,
    checkpoints,
    doctor,
    paths,
    pipeline,
    ppo,
    presets,
    reward,
    sft,
    stages,
)
from rlhf_lite.chat import format_prompt
from rlhf_lite.data import DataError
from rlhf_lite.datasource import ToyWorld
from rlhf_lite.dpo import DPOConfig
from rlhf_lite.hf import load_pretrained, save_random_gpt2
from rlhf_lite.realdata import PreferenceSource
from rlhf_lite.realdata.preference_data import (
    PARTS,
    PreferenceData,
    file_digest,
    hh_rlhf_ranking,
    split_comparisons,
    too_long,
)
from rlhf_lite.training import TrainConfig

TOPICS = ["bake bread", "fix a bike", "plant tomatoes", "learn chess", "write a poem",
          "save money", "sleep better", "start running", "paint a wall", "cook rice",
          "tie a tie", "make tea", "clean a pan", "fold a shirt", "feed a cat", "read faster",
          "brew coffee", "wash a car", "grow basil", "knit a scarf", "boil an egg",
          "sharpen a knife", "hang a shelf", "train a puppy", "study for a test",
          "plan a trip", "pack a bag", "mend a sock", "build a fire", "make soup"]


def dialogue(turns: list[str], reply: str) -> str:
    """An HH-RLHF dialogue: alternating Human / Assistant turns, ending with the reply."""
    speakers = ["Human", "Assistant"] * len(turns)
    return "".join(f"\n\n{s}: {t}" for s, t in zip(speakers, turns)) + f"\n\nAssistant: {reply}"


def hh_records() -> list[dict]:
    """64 records: 60 prompts, a third of them multi-turn, and the first 4 asked again with
    other replies (prompts occur more than once in HH-RLHF). Preferred replies help; rejected
    ones refuse."""
    topics = TOPICS + [f"{t} quickly" for t in TOPICS]
    records = []
    for i, j in enumerate([*range(len(topics)), 0, 1, 2, 3]):
        turns = [f"How do I {topics[j]}?"]
        if j % 3 == 1:  # a multi-turn dialogue: the earlier reply and a follow-up question
            turns += [f"Do you mean {topics[j]} at home?", "Yes, at home please."]
        helpful = f"Sure, to {topics[j]} start slowly and take one step at a time." + (
            " Ask me again if it helps." if i >= len(topics) else "")
        records.append({"chosen": dialogue(turns, helpful),
                        "rejected": dialogue(turns, "No. I will not tell you that.")})
    return records


def write_jsonl(path, records, lines=()) -> str:
    text = "".join(json.dumps(r) + "\n" for r in records) + "".join(lines)
    with gzip.open(path, "wt", encoding="utf-8") as f:  # as the hub ships train.jsonl.gz
        f.write(text)
    return str(path)


@pytest.fixture(scope="module")
def hh_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("hh") / "train.jsonl.gz", hh_records())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pairs = [hh_rlhf_ranking(r, "test", str(i)) for i, r in enumerate(hh_records())]
    texts = [format_prompt(r["prompt"]) + " " + text for r in pairs for text in r["responses"]]
    return save_random_gpt2(tmp_path_factory.mktemp("gpt2"), texts, vocab_size=400, n_layer=2,
                            n_head=2, n_embd=32, n_positions=160)


def micro_hh(hh_file: str, checkpoint) -> presets.Preset:
    """The gpt2-hh preset on the local file and checkpoint, on the CPU, a few steps a stage."""
    def steps(n, desc, lr=1e-3):
        return TrainConfig(max_steps=n, lr=lr, warmup_steps=1, eval_interval=0, desc=desc)

    data = PreferenceData(source=hh_file, heldout_prompts=6, validation_fraction=0.2,
                          max_tokens=120)
    hh = presets.get_preset("gpt2-hh")
    rm = replace(hh.rm, batch_size=4, epochs=2, train=steps(None, "rm", lr=3e-3), max_pairs=None)
    policy = replace(hh.ppo, iterations=1, batch_size=8, minibatch_size=4,
                     ppo_epochs=1, max_new_tokens=12, lr=1e-3)
    return replace(hh, name="hh-micro", device="cpu", precision="fp32",
                   data=PreferenceSource(data), base=replace(hh.base, init_from=str(checkpoint)),
                   sft=replace(hh.sft, batch_size=8, train=steps(3, "sft")),
                   rm=replace(rm, max_pairs=16),  # fewer pairs than the gold RM (its whole half)
                   gold_rm=replace(rm, train=steps(None, "gold rm", lr=3e-3)), ppo=policy,
                   dpo=DPOConfig(batch_size=8, train=steps(None, "dpo")),
                   rloo=replace(policy, advantage="rloo", group_size=2))


def recording(monkeypatch, seen: dict) -> None:
    """Wrap the stages' training functions: each call records the prompts it was given."""
    def prompts(records):
        return {r["prompt"] for r in records}

    train_sft, train_rm = sft.train_sft, reward.train_reward_model

    def sft_spy(cfg, base, tokenizer, train, val, **kwargs):
        seen["sft"] = prompts(train) | prompts(val)
        return train_sft(cfg, base, tokenizer, train, val, **kwargs)

    def rm_spy(cfg, start, tokenizer, train, val, demos, **kwargs):
        stage = "gold_rm" if kwargs.get("start_role") == "base" else "rm"
        seen[stage] = prompts(train) | prompts(val) | prompts(demos)
        return train_rm(cfg, start, tokenizer, train, val, demos, **kwargs)

    class PPOSpy(ppo.PPOTrainer):
        def __init__(self, cfg, sft_model, rm, tokenizer, prompt_records, **kwargs):
            seen.setdefault("ppo", set()).update(prompts(prompt_records))
            super().__init__(cfg, sft_model, rm, tokenizer, prompt_records, **kwargs)

    monkeypatch.setattr(sft, "train_sft", sft_spy)
    monkeypatch.setattr(reward, "train_reward_model", rm_spy)
    monkeypatch.setattr(ppo, "PPOTrainer", PPOSpy)


@pytest.fixture(scope="module")
def run(hh_file, checkpoint, tmp_path_factory):
    """Every stage of the micro preset and the evaluation, once for the module's tests."""
    root = tmp_path_factory.mktemp("run")
    seen = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(paths, "ARTIFACTS_DIR", root / "artifacts")
        monkeypatch.setitem(presets.PRESETS, "hh-micro", micro_hh(hh_file, checkpoint))
        recording(monkeypatch, seen)
        # one process: the PPO stages in this one, not side by side in fresh ones the spies
        # do not reach
        results = pipeline.run("hh-micro", out=root / "out", samples=2, processes=1)
        yield {"results": results, "seen": seen, "out": root / "out",
               "preset": presets.get_preset("hh-micro")}


# ----------------------------------------------------------------------------- the preset
def test_the_preset_reads_one_source_and_starts_from_the_checkpoint_itself():
    hh = presets.get_preset("gpt2-hh")
    assert hh.base.init_from == presets.gpt2_checkpoint() and hh.base.train.max_steps == 0
    assert hh.data == PreferenceSource(PreferenceData(source=presets.hh_data()))
    assert set(artifacts.stages_of(hh)) == {"base", "sft", "rm", "gold_rm", "ppo", "dpo", "rloo"}
    assert hh.rloo.advantage == "rloo" and hh.ppo_ptx is None
    # the other presets read the toy world, train no gold RM and keep their recipe classes
    # (same recipe dicts)
    for name in ("toy", "tiny", "gpt2"):
        p = presets.get_preset(name)
        assert p.data == ToyWorld() and p.data.recipe == {}
        assert p.gold_rm is None and "gold_rm" not in artifacts.stages_of(p)
        assert {type(p.sft).__name__, type(p.rm).__name__, type(p.ppo).__name__} == {
            "SFTConfig", "RewardConfig", "PPOConfig"}
        assert "data" not in p.sft.as_dict() and "data" not in p.ppo.as_dict()


def test_data_source_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(presets.HH_DATA_ENV, "/data/hh/train.jsonl.gz")
    assert presets.hh_data() == "/data/hh/train.jsonl.gz"
    monkeypatch.delenv(presets.HH_DATA_ENV)
    assert presets.hh_data() == "Anthropic/hh-rlhf"


def test_ptx_is_refused_on_preference_data():
    with pytest.raises(ValueError, match="no pretraining text of its kind"):
        presets.get_preset("gpt2-hh").data.pretraining_text("train")


def test_split_keeps_each_prompt_on_one_side_and_is_seeded(hh_file, checkpoint):
    p = micro_hh(hh_file, checkpoint)
    tokenizer, data = p.load_tokenizer(), p.data.dataset
    parts = split_comparisons(data, tokenizer)
    by_part = {name: {r["prompt"] for r in parts[name]} for name in PARTS}
    for i, a in enumerate(PARTS):
        for b in PARTS[i + 1:]:
            assert not by_part[a] & by_part[b], (a, b)
    assert sum(len(parts[n]) for n in PARTS) == len(hh_records())  # all fit in 120 tokens
    assert len(by_part["heldout"]) == 6
    # 54 other prompts, half each side, a fifth of a half validates; a prompt asked twice
    # brings both its comparisons to its side
    assert [len(by_part[n]) for n in PARTS[:4]] == [22, 5, 22, 5]
    twice = [r for r in parts["train"] + parts["gold_train"] if "Ask me again" in r["responses"][0]]
    assert twice and all(len([q for n in PARTS for q in parts[n] if q["prompt"] == r["prompt"]])
                         == 2 for r in twice)
    assert split_comparisons(data, tokenizer) == parts
    other = split_comparisons(replace(data, seed=1), tokenizer)
    assert {r["prompt"] for r in other["gold_train"]} != by_part["gold_train"]


def test_pairs_too_long_are_counted_per_part_and_warned_of_once(hh_file, checkpoint):
    p = micro_hh(hh_file, checkpoint)
    tokenizer = p.load_tokenizer()
    whole = split_comparisons(p.data.dataset, tokenizer)  # all fit in 120 tokens
    assert too_long(p.data.dataset, tokenizer) == dict.fromkeys(PARTS, 0)
    data = replace(p.data.dataset, max_tokens=44)  # the multi-turn dialogues do not fit
    with pytest.warns(UserWarning, match=r"train.jsonl.gz: \d+ of 64 comparisons longer than 44 "
                                         r"tokens \(prompt \+ response \+ eos\) were left out: "
                                         r"train \d+ of \d+, validation ") as caught:
        parts = split_comparisons(data, tokenizer)
    left_out = too_long(data, tokenizer)
    assert left_out == {name: len(whole[name]) - len(parts[name]) for name in PARTS}
    assert sum(left_out.values()) >= 20  # a third of the records are multi-turn
    message = str(caught[0].message)
    assert all(f"{name} {left_out[name]} of {len(whole[name])}" in message for name in PARTS)
    with warnings.catch_warnings():  # once per process: the stages read the split again
        warnings.simplefilter("error")
        assert split_comparisons(data, tokenizer) == parts


def test_malformed_data_names_the_file_and_line(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path / "artifacts")
    records = hh_records()
    records[2] = {"chosen": records[2]["chosen"]}  # line 3 lost its rejected dialogue
    bad = write_jsonl(tmp_path / "bad.jsonl.gz", records)
    monkeypatch.setitem(presets.PRESETS, "hh-bad", replace(micro_hh(bad, checkpoint),
                                                           name="hh-bad"))
    with pytest.raises(DataError, match=rf"{bad}, line 3: field 'rejected'"):
        artifacts.load_model("sft", "hh-bad")
    broken = write_jsonl(tmp_path / "broken.jsonl.gz", hh_records(), lines=["{not json\n"])
    presets.PRESETS["hh-bad"] = micro_hh(broken, checkpoint)
    with pytest.raises(DataError, match=rf"{broken}, line 65: not valid JSON"):
        artifacts.load_model("sft", "hh-bad")


# ----------------------------------------------------------------------------- end to end
def test_no_gold_or_heldout_comparison_reaches_a_policy_or_the_proxy(run):
    p, seen = run["preset"], run["seen"]
    parts = split_comparisons(p.data.dataset, p.load_tokenizer())
    gold = {r["prompt"] for n in ("gold_train", "gold_validation") for r in parts[n]}
    held = {r["prompt"] for r in parts["heldout"]}
    policy = {r["prompt"] for n in ("train", "validation") for r in parts[n]}
    saved = {r["prompt"] for s in ("train", "validation")
             for r in artifacts.load_rankings(s, p)}  # what DPO trained on
    assert set(seen) == {"sft", "rm", "gold_rm", "ppo"}
    for stage, used in [*seen.items(), ("dpo", saved)]:
        assert used, stage
        assert not used & held, stage
        if stage == "gold_rm":
            assert used == gold
        else:
            assert used <= policy and not used & gold, stage
    assert seen["ppo"] == {r["prompt"] for r in parts["train"]}  # PPO: train prompts only
    # rankings deleted after the rm stage are read from the data set again, not sampled
    artifacts.rankings_path("validation", p).unlink()
    assert artifacts.load_rankings("validation", p) == parts["validation"]


def test_base_is_the_checkpoint_and_the_gold_rm_is_not_the_proxy(run, checkpoint):
    p = run["preset"]
    base = artifacts.load_model("base", p)
    start, _ = load_pretrained(checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(),
                                                 start.state_dict().values()))
    gold_ckpt = checkpoints.read(artifacts.checkpoint_path("gold_rm", p))
    rm_ckpt = checkpoints.read(artifacts.checkpoint_path("rm", p))
    assert gold_ckpt.inputs == {"base": checkpoints.fingerprint(base)}
    assert rm_ckpt.inputs == {"sft": checkpoints.fingerprint(artifacts.load_model("sft", p))}
    assert gold_ckpt.recipe["data"] == rm_ckpt.recipe["data"]  # one source, other halves
    gold, rm = artifacts.load_model("gold_rm", p), artifacts.load_model("rm", p)
    parts = split_comparisons(p.data.dataset, p.load_tokenizer())
    tokenizer = p.load_tokenizer()
    gold_scores, rm_scores = (torch.cat(reward.pair_scores(m, tokenizer, parts["heldout"]))
                              for m in (gold, rm))
    assert not torch.allclose(gold_scores, rm_scores, atol=1e-3)
    # both trained: two epochs of 4 pairs a step over the gold half's train pairs, and over
    # the first 16 of the policy half's (max_pairs), which DPO trained on too
    assert len(parts["gold_train"]) > 16 and len(parts["train"]) > 16
    assert len(gold_ckpt.history["steps"]) == 2 * -(-len(parts["gold_train"]) // 4)
    assert len(rm_ckpt.history["steps"]) == 2 * 16 // 4
    assert artifacts.load_rankings("train", p) == parts["train"][:16]
    assert doctor.check_artifacts("hh-micro").ok


def test_results_and_report_have_the_gold_rm_metrics(run):
    results, out, p = run["results"], run["out"], run["preset"]
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    policies = {"SFT", "PPO", "DPO", "RLOO"}  # no PPO-ptx (no recipe), no prompted base
    for key in ("mean_gold_rm", "win_rate_vs_sft", "win_rate_ci", "rm_score", "kl_to_sft",
                "mean_length", "terminated", "params"):
        assert set(saved[key]) == policies, key
    assert saved["n_prompts"] == 6 and saved["n_comparisons"] == 12
    for name in policies:
        low, high = saved["win_rate_ci"][name]
        assert 0 <= low <= saved["win_rate_vs_sft"][name] <= high <= 1, name
        # words: at most one per sampled token (12 at most)
        assert 0 < saved["mean_length"][name] <= 12 and 0 <= saved["terminated"][name] <= 1
        assert abs(saved["mean_gold_rm"][name]) < 100
    assert saved["kl_to_sft"]["SFT"] == pytest.approx(0.0, abs=1e-6)
    assert saved["kl_to_sft"]["PPO"] != 0.0  # it moved (lr 1e-3 here)
    tokenizer = p.load_tokenizer()
    parts = split_comparisons(p.data.dataset, tokenizer)
    for key, stage, part in (("rm_accuracy", "rm", "validation"),
                             ("gold_rm_accuracy", "gold_rm", "gold_validation")):
        assert saved[key] == pytest.approx(accuracy_by_hand(
            artifacts.load_model(stage, p), tokenizer, parts[part]), abs=1e-6), key  # float32
    # the preferred replies help and the others refuse: both RMs learn that from their pairs
    assert saved["heldout_accuracy"]["RM"] >= 0.8 and saved["heldout_accuracy"]["gold RM"] >= 0.8
    assert saved["split_sizes"]["heldout"] > 0 and "gold_rm" in " ".join(saved["stage_seconds"])
    assert saved["rm_train_pairs"] == {"RM": 16, "gold RM": saved["split_sizes"]["gold_train"]}
    assert saved["too_long"] == dict.fromkeys(PARTS, 0)
    report = (out / "report.md").read_text()
    assert ("0 of 64 comparisons longer than 120 tokens (prompt + response + eos) were left "
            "out: train 0 of ") in report
    assert "| PPO |" in report and "win rate vs SFT by gold RM" in report
    assert "which neither saw" in report and "Stage times" in report
    assert "(trained on 16)" in report


def test_another_file_at_the_same_path_makes_the_data_stages_stale(run, hh_file):
    p, original = run["preset"], Path(hh_file).read_bytes()

    def statuses() -> dict:
        data = replace(p.data.dataset)  # read the file again: its digest is of the bytes now
        assert data.digest and data.source == hh_file
        now = replace(p, data=PreferenceSource(data))
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(paths, "ARTIFACTS_DIR", run["out"].parent / "artifacts")
            monkeypatch.setitem(presets.PRESETS, "hh-micro", now)
            return {stage: artifacts.status(stage, "hh-micro") for stage in ("base", "sft",
                                                                              "gold_rm")}
    try:
        write_jsonl(hh_file, hh_records()[:-1])  # a newer download copied over the old one
        assert statuses() == {"base": "done", "sft": "stale", "gold_rm": "stale"}
    finally:
        Path(hh_file).write_bytes(original)
    # the same bytes again (a copy, a new modification time): the checkpoints are current
    assert statuses() == {"base": "done", "sft": "done", "gold_rm": "done"}
    assert file_digest("no/such/file.jsonl") == "" == PreferenceData().digest  # a hub name


def test_another_source_makes_the_data_stages_stale_but_not_the_base(run, hh_file):
    p = run["preset"]
    other = replace(p, data=PreferenceSource(replace(p.data.dataset, source=hh_file + ".copy")))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(paths, "ARTIFACTS_DIR", run["out"].parent / "artifacts")
        monkeypatch.setitem(presets.PRESETS, "hh-micro", other)
        assert artifacts.status("base", "hh-micro") == "done"
        assert artifacts.status("sft", "hh-micro") == "stale"
        assert artifacts.status("gold_rm", "hh-micro") == "stale"
        assert artifacts.status("rm", "hh-micro") == "stale"  # its SFT is stale
    assert stages.get_stage("gold_rm").label is None  # a judge, never evaluated as a policy
