"""What fewer PPO epochs per rollout cost the toy RL stages, and what they save.

The course's RL recipes made 4 passes (epochs) over each rollout of 64 responses, in
minibatches of 16: about 80% of a toy PPO run's time (`python -m bench.ppo_iteration`). The
paper made one pass over each rollout (InstructGPT, App. C.4), and so do the stages now, at
raised learning rates. This bench trains the 4-epoch recipe a toy RL stage ("ppo", "rloo" or
"grpo_verifier") replaced (the stage's learning rates over `LR_FACTOR`), 2 epochs at those
rates and one epoch at 2x and 4x them (one of the two is the stage itself), from the trained
SFT model and reward model, for each seed, side by side (one process and one thread each), and
measures every run on the held-out prompts against the 4-epoch run of the same seed, paired
over prompts (gold, KL to SFT).

    python -m bench.ppo_epochs                    # PPO, seed 0 (about 2 minutes on 2 cores)
    python -m bench.ppo_epochs --seeds 2          # seeds 0 and 1
    python -m bench.ppo_epochs --stage rloo --out bench/results/ppo_epochs_rloo.csv

Runs are saved (artifacts/toy/runs/bench_ppo_epochs_<stage>/) and loaded when run again.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from rlhf_lite import artifacts, data, evaluation, labeler, ppo, verifier
from rlhf_lite.judges import sample
from rlhf_lite.presets import get_preset
from rlhf_lite.tokenizer import load_tokenizer
from rlhf_lite.utils import set_threads

BASELINE = "4 epochs"


# each stage's learning rates over those of the 4-epoch recipe it replaced (presets): PPO's and
# RLOO's were raised 4x with the cut to one epoch, GRPO's against the verifier 2x
LR_FACTOR = {"ppo": 4, "rloo": 4, "grpo_verifier": 2}


def recipes(cfg: ppo.PPOConfig, lr_factor: float = 4) -> dict[str, ppo.PPOConfig]:
    """The 4-epoch recipe a one-epoch stage recipe `cfg` replaced (its learning rates /
    `lr_factor`), and shorter ones: fewer epochs, learning rates raised with them (the same
    number of gradient steps would need 4x the rollouts; a larger step is the cheaper trade)."""
    def scaled(epochs, factor):
        return dataclasses.replace(cfg, ppo_epochs=epochs, lr=factor * cfg.lr / lr_factor,
                                   value_lr=factor * cfg.value_lr / lr_factor)
    return {BASELINE: scaled(4, 1), "2 epochs": scaled(2, 1), "1 epoch, lr x2": scaled(1, 2),
            "1 epoch, lr x4": scaled(1, 4)}


def measure(sft, reward_model, tokenizer, cfg, train_prompts, heldout, seeds=(0,), samples=3,
            saved_as: str | None = "bench_ppo_epochs", lr_factor: float = 4) -> pd.DataFrame:
    """One row per (recipe, seed): training seconds, the last 5 iterations' RM score, held-out
    gold minus the toy recipe's run of the same seed with its 95% interval over prompts, and
    the KL to SFT per response; for a verifier recipe also the verifier's accuracy on the
    checkable held-out answers."""
    configs = {(name, seed): dataclasses.replace(c, seed=seed)
               for seed in seeds for name, c in recipes(cfg, lr_factor).items()}
    runs = ppo.train_in_parallel({f"{name}, seed {seed}": c for (name, seed), c in configs.items()},
                                 sft, reward_model, tokenizer, train_prompts, saved_as=saved_as,
                                 gold_judge=labeler.gold_score)
    prompts = heldout * samples
    answers = {key: sample(runs[f"{key[0]}, seed {key[1]}"].policy.eval(), tokenizer, heldout,
                           samples, seed=0) for key in configs}
    rows = []
    for (name, seed), completions in answers.items():
        trainer = runs[f"{name}, seed {seed}"]
        paired = evaluation.paired_bootstrap(prompts, completions, prompts,
                                             answers[(BASELINE, seed)])
        rows.append({"recipe": name, "seed": seed, "train s": trainer.history.seconds,
                     "RM score, last 5": sum(trainer.history.metrics["rm_score"][-5:]) / 5,
                     "gold - 4 epochs'": paired["gold_difference"],
                     "95% CI low": paired["gold_ci"][0], "95% CI high": paired["gold_ci"][1],
                     "KL to SFT": evaluation.kl_to_reference(trainer.policy, sft, tokenizer,
                                                             prompts, completions),
                     **verified(prompts, completions, cfg)})
    return pd.DataFrame(rows)


def verified(prompts: list[dict], completions, cfg: ppo.PPOConfig) -> dict:
    """{"verifier accuracy": mean verifier score of the checkable answers} for a verifier
    recipe, else {}."""
    if cfg.reward != "verifier":
        return {}
    kept = [(p, c) for p, c in zip(prompts, completions) if verifier.verifies(p)]
    scores = verifier.verifier_scores([p for p, _ in kept], [c.text for _, c in kept],
                                      [c.terminated for _, c in kept])
    return {"verifier accuracy": scores.mean().item()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="training seeds 0 .. seeds - 1")
    parser.add_argument("--stage", default="ppo", choices=("ppo", "rloo", "grpo_verifier"),
                        help="the toy preset's RL stage whose recipe is varied")
    parser.add_argument("--out", type=Path, help="CSV to write the table to")
    args = parser.parse_args(argv)
    set_threads(1)
    cfg = get_preset("toy").recipe(args.stage)
    train_prompts = data.load_records("prompts_train")
    if cfg.reward == "verifier":  # as the stage trains: on the prompts the verifier can check
        train_prompts = [p for p in train_prompts if verifier.verifies(p)]
    table = measure(artifacts.load_model("sft"), artifacts.load_model("rm"), load_tokenizer(),
                    cfg, train_prompts, data.load_records("prompts_heldout"), range(args.seeds),
                    saved_as=f"bench_ppo_epochs_{args.stage}", lr_factor=LR_FACTOR[args.stage])
    print(table.round(3).to_string(index=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.round(4).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
