"""The course's main job: every stage of InstructGPT on the toy world, then the evaluation.

    python -m rlhf_lite.pipeline [--preset toy] [--out DIR] [--force] [--samples 3]
    torchrun --standalone --nproc_per_node=N -m rlhf_lite.pipeline --preset gpt2   # N GPUs

Stages run in order (pretraining, SFT, comparisons + reward model, then PPO and PPO-ptx,
side by side on a CPU with a core for each: they are independent); a stage whose checkpoint
exists and matches the preset's recipe is loaded instead of retrained (`--force` retrains
them all). The evaluation then samples every model on the held-out
prompts and lets the gold labeler judge: win rates against SFT (paper sec 4.1, Figure 1),
behaviour metrics (sec 4.2-4.3), pretraining loss (the alignment tax, sec 4.2) and KL to
SFT. It writes `results.json` and `report.md` into the output folder (default
artifacts/<preset>/pipeline/). Notebook 8 calls the same `evaluate_preset`. The stages and
the models evaluated come from the registry, `rlhf_lite.stages`. Both files also give each
model's paired difference to PPO (`paired_to`): what can rank two methods.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from . import artifacts, distributed, paths
from .data import load_records
from .evaluation import (
    best_of_n,
    best_of_n_kl,
    best_of_n_kl_bound,
    kl_to_reference,
    paired_bootstrap,
)
from .generation import complete
from .judges import LabelerJudge, by_column, markdown_table, policy_row, sample
from .labeler import few_shot_prefix, oracle_accuracy, rankings_agreement
from .presets import PRESETS, get_preset
from .pretrain import stream_loss, token_stream
from .realdata import gold_eval
from .reward import pairwise_accuracy, score_responses
from .stages import groups, models
from .utils import atomic_write_text


def build_stages(preset: str = "toy", force: bool = False, processes: int | None = None
                 ) -> dict[str, float]:
    """Train (or load) every stage in order; returns the seconds each group of stages took
    (a group trained side by side, e.g. "ppo + ppo_ptx", has one wall time). `processes`: how
    many stages of a group train at once (`artifacts.build_side_by_side`)."""
    seconds = {}
    for group in groups():
        # a preset may borrow another preset's reward model (built on first use)
        stages = [s for s in group if s in artifacts.stages_of(preset)]
        if not stages:
            continue
        start = time.perf_counter()
        for stage in stages:  # a stage that trains says so itself (artifacts.build)
            if not force and artifacts.status(stage, preset) == "done":
                print(f"[{stage}] done: loaded", flush=True)
        artifacts.build_side_by_side(stages, preset, rebuild=force, processes=processes)
        seconds[" + ".join(stages)] = round(time.perf_counter() - start, 1)
    return seconds


def evaluate_preset(preset: str = "toy", samples: int = 3, seed: int = 0,
                    reference_preset: str | None = None, best_of: tuple[int, ...] = (4, 16)
                    ) -> dict:
    """Sample each model of `stages.models()` `samples` times per held-out prompt and measure it;
    then best-of-n for each n in `best_of`: SFT's sample that the reward model scores highest
    of n fresh ones (`best_of_n_rows`).

    Win rates are against the SFT model of `reference_preset` (default: this preset), as
    Figure 1 compares every size with one SFT model; the KL is to this preset's own SFT, the RM
    score by the reward model this preset trains against. Each model gets one row
    (`judges.policy_row`, judged by the gold labeler: `judges.LabelerJudge`); the returned dict
    holds them by key ({key: {model: value}}, `judges.by_column`) beside the reward model's
    accuracies: plain numbers (JSON-ready), but "tables", the judged completions of each model
    (pandas DataFrames, dropped before writing results.json), and, when the preset trains PPO,
    "paired_vs_ppo": every other model's paired difference to PPO (`paired_to`).
    """
    tokenizer, heldout = get_preset(preset).load_tokenizer(), load_records("prompts_heldout")
    prompts = heldout * samples
    val_stream = token_stream([r["text"] for r in load_records("pretrain_val")], tokenizer)
    sft = artifacts.load_model("sft", preset)
    source = get_preset(preset).reward_source
    reward_model = artifacts.load_model("rm", source)
    # SFT samples with other seeds: the reference every model is compared with
    reference_sft = artifacts.load_model("sft", reference_preset or preset)
    judge = LabelerJudge(sample(reference_sft, tokenizer, heldout, samples, seed + 1000), seed)
    rows, answers = {}, {}
    trained = artifacts.stages_of(preset)
    for group in groups():  # a missing stage is trained first, its group side by side
        artifacts.build_side_by_side([s for s in group if s in trained], preset)
    for name, stage in models().items():
        if stage.name not in trained:
            continue  # a stage this preset has no recipe for
        model = artifacts.load_model(stage.name, preset)
        completions = sample(model, tokenizer, heldout, samples, seed,
                             prefix=few_shot_prefix() if stage.prompted else "")
        loss = stream_loss(model, val_stream, model.config.block_size)
        answers[name] = completions
        kl = (None if stage.prompted else  # another context
              kl_to_reference(model, sft, tokenizer, prompts, completions))
        rows[name] = policy_row(judge, prompts, completions, reward_model, tokenizer,
                                sum(p.numel() for p in model.parameters()), kl, seed,
                                pretrain_val_loss=loss,
                                seconds=artifacts.train_seconds(stage.name, preset))
    if best_of:
        sft_params = sum(p.numel() for p in sft.parameters())
        for name, best in best_of_n_rows(sft, reward_model, tokenizer, heldout, samples,
                                         best_of, seed).items():
            answers[name] = best["picks"]
            rows[name] = policy_row(judge, prompts, best["picks"], reward_model, tokenizer,
                                    sft_params, best["kl"], seed, pretrain_val_loss=None,
                                    seconds=best["seconds"],
                                    best_of_n_kl_bound=best_of_n_kl_bound(best["n"]))
    rankings = artifacts.load_rankings("validation", source)
    prompts_by_id = {p["id"]: p for p in load_records("prompts_validation")}
    return {"preset": preset, "reference": f"SFT ({reference_preset or preset})",
            "n_comparisons": len(prompts), "samples_per_prompt": samples, **by_column(rows),
            "rm_accuracy": pairwise_accuracy(reward_model, tokenizer, rankings),
            "labeler_agreement": rankings_agreement(
                rankings, prompts_by_id, get_preset(source).rm.ceiling_labeler_seed)[0],
            "rm_oracle": oracle_accuracy(rankings, prompts_by_id)[0],
            **({"paired_vs_ppo": paired_to("PPO", prompts, answers, seed)} if "PPO" in answers
               else {})}


def paired_to(reference: str, prompts: list[dict], answers: dict[str, list], seed: int = 0
              ) -> dict[str, dict]:
    """{model: `evaluation.paired_bootstrap` of its answers against the `reference` model's}
    for every model of `answers` but the reference: all were sampled on the same `prompts`
    with the same seeds, so comparison i of two models shares its prompt and sample index.
    Overlapping win rates against SFT cannot rank two models; these intervals can."""
    return {name: paired_bootstrap(prompts, ours, prompts, answers[reference], seed)
            for name, ours in answers.items() if name != reference}


def best_of_n_rows(sft, reward_model, tokenizer, heldout: list[dict], samples: int,
                   ns: tuple[int, ...], seed: int = 0) -> dict[str, dict]:
    """Best-of-n against the reward model, for each n in `ns`, on `samples` comparisons per
    held-out prompt: {"best-of-n (RM)": {"n", "picks", "kl", "seconds"}}.

    Each comparison draws a pool of max(ns) fresh SFT samples (seeds of their own, none shared
    with the models' samples or the SFT reference); best-of-n keeps the RM's favourite of the
    pool's first n. "kl" is the mean over comparisons of `best_of_n_kl` (the KL of the pick
    to SFT, with SFT's distribution estimated from the whole pool's RM scores), and "seconds"
    the time to sample and score n answers per comparison (the pool's time x n / max(ns)):
    best-of-n pays at inference what the RL methods pay in training.
    """
    pool_size, start = max(ns), time.perf_counter()
    draws = [[complete(sft, tokenizer, heldout, seed=seed + 5000 + 100 * s + k)
              for k in range(pool_size)] for s in range(samples)]  # draws[s][k][j]
    pools = [[draws[s][k][j] for k in range(pool_size)]
             for s in range(samples) for j in range(len(heldout))]  # one pool per comparison
    flat = [c for pool in pools for c in pool]
    scores = score_responses(reward_model, tokenizer,
                             [p["prompt"] for p in heldout * samples for _ in range(pool_size)],
                             [c.text for c in flat], [c.terminated for c in flat]).view(
                                 len(pools), pool_size).tolist()
    seconds = time.perf_counter() - start
    return {f"best-of-{n} (RM)": {
        "n": n, "picks": best_of_n([pool[:n] for pool in pools], [row[:n] for row in scores]),
        "kl": sum(best_of_n_kl(row, n) for row in scores) / len(scores),
        "seconds": seconds * n / pool_size} for n in ns}


def report_markdown(results: dict) -> str:
    """The results as a Markdown report: one table of models, then the RM line."""
    lines = [f"# Pipeline results: preset `{results['preset']}`", "",
             f"Held-out prompts x {results['samples_per_prompt']} samples = "
             f"{results['n_comparisons']} comparisons per model, judged by the gold labeler.", "",
             *markdown_table(results, {
                 "parameters": "{params:,}",
                 "win rate vs SFT (95% CI)":
                     "{win_rate_vs_sft:.1%} ({win_rate_ci[0]:.1%}-{win_rate_ci[1]:.1%})",
                 "mean gold": "{mean_gold:.2f}", "RM score": "{rm_score:.2f}",
                 "pretraining loss": "{pretrain_val_loss:.3f}",
                 "KL to SFT (nats)": "{kl_to_sft:.2f}", "wall time (s)": "{seconds:.0f}"})]
    lines += ["", "Wall time: a trained model's training time (its own stage only: the reward "
              "model's, which PPO, PPO-ptx, RLOO and best-of-n all use, is not included); "
              "best-of-n's: sampling and scoring n answers per comparison at evaluation. "
              "Best-of-n's KL is estimated from its pool of SFT samples (at most "
              "log n - (n-1)/n)."]
    lines += paired_lines(results.get("paired_vs_ppo"), "PPO")
    lines += ["", f"Reward model accuracy on validation comparisons: {results['rm_accuracy']:.1%}; "
              f"its ceiling, an oracle ranking by the gold score: {results['rm_oracle']:.1%}; "
              f"agreement of two labelers on the same pairs: {results['labeler_agreement']:.1%}."]
    return "\n".join(lines) + "\n"


def paired_lines(paired: dict | None, reference: str) -> list[str]:
    """The report's section on `paired_to`'s differences (none without the reference model)."""
    if not paired:
        return []
    lines = ["", f"## Paired differences to {reference}", "",
             f"Each model against {reference} on the same comparisons (prompt and sample), with "
             "95% intervals from one bootstrap over prompts: a difference is resolved when its "
             "interval excludes 0 (a win rate: 50%).", "",
             f"| model | mean gold - {reference}'s (95% CI) | win rate vs {reference} (95% CI) |",
             "|---|---|---|"]
    for name, p in paired.items():
        lines.append(f"| {name} | {p['gold_difference']:+.2f} ({p['gold_ci'][0]:+.2f} to "
                     f"{p['gold_ci'][1]:+.2f}) | {p['win_rate']:.1%} ({p['win_rate_ci'][0]:.1%}-"
                     f"{p['win_rate_ci'][1]:.1%}) |")
    def resolved(key: str) -> str:
        return ", ".join(name for name, p in paired.items() if p[key]) or "none"

    return lines + ["", f"Resolved against {reference}: by mean gold, {resolved('gold_resolved')}; "
                    f"by win rate, {resolved('win_rate_resolved')}. Where an interval includes "
                    f"0 (50%), this evaluation cannot tell the model from {reference}."]


def stage_times_line(results: dict) -> str:
    """The report's last line, for either judge's report: each group of stages' build time
    and the run's total."""
    times = ", ".join(f"{k} {v:.0f}" for k, v in results["stage_seconds"].items())
    return (f"\nStage times (s, 0 = loaded): {times}; total wall time "
            f"{results['wall_seconds']:.0f} s.\n")


def run(preset: str = "toy", out: str | Path | None = None, force: bool = False,
        samples: int = 3, processes: int | None = None) -> dict:
    start = time.perf_counter()
    out = Path(out) if out else paths.ARTIFACTS_DIR / preset / "pipeline"
    stage_seconds = build_stages(preset, force, processes)
    if not distributed.is_main_process():
        return {}  # under torchrun the other processes only help train; rank 0 evaluates
    print("[evaluation]", flush=True)
    # real preference data has no gold labeler: a gold reward model judges (realdata.gold_eval)
    real = get_preset(preset).gold_rm is not None
    evaluate, report = ((gold_eval.evaluate_preset, gold_eval.report_markdown) if real
                        else (evaluate_preset, report_markdown))
    with get_preset(preset).runtime():  # the preset's device and precision
        results = evaluate(preset, samples)
    results.pop("tables")
    results["stage_seconds"] = stage_seconds
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    text = report(results) + stage_times_line(results)
    atomic_write_text(out / "report.md", text)
    print(text)
    print(f"wrote {artifacts.shown(out / 'results.json')} and {artifacts.shown(out / 'report.md')}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="toy", choices=list(PRESETS),
                        help="recipe name (rlhf_lite.presets)")
    parser.add_argument("--out", default=None, help="output folder for results.json, report.md")
    parser.add_argument("--force", action="store_true", help="retrain every stage")
    parser.add_argument("--samples", type=int, default=3, help="samples per held-out prompt")
    args = parser.parse_args(argv)
    # checked before any stage runs: found at the end, they would lose minutes of training and
    # the evaluation (results are written last)
    if args.samples < 1:
        parser.error(f"argument --samples: must be >= 1, got {args.samples}")
    if args.out and (problem := paths.folder_problem(Path(args.out))):
        parser.error(f"argument --out: {problem}")
    if problems := paths.settings_problems():
        parser.error("\n".join(problems))
    with distributed.process_group():  # a no-op unless launched with torchrun
        run(args.preset, args.out, args.force, args.samples)


if __name__ == "__main__":
    main()
