"""Smoke tests of the benchmarks (bench/): each runs in its quick mode on the smallest model
and prints its table with the expected rows and positive figures. Nothing is timed here."""
import dataclasses

import nbformat
import pytest
import torch

# bench/ is not installed with the package: pyproject.toml puts the repository root on the path
from bench import (
    course_runtime,
    gpu,
    paired_power,
    ppo_epochs,
    ppo_iteration,
    rm_levers,
    roofline,
    sampling,
    seeds,
    train_step,
)

QUICK = ["--quick", "--repeats", "1", "--threads", "1"]


def table(out: str, title: str) -> list[dict[str, str]]:
    """The rows, as {column: cell}, of the markdown table printed under the line `title`."""
    lines = out[out.index(title):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip("|").split("|")])
    header, rows = block[0], block[2:]  # block[1] is the |---| line
    return [dict(zip(header, row)) for row in rows]


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%"))


def test_sampling_compares_both_generators(capsys):
    sampling.main(QUICK + ["--sizes", "tiny"])
    [row] = table(capsys.readouterr().out, "Sampling")
    assert row["size"] == "tiny"
    for column in ("ours KV cache", "transformers", "ours / transformers", "ours uncached (1 run)"):
        assert number(row[column]) > 0


def test_train_step_compares_both_models(capsys):
    train_step.main(QUICK + ["--sizes", "tiny"])
    [row] = table(capsys.readouterr().out, "Training step")
    for column in ("ours", "transformers", "ours / transformers", "ours tokens/s"):
        assert number(row[column]) > 0


def test_ppo_iteration_breaks_down_every_phase(capsys):
    ppo_iteration.main(QUICK + ["--recipes", "ppo_ptx"])
    rows = {row["phase"]: row for row in table(capsys.readouterr().out, "PPO iteration")}
    assert list(rows)[:len(ppo_iteration.PHASES)] == ppo_iteration.PHASES
    for phase in ("generation", "reference forward", "ptx forward", "AdamW steps",
                  "iteration (median)", "sampled tokens/s", "response tokens/s"):
        assert number(rows[phase]["ppo_ptx s/iter"]) > 0, phase
    shares = [number(rows[p]["share"]) for p in ppo_iteration.PHASES]
    assert sum(shares) == pytest.approx(100, abs=1)


def test_roofline_measures_peak_and_step(capsys):
    roofline.main(QUICK + ["--sizes", "tiny", "--matmul-size", "256"])
    rows = table(capsys.readouterr().out, "Roofline")
    assert [row["workload"] for row in rows] == ["matmul 256^3", "train step tiny"]
    for row in rows:
        assert number(row["GFLOP/s"]) > 0 and number(row["% of matmul peak"]) > 0


def test_course_runtime_parses_a_durations_log(tmp_path, capsys):
    log = tmp_path / "whole.log"
    log.write_text("""============================= slowest durations ==============================
12.50s call     notebooks/01_pretraining.ipynb::Cell 7
0.80s setup    notebooks/01_pretraining.ipynb::Cell 0
0.30s call     tests/test_model.py::test_kv_cache_matches_full_forward[True-False]
0.20s call     tests/test_model.py::test_block_size_overflow_raises
\x1b[32m=========== \x1b[32m4 passed\x1b[0m, 1 skipped in 14.02s (0:00:14) ============\x1b[0m
""")  # the summary as pytest colours it in a terminal
    course_runtime.main(["--parse", str(log)])
    out = capsys.readouterr().out
    files = {row["file"]: row for row in table(out, "Test time per file")}
    assert files["notebooks/01_pretraining.ipynb"]["seconds"] == "13.3"
    assert files["notebooks/01_pretraining.ipynb"]["slowest item"] == "Cell 7"
    assert files["tests/test_model.py"]["items"] == "2"
    [run] = table(out, "Test time per run")
    assert run["pytest summary"] == "4 passed, 1 skipped" and run["pytest seconds"] == "14.0"


def test_course_runtime_runs_each_notebook_and_the_whole_command(tmp_path, capsys):
    """A one-notebook course in a temporary folder, run for real under nbval."""
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1 + 1"), nbformat.v4.new_code_cell("assert x == 2")]
    nbformat.write(nb, tmp_path / "notebooks" / "01_tiny.ipynb")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = --nbval-lax --nbval-current-env -p no:cacheprovider\n")
    course_runtime.main(["--root", str(tmp_path), "--log-dir", str(tmp_path / "logs")])
    out = capsys.readouterr().out
    files = table(out, "Test time per file")
    assert [(row["run"], row["file"], row["items"]) for row in files] == [
        ("01_tiny", "notebooks/01_tiny.ipynb", "2"), ("whole", "notebooks/01_tiny.ipynb", "2")]
    runs = table(out, "Test time per run")
    assert [row["pytest summary"] for row in runs] == ["2 passed", "2 passed"]
    assert all(number(row["wall seconds"]) > 0 for row in runs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_gpu_bench_exits_with_a_message_without_cuda():
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        gpu.main([])


def test_gpt2_stages_cuts_the_data_consistently_and_the_recipes_to_a_few_steps(tmp_path):
    from bench import gpt2_stages
    from rlhf_lite import artifacts, data
    from rlhf_lite.realdata.preference_data import load_hh_rlhf

    folder = gpt2_stages.cut_data(tmp_path / "data", prompts=5)
    for split in ("train", "validation", "heldout"):
        assert len(data.load_records(f"prompts_{split}", folder)) == 5
    demos = data.load_records("demonstrations", folder)  # checked against the kept prompts
    assert demos and len(demos) < len(data.load_records("demonstrations"))
    preset = gpt2_stages.standin_preset("/models/stand-in")
    assert (preset.device, preset.precision, preset.base.init_from) == ("cpu", "fp32",
                                                                        "/models/stand-in")
    assert preset.base.train.max_steps == 3 and preset.ppo.iterations == preset.rloo.iterations == 1
    assert artifacts.stages_of(preset) == artifacts.stages_of("gpt2")  # every stage of the preset
    hh_file = gpt2_stages.write_hh_file(tmp_path / "hh.jsonl.gz")
    rankings = load_hh_rlhf(hh_file)  # HH-RLHF's format: one pair per demonstration
    assert len(rankings) == len(data.load_records("demonstrations"))
    hh = gpt2_stages.hh_standin_preset("/models/stand-in", hh_file)
    assert artifacts.stages_of(hh) == artifacts.stages_of("gpt2-hh")
    assert hh.data.dataset.source == hh_file


def test_paired_power_measures_both_half_widths_and_never_trains(tmp_path, monkeypatch):
    from bench.common import SIZES, twins
    from rlhf_lite import data, paths
    from rlhf_lite.tokenizer import load_tokenizer

    heldout = data.load_records("prompts_heldout")[:20]
    ppo, sft = twins(SIZES["tiny"], seed=1)[0], twins(SIZES["tiny"], seed=2)[0]  # untrained
    row = paired_power.measure(ppo, sft, load_tokenizer(), heldout, samples=2)
    assert row["comparisons"] == 40 and 0 <= row["win rate vs SFT"] <= 1
    assert row["unpaired win-rate half-width"] > 0 and row["paired gold half-width"] >= 0
    assert row["sampling s"] > 0 and row["judging s"] > 0
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path)  # nothing trained there
    with pytest.raises(SystemExit, match="never trains"):
        paired_power.main(["--samples", "1"])
    assert not any(tmp_path.iterdir())


def test_rm_levers_measures_every_lever_against_the_ceiling():
    from bench.common import SIZES, twins
    from rlhf_lite import data
    from rlhf_lite.presets import get_preset
    from rlhf_lite.tokenizer import load_tokenizer

    sft = twins(SIZES["tiny"], seed=1)[0]  # untrained: the table's shape, not its numbers
    cfg = get_preset("toy").rm
    levers = ["2 epochs", "K = 8, 8 rounds (the same samples)"]
    table = rm_levers.measure(sft, load_tokenizer(), dataclasses.replace(cfg, max_new_tokens=4),
                              data.load_records("prompts_train")[:6],
                              data.load_records("prompts_validation")[:4], 64, levers, seeds=2)
    assert list(table.index) == ["oracle (ceiling)", "two labelers", *levers]
    assert table.loc[levers, "all"].between(0, 1).all()
    assert (table.loc[levers, "train s"] >= 0).all()
    gap = 100 * (table.loc["oracle (ceiling)", "all"] - table.loc[levers[0], "all"])
    assert table.loc[levers[0], "below ceiling (points)"] == pytest.approx(gap)
    with pytest.raises(SystemExit, match="needs 128 completions per prompt, pool 8"):
        rm_levers.measure(sft, load_tokenizer(), cfg, data.load_records("prompts_train")[:2],
                          data.load_records("prompts_validation")[:2], 8,
                          ["32 rounds (twice the samples)"])


def test_rm_levers_table_keeps_the_levers_of_earlier_runs(tmp_path):
    import pandas as pd

    path = tmp_path / "results" / "rm_levers.csv"
    first, second, third = list(rm_levers.LEVERS)[:3]

    def rows(names, value):
        index = ["oracle (ceiling)", "two labelers", *names]
        return pd.DataFrame({"all": [value] * len(index)}, index=index)

    rm_levers.save_table(rows([third, first], 0.6), path)
    rm_levers.save_table(rows([second, third], 0.7), path)  # re-measures the third
    table = pd.read_csv(path, index_col=0)
    assert list(table.index) == ["oracle (ceiling)", "two labelers", first, second, third]
    assert table["all"].tolist() == [0.7, 0.7, 0.6, 0.7, 0.7]


def test_ppo_epochs_compares_each_recipe_with_the_4_epoch_recipe_of_its_seed():
    from bench.common import SIZES, twins
    from rlhf_lite import data
    from rlhf_lite.model import GPT
    from rlhf_lite.presets import get_preset
    from rlhf_lite.reward import RewardModel
    from rlhf_lite.tokenizer import load_tokenizer

    policy = twins(SIZES["tiny"], seed=1)[0]  # untrained: the table's shape, not its numbers
    reward_model = RewardModel(GPT(policy.config))
    cfg = dataclasses.replace(get_preset("toy").ppo, iterations=1, batch_size=4,
                              minibatch_size=2, max_new_tokens=3)
    table = ppo_epochs.measure(policy, reward_model, load_tokenizer(), cfg,
                               data.load_records("prompts_train")[:8],
                               data.load_records("prompts_heldout")[:3], seeds=(0, 1),
                               samples=1, saved_as=None)
    assert len(table) == 8 and set(table.seed) == {0, 1}
    assert set(table.recipe) == set(ppo_epochs.recipes(cfg))
    baseline = table[table.recipe == ppo_epochs.BASELINE]
    assert (baseline[["gold - 4 epochs'", "95% CI low", "95% CI high"]] == 0).all().all()
    assert (table["KL to SFT"] >= -1e-6).all() and (table["train s"] > 0).all()
    four, shortest = (ppo_epochs.recipes(cfg)[k] for k in (ppo_epochs.BASELINE, "1 epoch, lr x4"))
    assert (four.ppo_epochs, four.lr, four.value_lr) == (4, cfg.lr / 4, cfg.value_lr / 4)
    assert shortest == cfg  # the toy preset's recipe: one epoch at 4x the 4-epoch rates
    # GRPO's stage raised its rates 2x: its 4-epoch recipe at half the stage's, "lr x2" the stage
    grpo = get_preset("toy").grpo_verifier
    by_name = ppo_epochs.recipes(grpo, ppo_epochs.LR_FACTOR["grpo_verifier"])
    assert by_name["1 epoch, lr x2"] == grpo and by_name[ppo_epochs.BASELINE].lr == grpo.lr / 2


def test_seeds_measures_every_run_per_prompt_and_compares_two_over_seeds_and_prompts():
    import pandas as pd

    from bench.common import SIZES, twins
    from rlhf_lite import data, evaluation, ppo, stages
    from rlhf_lite.presets import get_preset
    from rlhf_lite.reward import RewardModel
    from rlhf_lite.tokenizer import load_tokenizer
    from rlhf_lite.verifier import verifies

    # untrained tiny policies, one per (method, seed): the table's shape, not its numbers
    sft = twins(SIZES["tiny"], seed=0)[0]
    models = {(m, s): twins(SIZES["tiny"], seed=10 * i + s)[0]
              for i, m in enumerate(("PPO", "DPO")) for s in range(3)}
    heldout = data.load_records("prompts_heldout")[:4]
    rm = RewardModel(twins(SIZES["tiny"], seed=1)[0])
    table = seeds.measure(models, sft, rm, load_tokenizer(), heldout, samples=2)
    assert len(table) == 6 * 4 and list(table.run) == ["DPO"] * 12 + ["PPO"] * 12
    assert list(table.prompt[:4]) == [q["id"] for q in heldout]  # one row per prompt, in order
    assert table["gold"].between(0, 10).all() and table["KL to SFT"].notna().all()
    assert (table["RM score"] == 0).all()  # the untrained head scores 0
    # one pretraining loss per run, on each of its rows, near ln(vocabulary) for a random model
    assert table.groupby(["run", "seed"])["pretraining loss"].nunique().eq(1).all()
    assert table["pretraining loss"].between(3, 8).all()
    sft_loss = table["pretraining loss"] - table["pretraining loss - SFT"]
    assert sft_loss.round(6).nunique() == 1 and 3 < sft_loss.iloc[0] < 8  # SFT's, on every row
    # gold minus SFT's, answer by answer: SFT's gold is the same under every run and seed
    sft_gold = (table["gold"] - table["gold - SFT"]).round(6)
    assert sft_gold.groupby(table.prompt).nunique().eq(1).all()
    # one run minus another over seeds and prompts: their gold, paired within each seed
    same = table.set_index(["run", "seed", "prompt"])["gold"]
    gap = (same.loc["DPO"] - same.loc["PPO"]).unstack("prompt")
    assert gap.shape == (3, 4)
    assert evaluation.over_seeds(table, "DPO", "PPO") == \
        evaluation.seeds_and_prompts_difference(gap.to_numpy())
    assert evaluation.over_seeds(table, "DPO", "PPO", level=0.99) == \
        evaluation.seeds_and_prompts_difference(gap.to_numpy(), level=0.99)
    d = evaluation.over_seeds(table, "PPO", "PPO", "KL to SFT")
    assert (d.mean, d.low, d.high) == (0, 0, 0)
    sft_by_prompt = pd.Series(sft_gold.values, index=table.prompt).groupby(level=0).first()
    by_hand = (same.loc["DPO"] - sft_by_prompt.reindex(same.loc["DPO"].index, level="prompt"))
    d = evaluation.over_seeds(table, "DPO", column="gold - SFT")
    expected = evaluation.seeds_and_prompts_difference(by_hand.unstack("prompt").to_numpy())
    assert d.mean == pytest.approx(expected.mean) and d.low == pytest.approx(expected.low)

    # each stage's recipe with another training seed, trained as the stage's build trains it
    toy = get_preset("toy")
    assert seeds.with_seed(toy.ppo, 3).seed == 3 and seeds.with_seed(toy.dpo, 3).train.seed == 3
    assert seeds.with_seed(toy.dpo, 3).beta == toy.dpo.beta
    fn, args, kwargs = seeds.run_of("grpo_verifier", toy.grpo_verifier, toy, sft, rm,
                                    load_tokenizer())
    assert fn is ppo.train_run and kwargs["pretrain_stream"] is None
    assert args[-1] and all(verifies(q) for q in args[-1])  # only the checkable prompts
    fn, args, kwargs = seeds.run_of("ppo_ptx", toy.ppo_ptx, toy, sft, rm, load_tokenizer())
    assert kwargs["pretrain_stream"] is not None and args[-1] == data.load_records("prompts_train")
    # every method notebook 8 ranks against PPO (the registry's policies but the two baselines)
    labels = {stages.get_stage(s).label for s in seeds.STAGES}
    assert labels == set(stages.models()) - {"base (prompted)", "SFT"}
