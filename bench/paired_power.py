"""Evaluation power: interval half-widths at 3, 6 and 10 samples per held-out prompt.

The pipeline's evaluation samples every model `samples` times per held-out prompt and judges
the answers (seconds, not minutes); more samples narrow the intervals. For PPO and SFT, the
trained models of a preset, each row gives the half-width of the two intervals the report
shows: PPO's win rate against the SFT reference (unpaired, as in the main table) and PPO's
paired gold difference to SFT (`evaluation.paired_bootstrap`), with the seconds spent sampling
(PPO, SFT and the reference SFT) and judging. It never trains: a missing or stale model
stops it (build them with `python -m rlhf_lite.pipeline`).

    python -m bench.paired_power                          # toy, 3, 6 and 10 samples
    python -m bench.paired_power --preset tiny --samples 1,2
"""
from __future__ import annotations

import argparse
import time

from bench.common import print_table
from rlhf_lite import artifacts
from rlhf_lite.data import load_records
from rlhf_lite.evaluation import paired_bootstrap, win_rate
from rlhf_lite.judges import sample
from rlhf_lite.presets import get_preset
from rlhf_lite.utils import set_threads


def measure(ppo, sft, tokenizer, heldout: list[dict], samples: int, seed: int = 0) -> dict:
    """One row: the comparisons, both half-widths and the seconds, seeded as the pipeline's
    `evaluate_preset` (the models seed + s, the SFT reference seed + 1000 + s)."""
    start = time.perf_counter()
    ours, theirs, reference = (sample(model, tokenizer, heldout, samples, seed + offset)
                               for model, offset in ((ppo, 0), (sft, 0), (sft, 1000)))
    sampled = time.perf_counter()
    prompts = heldout * samples
    unpaired = win_rate(prompts, ours, reference, seed)
    paired = paired_bootstrap(prompts, ours, prompts, theirs, seed)
    judged = time.perf_counter()
    return {"samples": samples, "comparisons": len(prompts),
            "win rate vs SFT": unpaired["win_rate"],
            "unpaired win-rate half-width": (unpaired["high"] - unpaired["low"]) / 2,
            "gold difference PPO - SFT": paired["gold_difference"],
            "paired gold half-width": (paired["gold_ci"][1] - paired["gold_ci"][0]) / 2,
            "sampling s": sampled - start, "judging s": judged - sampled}


def trained(stage: str, preset: str):
    """The stage's model, or a stop if loading it would train it."""
    state = artifacts.status(stage, preset)
    if state != "done":
        raise SystemExit(f"{stage} of preset {preset} is {state}: this benchmark never trains; "
                         f"build it first (python -m rlhf_lite.pipeline --preset {preset})")
    return artifacts.load_model(stage, preset)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="toy", help="whose trained PPO and SFT to sample")
    parser.add_argument("--samples", default="3,6,10",
                        help="comma-separated samples per held-out prompt")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all cores)")
    args = parser.parse_args(argv)
    print(f"{set_threads(args.threads)} threads")
    counts = [int(s) for s in args.samples.split(",")]
    with get_preset(args.preset).runtime():
        ppo, sft = trained("ppo", args.preset), trained("sft", args.preset)
        tokenizer, heldout = get_preset(args.preset).load_tokenizer(), load_records(
            "prompts_heldout")
        rows = [measure(ppo, sft, tokenizer, heldout, n) for n in counts]
    print_table(f"Evaluation power, preset {args.preset} ({len(heldout)} held-out prompts)",
                list(rows[0]), [list(row.values()) for row in rows])
    return rows


if __name__ == "__main__":
    main()
