"""Another training seed: how far it moves the course's comparisons between training runs.

The notebooks compare their runs on one training seed each, paired over the held-out prompts:
those intervals cover the evaluation's noise (which prompts, which samples), not the training
run's (which rollouts, in which order). This bench trains a notebook's runs again with training
seeds 1 .. seeds - 1, side by side (one process and one thread each, as the course trains them),
samples every policy on the held-out prompts as notebook 8 does (3 samples a prompt, sampling
seeds 0, 1, 2) and writes one row per run, training seed and held-out prompt (the means of its
samples): gold, KL to SFT, gold minus SFT's, the reward model's score, and the run's held-out
pretraining loss. Any two runs of a seed are then compared answer
by answer, and `evaluation.over_seeds` states the comparison over both the seeds and the
prompts (`evaluation.seeds_and_prompts_difference`). Three studies:

- "methods" (notebooks 7, 8): the stages ppo, ppo_ptx, rloo, grpo_verifier and dpo; seed 0 is
  the stages themselves, the runs notebook 8 evaluates; and DPO at beta 0.5 (all seeds here).
- "ensembles" (notebook 11): RLOO at beta = 0 against the rm stage's reward model alone and
  against the three-member ensemble read as its mean, worst case and UWO, online DPO ranked by
  the reward model, and the dpo stage's recipe (offline DPO, the runs of "methods"); the
  members stay notebook 11's, the policies' seeds change; seed 0 is notebook 11's runs.
- "rlvr" (notebook 10): the grpo_verifier stage (Dr. GRPO against the verifier; its runs of
  "methods") and notebook 10's three variants of it: the learned reward model's score as the
  reward, GRPO's normalisations, k1 in the reward; seed 0 is notebook 10's runs.

    python -m bench.seeds --out bench/results/seeds.csv                # 5 seeds, ~10 minutes
    python -m bench.seeds --study ensembles --out bench/results/seeds_ensembles.csv
    python -m bench.seeds --study rlvr --out bench/results/seeds_rlvr.csv

Runs are saved (artifacts/toy/runs/bench_seeds/; seed 0 where its notebook saves it) and loaded
when run again.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd

from rlhf_lite import artifacts, dpo, evaluation, labeler, ppo, reward
from rlhf_lite.data import load_records
from rlhf_lite.judges import sample
from rlhf_lite.presets import Preset, get_preset
from rlhf_lite.pretrain import stream_loss, token_stream
from rlhf_lite.runs import train_side_by_side
from rlhf_lite.stages import get_stage
from rlhf_lite.utils import set_threads
from rlhf_lite.verifier import verifies

# the stages notebook 8 ranks against PPO, longest to train first (they then share the cores)
STAGES = ("ppo_ptx", "dpo", "ppo", "grpo_verifier", "rloo")
NOTEBOOK_10, NOTEBOOK_11 = "10_rlvr", "11_ensembles_and_online_dpo"  # where they save their runs
DR_GRPO = "Dr. GRPO (verifier)"  # notebook 10's name for the grpo_verifier stage
DPO_BETA = "DPO, beta 0.5"
SAVED_AS = "bench_seeds"


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


def policy_of(result):
    """The trained policy of a run's result: a PPO trainer's, or DPO's (policy, history)."""
    return (result.policy if hasattr(result, "policy") else result[0]).eval()


def trained(runs: dict, saved_as: str = SAVED_AS) -> dict:
    """{(label, seed): policy} of `runs` ({seed: {label: (fn, args, kwargs)}}), trained side
    by side, or loaded."""
    named = {f"{label}, seed {seed}": run for seed, by_label in runs.items()
             for label, run in by_label.items()}
    out = {}
    for name, result in train_side_by_side(named, saved_as).items():
        label, seed = name.rsplit(", seed ", 1)
        out[(label, int(seed))] = policy_of(result)
    return out


def stage_seeds(stage: str, seeds: int, p: Preset, sft, reward_model, tokenizer,
                label: str | None = None) -> dict:
    """{(label, seed): policy} of `stage`'s recipe on seeds 0 .. seeds - 1: seed 0 the stage's
    checkpoint, the others trained (or loaded) under the stage's label, the names every study
    shares; `label` (default the stage's) names them in the table."""
    name = get_stage(stage).label
    out = {(name, 0): artifacts.load_model(stage, p).eval()}
    out |= trained({seed: {name: run_of(stage, with_seed(p.recipe(stage), seed), p, sft,
                                        reward_model, tokenizer)} for seed in range(1, seeds)})
    return {(label or name, seed): policy for (_, seed), policy in out.items()}


def methods(seeds: int, p: Preset, sft, reward_model, tokenizer) -> dict:
    """{(label, seed): policy} for every stage of STAGES (seed 0 the stage's checkpoint), and
    DPO at beta 0.5 on every seed (solutions 8's exercise 5: the beta notebook 9's validation
    rule could not tell from the stage's)."""
    beta = dataclasses.replace(p.dpo, beta=0.5)
    out = trained({seed: {DPO_BETA: run_of("dpo", with_seed(beta, seed), p, sft, reward_model,
                                           tokenizer)} for seed in range(seeds)})
    for stage in STAGES:
        out |= stage_seeds(stage, seeds, p, sft, reward_model, tokenizer)
    return out


def ensembles(seeds: int, p: Preset, sft, reward_model, tokenizer) -> dict:
    """{(label, seed): policy} for notebook 11's runs (its module docstring) and offline DPO."""
    rankings = {s: artifacts.load_rankings(s, p) for s in ("train", "validation")}
    demonstrations = load_records("demonstrations")
    members = train_side_by_side({f"RM seed {s}": (
        reward.train_reward_model, (reward.member_config(p.rm, s), sft, tokenizer,
                                    rankings["train"], rankings["validation"], demonstrations),
        {}) for s in (1, 2)}, NOTEBOOK_11)
    members = [reward_model] + [model for model, _ in members.values()]
    penalty = reward.uwo_penalty(members, tokenizer, rankings["validation"])[0]
    rewards = {"one RM": reward_model, "mean": reward.RewardEnsemble(members, "mean"),
               "worst case": reward.RewardEnsemble(members, "min"),
               "UWO": reward.RewardEnsemble(members, "uwo", penalty=penalty)}
    prompts = p.data.prompts("train", tokenizer)

    def runs(seed: int) -> dict:
        rl_cfg = with_seed(dataclasses.replace(p.rloo, beta=0.0), seed)
        online_cfg = with_seed(dpo.online_recipe(p.dpo), seed)
        return {**{name: (ppo.train_run, (rl_cfg, sft, r, tokenizer, prompts),
                          {"gold_judge": labeler.gold_score}) for name, r in rewards.items()},
                "online DPO": (dpo.train_dpo, (online_cfg, sft, tokenizer, None,
                                               rankings["validation"]),
                               {"prompts": prompts, "reward_model": reward_model,
                                "gold_judge": labeler.gold_score})}

    out = {(name, 0): policy_of(result)  # notebook 11's own runs, loaded (or trained) as it does
           for name, result in train_side_by_side(runs(0), NOTEBOOK_11).items()}
    out |= trained({seed: runs(seed) for seed in range(1, seeds)})
    # offline DPO: the dpo stage and its other seeds, the runs of the "methods" study
    return out | stage_seeds("dpo", seeds, p, sft, reward_model, tokenizer, "offline DPO")


def rlvr(seeds: int, p: Preset, sft, reward_model, tokenizer) -> dict:
    """{(label, seed): policy} for notebook 10's runs: the grpo_verifier stage's recipe (the
    "methods" study's runs) and its three variants, each changing one thing."""
    variants = ppo.rlvr_variants(p.grpo_verifier)
    checkable = [q for q in p.data.prompts("train", tokenizer) if verifies(q)]

    def runs(seed: int) -> dict:
        return {name: (ppo.train_run, (with_seed(cfg, seed), sft, reward_model, tokenizer,
                                       checkable), {"gold_judge": labeler.gold_score})
                for name, cfg in variants.items()}

    out = {(name, 0): policy_of(result)  # notebook 10's own runs
           for name, result in train_side_by_side(runs(0), NOTEBOOK_10).items()}
    out |= trained({seed: runs(seed) for seed in range(1, seeds)})
    # the stage itself: the runs of the "methods" study, under notebook 10's name
    return out | stage_seeds("grpo_verifier", seeds, p, sft, reward_model, tokenizer, DR_GRPO)


STUDIES = {"methods": methods, "ensembles": ensembles, "rlvr": rlvr}


def measure(models: dict, sft, reward_model, tokenizer, heldout: list[dict], samples: int = 3
            ) -> pd.DataFrame:
    """One row per (run, seed, held-out prompt) of `models` ({(label, seed): policy}), each a
    mean over the prompt's samples: gold, KL to SFT, gold minus SFT's (answer by answer: the
    same prompt and sample index) and `reward_model`'s score; and the run's held-out
    pretraining loss and that minus SFT's (one number per run, on every row of it: notebook 7's
    alignment tax).
    Every policy answers with the same sampling seeds (`judges.sample`, seed 0), as in
    notebook 8, so two runs compare answer by answer too."""
    prompts = heldout * samples
    ids = [q["id"] for q in prompts]
    web_text = token_stream([r["text"] for r in load_records("pretrain_val")], tokenizer)

    def golds(completions) -> pd.Series:
        return pd.Series([labeler.gold_score(q, c.text, c.terminated)
                          for q, c in zip(prompts, completions)])

    sft_gold = golds(sample(sft.eval(), tokenizer, heldout, samples, seed=0))
    sft_loss = stream_loss(sft, web_text, sft.config.block_size)
    tables = []
    for (label, seed), model in models.items():
        completions = sample(model.eval(), tokenizer, heldout, samples, seed=0)
        gold = golds(completions)
        kl = evaluation.kl_per_response(model, sft, tokenizer, prompts, completions)
        scores = reward.score_responses(reward_model, tokenizer, [q["prompt"] for q in prompts],
                                        [c.text for c in completions],
                                        [c.terminated for c in completions])
        per_answer = pd.DataFrame({"prompt": ids, "gold": gold, "KL to SFT": kl.numpy(),
                                   "gold - SFT": gold - sft_gold, "RM score": scores.numpy()})
        per_prompt = per_answer.groupby("prompt", sort=False).mean().reset_index()
        loss = stream_loss(model, web_text, model.config.block_size)
        tables.append(per_prompt.assign(run=label, seed=seed, **{
            "pretraining loss": loss, "pretraining loss - SFT": loss - sft_loss}))
    columns = ["run", "seed", "prompt", "gold", "KL to SFT", "gold - SFT", "RM score",
               "pretraining loss", "pretraining loss - SFT"]
    return pd.concat(tables)[columns].sort_values(["run", "seed"], kind="stable",
                                                  ignore_index=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="methods", choices=sorted(STUDIES),
                        help="whose runs: notebooks 7 and 8 (methods), 10 (rlvr) or 11 (ensembles)")
    parser.add_argument("--seeds", type=int, default=5, help="training seeds 0 .. seeds - 1")
    parser.add_argument("--out", type=Path, help="CSV to write the table to")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2: seed 0 is the course's own run")
    set_threads(1)
    start, p = time.perf_counter(), get_preset("toy")
    sft, reward_model, tokenizer = (artifacts.load_model("sft", p), artifacts.load_model("rm", p),
                                    p.load_tokenizer())
    models = STUDIES[args.study](args.seeds, p, sft, reward_model, tokenizer)
    table = measure(models, sft, reward_model, tokenizer, p.data.prompts("heldout", tokenizer))
    print("means over the held-out prompts, per run and training seed:")
    print(table.drop(columns="prompt").groupby(["run", "seed"]).mean().round(3).to_string())
    reference = {"methods": "PPO", "ensembles": "one RM", "rlvr": DR_GRPO}[args.study]
    for column in ("gold", "KL to SFT"):
        print(f"\n{column} minus {reference}'s, over {args.seeds} training seeds and the prompts:")
        for run in table.run.unique():
            if run != reference:
                print(f"  {run}: {evaluation.over_seeds(table, run, reference, column)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.round(4).to_csv(args.out, index=False)
    print(f"\n{time.perf_counter() - start:.0f} s (runs trained, or loaded when saved)")


if __name__ == "__main__":
    main()
