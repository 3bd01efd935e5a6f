"""Another training seed: how far it moves each RL method's comparison with PPO.

Notebooks 7 and 8 compare PPO-ptx, RLOO, GRPO (verifier) and DPO with PPO on one training run
each, paired over the held-out prompts: their intervals cover the evaluation's noise (which
prompts, which samples), not the training run's (which rollouts, in which order). This bench
trains each of those toy stages' recipes, and PPO's, again with training seeds 1 .. seeds - 1
(seed 0 is the course's stage itself, the run notebook 8 evaluates), side by side (one process
and one thread each, as the stages train), samples every policy on the held-out prompts as
notebook 8 does (3 samples a prompt, sampling seeds 0, 1, 2) and writes one row per method,
training seed and held-out prompt (the means of its samples): gold, KL to SFT, and gold minus
SFT's and minus the PPO run's of the same seed, answer by answer.
`evaluation.seeds_and_prompts_difference` then states a comparison over both the seeds and the
prompts (each a draw: another seed, other prompts): notebooks 7 and 8 load the table.

    python -m bench.seeds --seeds 5 --out bench/results/seeds.csv   # about 8 minutes on 2 cores

Runs are saved (artifacts/toy/runs/bench_seeds/) and loaded when run again.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from rlhf_lite import artifacts, dpo, evaluation, labeler, ppo
from rlhf_lite.judges import sample
from rlhf_lite.presets import Preset, get_preset
from rlhf_lite.pretrain import token_stream
from rlhf_lite.runs import train_side_by_side
from rlhf_lite.stages import get_stage
from rlhf_lite.utils import set_threads
from rlhf_lite.verifier import verifies

# the stages notebook 8 ranks against PPO, longest to train first (they then share the cores)
STAGES = ("ppo_ptx", "dpo", "ppo", "grpo_verifier", "rloo")
REFERENCE = "PPO"


def with_seed(cfg, seed: int):
    """The recipe `cfg` with training seed `seed` (DPO keeps it in its TrainConfig)."""
    if hasattr(cfg, "train"):
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
    return dataclasses.replace(cfg, seed=seed)


def run_of(stage: str, cfg, p: Preset, sft, reward_model, tokenizer) -> tuple:
    """(function, args, kwargs) that trains `stage`'s recipe `cfg` as the stage's build does,
    for `runs.train_side_by_side`."""
    if stage == "dpo":
        rankings = dpo.stage_rankings(artifacts.checkpoint_path("dpo", p).parent)
        return dpo.train_dpo, (cfg, sft, tokenizer, rankings["train"], rankings["validation"]), {}
    prompts = p.data.prompts("train", tokenizer)
    if cfg.reward == "verifier":
        prompts = [q for q in prompts if verifies(q)]
    stream = (token_stream(p.data.pretraining_text("train"), tokenizer) if cfg.ptx_coef > 0
              else None)
    return ppo.train_run, (cfg, sft, reward_model, tokenizer, prompts), {"pretrain_stream": stream}


def policies(seeds: int, preset: str = "toy", saved_as: str | None = "bench_seeds") -> dict:
    """{(label, seed): policy} for every stage of STAGES and seed 0 .. seeds - 1: seed 0 the
    stage's checkpoint, the others trained here (or loaded, when saved and current)."""
    p = get_preset(preset)
    sft, reward_model = artifacts.load_model("sft", p), artifacts.load_model("rm", p)
    tokenizer = p.load_tokenizer()
    out = {(get_stage(s).label, 0): artifacts.load_model(s, p) for s in STAGES}
    runs = {f"{get_stage(s).label}, seed {seed}":
            run_of(s, with_seed(p.recipe(s), seed), p, sft, reward_model, tokenizer)
            for seed in range(1, seeds) for s in STAGES}
    for name, result in train_side_by_side(runs, saved_as, preset=preset).items():
        label, seed = name.rsplit(", seed ", 1)
        out[(label, int(seed))] = result.policy if hasattr(result, "policy") else result[0]
    return out


def measure(models: dict, sft, tokenizer, heldout: list[dict], samples: int = 3) -> pd.DataFrame:
    """One row per (method, seed, held-out prompt) of `models` ({(label, seed): policy},
    REFERENCE among the labels for every seed), each a mean over the prompt's samples: gold,
    KL to SFT, and gold minus SFT's and minus the REFERENCE run's of the same seed, answer by
    answer (the same prompt and sample index). Every policy answers with the same sampling
    seeds (`judges.sample`, seed 0), as in notebook 8."""
    prompts = heldout * samples
    ids = [q["id"] for q in prompts]

    def golds(completions) -> pd.Series:
        return pd.Series([labeler.gold_score(q, c.text, c.terminated)
                          for q, c in zip(prompts, completions)])

    sft_gold = golds(sample(sft.eval(), tokenizer, heldout, samples, seed=0))
    answers = {key: sample(m.eval(), tokenizer, heldout, samples, seed=0)
               for key, m in models.items()}
    gold = {key: golds(completions) for key, completions in answers.items()}
    tables = []
    for (label, seed), completions in answers.items():
        kl = evaluation.kl_per_response(models[(label, seed)], sft, tokenizer, prompts,
                                        completions)
        per_answer = pd.DataFrame({
            "prompt": ids, "gold": gold[(label, seed)], "KL to SFT": kl.numpy(),
            "gold - SFT": gold[(label, seed)] - sft_gold,
            f"gold - {REFERENCE}": gold[(label, seed)] - gold[(REFERENCE, seed)]})
        per_prompt = per_answer.groupby("prompt", sort=False).mean().reset_index()
        tables.append(per_prompt.assign(method=label, seed=seed))
    columns = ["method", "seed", "prompt", "gold", "KL to SFT", "gold - SFT",
               f"gold - {REFERENCE}"]
    return pd.concat(tables)[columns].sort_values(["method", "seed"], kind="stable",
                                                  ignore_index=True)


def over_seeds_and_prompts(table: pd.DataFrame, column: str = f"gold - {REFERENCE}") -> dict:
    """{method: `evaluation.seeds_and_prompts_difference` of `column`} over the table's seeds
    and prompts."""
    return {method: evaluation.seeds_and_prompts_difference(
                rows.pivot(index="seed", columns="prompt", values=column).to_numpy())
            for method, rows in table.groupby("method", sort=False)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0 .. seeds - 1")
    parser.add_argument("--out", type=Path, help="CSV to write the table to")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2: one seed is the course's own run")
    set_threads(1)
    p = get_preset("toy")
    table = measure(policies(args.seeds), artifacts.load_model("sft", p), p.load_tokenizer(),
                    p.data.prompts("heldout", p.load_tokenizer()))
    print("means over the held-out prompts, per method and training seed:")
    print(table.drop(columns="prompt").groupby(["method", "seed"]).mean().round(3).to_string())
    for column in (f"gold - {REFERENCE}", "gold - SFT"):
        print(f"\n{column}, over {args.seeds} training seeds and the prompts:")
        for method, d in over_seeds_and_prompts(table, column).items():
            print(f"  {method}: {d}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.round(4).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
