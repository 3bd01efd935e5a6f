"""How far the toy reward model sits below its ceiling, and which levers close the gap.

Samples a pool of SFT completions once (`--pool` per training prompt), then trains one reward
model per lever on rankings cut from that same pool (K completions per ranking, ranked by the
training labeler), so the levers differ only in what they change. Every RM is measured on
the same validation rankings, those of the toy preset's rm stage, against the oracle ceiling
and the two-labeler yardstick, overall and per category. Prints a table of accuracy, gap to
the ceiling and training seconds; the rm stage's own time is sampling + training of its recipe.

    python -m bench.rm_levers --seeds 3       # the levers below, from the trained SFT model
    python -m bench.rm_levers --only "2 epochs"
    python -m bench.rm_levers --seeds 3 --out bench/results/rm_levers.csv   # notebook 3 loads it

With --out the table is also written as CSV; rows of levers measured by an earlier run into the
same file are kept (the ceiling and yardstick rows are the same every run), so the levers can be
measured one invocation at a time.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import pandas as pd

from rlhf_lite import artifacts, data, labeler
from rlhf_lite.comparisons import rank_groups, sample_rankings
from rlhf_lite.generation import complete
from rlhf_lite.presets import get_preset
from rlhf_lite.reward import pairwise_accuracy, train_reward_model
from rlhf_lite.tokenizer import load_tokenizer
from rlhf_lite.utils import set_threads


def rankings_from_pool(prompts, pool, k, rounds, labeler_seed=0):
    """`rounds` rankings of K completions per prompt, cut in order from each prompt's pool."""
    repeated = [p for _ in range(rounds) for p in prompts for _ in range(k)]
    completions = [c for r in range(rounds) for group in pool for c in group[r * k:(r + 1) * k]]
    return rank_groups(repeated, completions, k, labeler.GoldLabeler(seed=labeler_seed))


LEVERS = {  # name -> (K, rounds, changes to the toy preset's RewardConfig, to its TrainConfig)
    "toy preset (K = 4, 16 rounds, 1 epoch, the paper's)": (4, 16, {}, {}),
    "2 epochs": (4, 16, {"epochs": 2}, {}),
    "3 epochs": (4, 16, {"epochs": 3}, {}),
    "lr 6e-4, 2 epochs": (4, 16, {"epochs": 2}, {"lr": 6e-4}),
    "lr 1e-3": (4, 16, {}, {"lr": 1e-3}),
    "batch 8": (4, 16, {"batch_size": 8}, {}),
    "K = 8, 8 rounds (the same samples)": (8, 8, {"k": 8}, {}),
    "32 rounds (twice the samples)": (4, 32, {"rounds": 32}, {}),
}


def by_category(records, prompts_by_id) -> dict[str, list[dict]]:
    """{"all": records, category: its records, ...}."""
    categories = sorted({prompts_by_id[r["prompt_id"]]["category"] for r in records})
    return {"all": records, **{c: [r for r in records
                                   if prompts_by_id[r["prompt_id"]]["category"] == c]
                               for c in categories}}


def measure(sft, tokenizer, cfg, train_prompts, val_prompts, pool_size, levers, seeds=1):
    """The table: validation accuracy per category of the ceiling, the yardstick and one RM per
    lever (mean over `seeds` training seeds), its gap to the ceiling and its training seconds."""
    start = time.perf_counter()
    flat = complete(sft, tokenizer, [p for p in train_prompts for _ in range(pool_size)],
                    cfg.max_new_tokens, cfg.temperature, seed=cfg.sample_seed, batch_size=256)
    pool = [flat[i * pool_size:(i + 1) * pool_size] for i in range(len(train_prompts))]
    print(f"pool: {len(flat)} completions in {time.perf_counter() - start:.0f} s")
    by_id = {p["id"]: p for p in val_prompts}
    parts = by_category(sample_rankings(cfg, sft, tokenizer, val_prompts, "validation"), by_id)
    ceiling = {c: labeler.oracle_accuracy(r, by_id)[0] for c, r in parts.items()}
    rows = {"oracle (ceiling)": ceiling,
            "two labelers": {c: labeler.rankings_agreement(r, by_id, cfg.ceiling_labeler_seed)[0]
                             for c, r in parts.items()}}
    demos = data.load_records("demonstrations")
    seconds, spread = {}, {}
    for name in levers:
        k, rounds, changes, train_changes = LEVERS[name]
        if k * rounds > pool_size:
            raise SystemExit(f"{name}: needs {k * rounds} completions per prompt, pool {pool_size}")
        train = rankings_from_pool(train_prompts, pool, k, rounds, cfg.labeler_seed)
        runs = []
        for seed in range(seeds):
            recipe = dataclasses.replace(cfg, **changes, train=dataclasses.replace(
                cfg.train, eval_interval=0, seed=seed, **train_changes))
            start = time.perf_counter()
            rm, _ = train_reward_model(recipe, sft, tokenizer, train, parts["all"][:2], demos)
            seconds[name] = time.perf_counter() - start
            runs.append({c: pairwise_accuracy(rm, tokenizer, r) for c, r in parts.items()})
        rows[name] = pd.DataFrame(runs).mean().to_dict()
        spread[name] = pd.Series([run["all"] for run in runs]).std() if seeds > 1 else None
        print(f"{name}: {rows[name]['all']:.1%} ({seconds[name]:.0f} s per run)", flush=True)
    table = pd.DataFrame(rows).T
    table["below ceiling (points)"] = 100 * (ceiling["all"] - table["all"])
    table["sd over seeds (points)"] = 100 * pd.Series(spread, dtype=float)
    table["train s"] = pd.Series(seconds).round(0)
    print(f"validation pairs: { {c: len(r) * math.comb(cfg.k, 2) for c, r in parts.items()} }")
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=128, help="completions per training prompt")
    parser.add_argument("--only", nargs="*", default=list(LEVERS),
                        help="levers to run (default: all)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="training seeds per lever (the order of the rankings); the table "
                             "shows their mean, and the spread of the overall accuracy")
    parser.add_argument("--out", type=Path, help="CSV to write the table to (rows of other "
                                                      "levers already in it are kept)")
    args = parser.parse_args(argv)
    set_threads(2)
    table = measure(artifacts.load_model("sft"), load_tokenizer(), get_preset("toy").rm,
                    data.load_records("prompts_train"), data.load_records("prompts_validation"),
                    args.pool, args.only, args.seeds)
    print(table.round(3).to_string())
    if args.out:
        save_table(table, args.out)


def save_table(table: pd.DataFrame, path: Path) -> None:
    """Write `table` to CSV at `path`, after the rows of `path`'s earlier levers that `table`
    does not measure again (in LEVERS order)."""
    if path.exists():
        earlier = pd.read_csv(path, index_col=0)
        table = pd.concat([earlier.drop(index=table.index, errors="ignore"), table])
        levers = [name for name in LEVERS if name in table.index]
        table = table.loc[[*table.index.difference(levers, sort=False), *levers]]
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path)


if __name__ == "__main__":
    main()
