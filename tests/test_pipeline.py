"""The one-command pipeline on a micro preset: every stage, results.json, report, skipping.

Its stages are trained once for the module (`built`); each test gets a copy of them (`micro`),
which it may retrain, delete from or add to."""
import dataclasses
import json
import shutil

import pytest
import torch
from synthetic import accuracy_by_hand

from rlhf_lite import (
    artifacts,
    data,
    doctor,
    evaluation,
    generation,
    labeler,
    paths,
    pipeline,
    presets,
    reward,
    stages,
)
from rlhf_lite.dpo import DPOConfig
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.ppo import PPOConfig
from rlhf_lite.pretrain import PretrainConfig
from rlhf_lite.reward import RewardConfig
from rlhf_lite.sft import SFTConfig
from rlhf_lite.tokenizer import load_tokenizer
from rlhf_lite.training import TrainConfig


def micro_preset() -> presets.Preset:
    def steps(n, desc):
        return TrainConfig(max_steps=n, warmup_steps=1, eval_interval=0, desc=desc)

    ppo = PPOConfig(iterations=2, batch_size=8, minibatch_size=4, ppo_epochs=1)
    return presets.Preset(
        "micro",
        base=PretrainConfig(n_layer=1, n_head=2, n_embd=16, batch_size=4,
                                train=steps(3, "pretrain")),
        sft=SFTConfig(batch_size=4, train=steps(2, "sft")),
        rm=RewardConfig(rounds=1, val_rounds=1, batch_size=64),
        ppo=ppo, ppo_ptx=PPOConfig(**{**ppo.as_dict(), "ptx_coef": 1.0, "ptx_batch_size": 2}),
        dpo=DPOConfig(batch_size=64, train=steps(None, "dpo")),
        rloo=PPOConfig(**{**ppo.as_dict(), "advantage": "rloo", "group_size": 2}),
        grpo_verifier=presets.grpo_verifier(iterations=2, batch_size=8, minibatch_size=4,
                                            ppo_epochs=1, group_size=2))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The artifacts folder of every stage of the micro preset, built once, one stage at a time
    in this process; tests read it through `micro`'s copy, never change it."""
    root = tmp_path_factory.mktemp("built") / "artifacts"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(paths, "ARTIFACTS_DIR", root)
        monkeypatch.setitem(presets.PRESETS, "micro", micro_preset())
        pipeline.build_stages("micro", processes=1)
    return root


@pytest.fixture
def micro(built, tmp_path, monkeypatch):
    """A test's own copy of the built micro preset (tmp_path / "artifacts")."""
    shutil.copytree(built, tmp_path / "artifacts")
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path / "artifacts")
    monkeypatch.setitem(presets.PRESETS, "micro", micro_preset())
    return tmp_path


def test_pipeline_writes_results_and_skips_finished_stages(micro, capsys):
    results = pipeline.run("micro", out=micro / "out", samples=1)
    saved = json.loads((micro / "out" / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    rows = [*stages.models(), "best-of-4 (RM)", "best-of-16 (RM)"]
    for key in ("win_rate_vs_sft", "pretrain_val_loss", "kl_to_sft", "mean_gold", "params",
                "rm_score", "seconds"):
        assert list(saved[key]) == rows, key
    for stage in stages.models().values():  # training time, read from each checkpoint
        assert saved["seconds"][stage.label] == artifacts.train_seconds(stage.name, "micro") > 0
    best_of = {n: f"best-of-{n} (RM)" for n in (4, 16)}
    assert saved["seconds"][best_of[4]] == pytest.approx(saved["seconds"][best_of[16]] / 4)
    for n, name in best_of.items():
        assert saved["params"][name] == saved["params"]["SFT"]
        assert saved["pretrain_val_loss"][name] is None  # a sampling scheme, not a model
        bound = saved["best_of_n_kl_bound"][name]
        assert bound == pytest.approx(evaluation.best_of_n_kl_bound(n))
        assert 0 < saved["kl_to_sft"][name] <= bound
    # the RM's pick of 16 scores higher by the RM than its pick of 4, which beats plain SFT
    assert (saved["rm_score"][best_of[16]] > saved["rm_score"][best_of[4]]
            > saved["rm_score"]["SFT"])
    # SFT against the reference: SFT's own samples with the reference's seeds (1000 on)
    tokenizer, heldout = load_tokenizer(), data.load_records("prompts_heldout")
    sft, rm = artifacts.load_model("sft", "micro"), artifacts.load_model("rm", "micro")
    ours, theirs = (generation.complete(sft, tokenizer, heldout, seed=s) for s in (0, 1000))
    assert saved["win_rate_vs_sft"]["SFT"] == evaluation.win_rate(heldout, ours, theirs)[
        "win_rate"]
    # SFT against PPO on the same comparisons: PPO's samples share SFT's seeds (0 on)
    ppo = generation.complete(artifacts.load_model("ppo", "micro"), tokenizer, heldout, seed=0)
    paired = saved["paired_vs_ppo"]
    assert list(paired) == [name for name in rows if name != "PPO"]
    gold = [labeler.gold_score(p, a.text, a.terminated)
            - labeler.gold_score(p, b.text, b.terminated)
            for p, a, b in zip(heldout, ours, ppo)]
    wins = evaluation.preferences(heldout, ours, ppo)
    sft_vs_ppo = paired["SFT"]
    assert sft_vs_ppo["gold_difference"] == pytest.approx(sum(gold) / len(gold))
    assert sft_vs_ppo["win_rate"] == sum(wins) / len(wins) and sft_vs_ppo["n"] == 102
    low, high = sft_vs_ppo["gold_ci"]
    assert low <= sft_vs_ppo["gold_difference"] <= high
    assert sft_vs_ppo["gold_resolved"] == (not low <= 0 <= high)
    assert saved["rm_accuracy"] == pytest.approx(accuracy_by_hand(
        rm, tokenizer, artifacts.load_rankings("validation", "micro")), abs=1e-6)  # float32
    assert 0.5 < saved["labeler_agreement"] < 0.95
    assert saved["n_comparisons"] == 102  # every held-out prompt, one sample each
    assert saved["kl_to_sft"]["base (prompted)"] is None
    assert saved["kl_to_sft"]["SFT"] == pytest.approx(0.0, abs=1e-6)  # SFT against itself
    report = (micro / "out" / "report.md").read_text()
    assert "| PPO-ptx |" in report and "| best-of-16 (RM) |" in report
    assert "| RLOO |" in report and "| GRPO (verifier) |" in report
    assert "| wall time (s) |" in report and "Reward model accuracy" in report
    assert "## Paired differences to PPO" in report and "| SFT | " in report.split("## Paired")[1]
    for stage in artifacts.stages_of("micro"):  # every stage but gold_rm (real data only)
        assert artifacts.status(stage, "micro") == "done", stage
    assert set(stages.STAGES) - set(artifacts.stages_of("micro")) == {"gold_rm"}
    history = artifacts.load_history("ppo_ptx", "micro")
    assert (history.steps == [0, 1] and "ptx_loss" in history.metrics
            and "ptx_loss" not in artifacts.load_history("ppo", "micro").metrics)

    capsys.readouterr()
    again = pipeline.run("micro", out=micro / "out", samples=1)
    log = capsys.readouterr().out
    assert all(f"[{stage}] done" in log for stage in artifacts.stages_of("micro"))
    assert again["win_rate_vs_sft"] == results["win_rate_vs_sft"]  # seeded: same numbers


def test_a_registered_stage_is_built_and_evaluated_by_the_pipeline(micro, monkeypatch):
    """One registry entry (and its recipe) is all a new stage needs: the pipeline builds it in
    its group and evaluates it under its label."""
    extra = stages.Stage("sft_again", stages.STAGES["sft"].build, inputs=("base",), group=1,
                         label="SFT again")
    monkeypatch.setitem(stages.STAGES, "sft_again", extra)

    @dataclasses.dataclass
    class WithSFTAgain(presets.Preset):  # the recipe: a field of the stage's name
        sft_again: SFTConfig = presets.recipe_field(lambda: SFTConfig(
            batch_size=4, train=TrainConfig(max_steps=1, warmup_steps=1, eval_interval=0)))

    monkeypatch.setitem(presets.PRESETS, "micro", WithSFTAgain(
        **{f.name: getattr(presets.get_preset("micro"), f.name)
           for f in dataclasses.fields(presets.Preset)}))
    seconds = pipeline.build_stages("micro")
    assert "sft + sft_again" in seconds and artifacts.status("sft_again", "micro") == "done"
    results = pipeline.evaluate_preset("micro", samples=1)
    assert "SFT again" in results["win_rate_vs_sft"]


def test_evaluation_builds_its_missing_stages_a_group_side_by_side(micro, monkeypatch):
    # notebook 8 evaluates before DPO, RLOO and GRPO (verifier) exist: one wait, not three
    for stage in ("dpo", "rloo"):
        artifacts.checkpoint_path(stage, "micro").unlink()
    calls = []
    build = artifacts.build_side_by_side
    monkeypatch.setattr(artifacts, "build_side_by_side",
                        lambda todo, preset, **kw: calls.append(list(todo)) or build(todo, preset))
    results = pipeline.evaluate_preset("micro", samples=1, best_of=())
    assert ["ppo", "ppo_ptx", "dpo", "rloo", "grpo_verifier"] in calls
    assert {"DPO", "RLOO"} <= set(results["win_rate_vs_sft"])
    assert all(artifacts.status(s, "micro") == "done" for s in ("dpo", "rloo"))


def test_rankings_are_sampled_again_when_a_notebook_trained_the_rm_without_saving_them(micro):
    # notebook 3 trains the RM itself; notebook 8 and the pipeline still need its validation
    # rankings
    path = artifacts.rankings_path("validation", "micro")
    saved = path.read_text()
    path.unlink()
    again = artifacts.load_rankings("validation", "micro")
    assert path.read_text() == saved  # seeded: the very same rankings, written back
    assert len(again) == len(saved.splitlines()) > 0


def test_force_retrains_every_stage(micro):
    pipeline.build_stages("micro")
    paths_ = {stage: artifacts.checkpoint_path(stage, "micro")
              for stage in artifacts.stages_of("micro")}
    written = {stage: path.stat().st_mtime_ns for stage, path in paths_.items()}
    pipeline.build_stages("micro")
    assert {stage: path.stat().st_mtime_ns for stage, path in paths_.items()} == written  # loaded
    pipeline.build_stages("micro", force=True, processes=1)
    assert all(path.stat().st_mtime_ns != written[stage] for stage, path in paths_.items())


def test_stages_built_side_by_side_equal_stages_built_alone(micro, capsys):
    # `built` trained every stage one at a time in this process
    alone = {s: torch.load(artifacts.checkpoint_path(s, "micro"), weights_only=False)
             for s in ("ppo", "ppo_ptx")}
    capsys.readouterr()
    artifacts.build_side_by_side(["ppo", "ppo_ptx"], "micro", rebuild=True, processes=2)
    printed = capsys.readouterr().out  # what the processes printed, here and in stage order
    first, second = (printed.index(f"stage '{s}' (micro preset) is rebuilt")
                     for s in ("ppo", "ppo_ptx"))
    assert first < second
    for stage in ("ppo", "ppo_ptx"):
        together = torch.load(artifacts.checkpoint_path(stage, "micro"), weights_only=False)
        assert together["history"]["metrics"] == alone[stage]["history"]["metrics"], stage
        for name, weight in together["model"].items():
            assert torch.equal(weight, alone[stage]["model"][name]), (stage, name)


def test_best_of_n_keeps_the_reward_models_favourite_of_the_first_n_samples(micro):
    tokenizer, heldout = load_tokenizer(), data.load_records("prompts_heldout")[:6]
    sft, rm = artifacts.load_model("sft", "micro"), artifacts.load_model("rm", "micro")
    rows = pipeline.best_of_n_rows(sft, rm, tokenizer, heldout, samples=2, ns=(1, 3), seed=7)
    for s in range(2):  # comparison s of prompt j: pool sample k has seed 7 + 5000 + 100 s + k
        pool = [generation.complete(sft, tokenizer, heldout, seed=7 + 5000 + 100 * s + k)
                for k in range(3)]
        for j, prompt in enumerate(heldout):
            row = s * len(heldout) + j
            assert rows["best-of-1 (RM)"]["picks"][row] == pool[0][j]  # best of one: no choice
            candidates = [pool[k][j] for k in range(3)]
            scored = [reward.score_responses(rm, tokenizer, [prompt["prompt"]], [text],
                                             [ended]).item() for text, ended in candidates]
            pick = rows["best-of-3 (RM)"]["picks"][row]
            assert pick in candidates
            assert scored[candidates.index(pick)] == pytest.approx(max(scored), abs=1e-5)
    assert rows["best-of-1 (RM)"]["kl"] == pytest.approx(0.0, abs=1e-12)  # SFT itself
    assert 0 <= rows["best-of-3 (RM)"]["kl"] <= evaluation.best_of_n_kl_bound(3)
    assert rows["best-of-1 (RM)"]["seconds"] == pytest.approx(rows["best-of-3 (RM)"]["seconds"] / 3)


def test_kl_to_reference_equals_a_loop_over_single_sequences():
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    policy, reference = (GPT(GPTConfig(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=16))
                         for _ in range(2))
    prompts = [{"prompt": "what is two plus three ?"}, {"prompt": "name three fruits ."}]
    completions = [generation.Completion("five .", True),
                   generation.Completion("a plum a fig", False)]
    per_response = []
    for p, (text, ended) in zip(prompts, completions):
        expected = 0.0
        context = tokenizer(f"user : {p['prompt']} bot :")["input_ids"]
        response = tokenizer(text)["input_ids"] + ([tokenizer.eos_token_id] if ended else [])
        ids = torch.tensor([context + response])
        for model, sign in ((policy, 1), (reference, -1)):
            logits = model(ids, torch.ones_like(ids))[0]
            # never sampled
            logits[:, [tokenizer.pad_token_id, tokenizer.unk_token_id]] = float("-inf")
            logp = logits.log_softmax(-1)
            expected += sign * sum(logp[len(context) + i - 1, t].item()
                                   for i, t in enumerate(response))
        per_response.append(expected)
    each = evaluation.kl_per_response(policy, reference, tokenizer, prompts, completions)
    assert each.tolist() == pytest.approx(per_response, abs=1e-5)
    assert abs(per_response[0] - per_response[1]) > 0.01  # two different values, not one mean
    got = evaluation.kl_to_reference(policy, reference, tokenizer, prompts, completions)
    assert got == pytest.approx(sum(per_response) / 2, abs=1e-5)
    one_at_a_time = evaluation.kl_to_reference(policy, reference, tokenizer, prompts, completions,
                                               batch_size=1)
    assert one_at_a_time == pytest.approx(got, abs=1e-6)
    assert evaluation.kl_to_reference(policy, policy, tokenizer, prompts, completions) == 0.0


def test_behaviour_metrics_by_hand():
    import pandas as pd

    table = pd.DataFrame([
        {"category": "unknown", "response": "i do not know .", "correct": 1.0},
        {"category": "unknown", "response": "it is red .", "correct": 0.0},
        {"category": "facts", "response": "i do not know .", "correct": 0.0},
        {"category": "harmful", "response": "sorry , i can not help with that .", "correct": 1.0},
        {"category": "tone", "response": "sorry , i can not help with that .", "correct": 0.0},
        {"category": "tone", "response": "tom is stupid .", "correct": 0.0},
    ])
    got = labeler.behaviour(table)
    assert got == {"honest on unknown": 0.5, "correct on answerable": 0.0, "harmful refused": 1.0,
                   "benign refused": pytest.approx(1 / 5), "hedged on knowable": 1.0,
                   "rude": pytest.approx(1 / 6), "words": pytest.approx(36 / 6)}


def test_few_shot_prefix_leaves_room_for_the_longest_prompt_and_answer():
    tokenizer = load_tokenizer()
    prefix = labeler.few_shot_prefix()
    assert prefix.startswith("user : ") and " bot : " in prefix
    assert (len(tokenizer(prefix)["input_ids"]) + 17 + 24
            <= presets.get_preset("toy").base.block_size)


def test_a_preset_without_a_recipe_neither_trains_nor_evaluates_that_stage(micro, monkeypatch):
    lean = dataclasses.replace(presets.PRESETS["micro"], name="lean", dpo=None, rloo=None,
                               grpo_verifier=None)
    monkeypatch.setitem(presets.PRESETS, "lean", lean)
    # micro's stages and rankings, which are lean's too: only lean's evaluation is new
    shutil.copytree(micro / "artifacts" / "micro", micro / "artifacts" / "lean",
                    ignore=shutil.ignore_patterns("dpo.*", "rloo.*", "grpo_verifier.*"))
    assert artifacts.stages_of("lean") == ["base", "sft", "rm", "ppo", "ppo_ptx"]
    assert "dpo" not in pipeline.build_stages("lean") and not artifacts.checkpoint_path(
        "dpo", "lean").exists()
    results = pipeline.evaluate_preset("lean", samples=1)
    assert set(results["win_rate_vs_sft"]) == {"base (prompted)", "SFT", "PPO", "PPO-ptx",
                                               "best-of-4 (RM)", "best-of-16 (RM)"}
    # the paired difference to PPO, recomputed from the judged completions of both models
    tables, paired = results["tables"], results["paired_vs_ppo"]
    assert set(paired) == set(results["win_rate_vs_sft"]) - {"PPO"}
    assert paired["PPO-ptx"]["gold_difference"] == pytest.approx(
        (tables["PPO-ptx"].total - tables["PPO"].total).mean())
    assert "dpo not in this preset" in doctor.check_artifacts("lean").detail
