"""Where the time of one PPO iteration goes, for the toy preset's recipes (ppo and ppo_ptx).

The trainer is rlhf_lite.ppo.PPOTrainer with the preset's PPOConfig, on the world's
training prompts, with freshly initialised models of the toy config (no trained
checkpoint needed: the work per iteration is the same, except that a random policy seldom
emits eos, so nearly every response runs the full max_new_tokens, the slowest case).
Phases are timed from outside, without touching the package: wrappers around `generate`,
`rollout`, `update`, the optimizer step and the ptx loss, and forward hooks on the four
models. What is left of the rollout (tokenizing, KL, GAE, decoding) and of the update
(losses, backward, gradient clipping) is reported as such. Shares are of the summed
iteration time over --repeats iterations, after one untimed warm-up iteration.

    python -m bench.ppo_iteration
    python -m bench.ppo_iteration --quick --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from bench.common import SIZES, add_common_args, print_table, setup
from rlhf_lite import ppo
from rlhf_lite.data import load_records
from rlhf_lite.model import GPT
from rlhf_lite.presets import PRESETS
from rlhf_lite.pretrain import token_stream
from rlhf_lite.reward import RewardModel
from rlhf_lite.tokenizer import load_tokenizer

RECIPES = ("ppo", "ppo_ptx")
ROLLOUT = ["generation", "policy forward, old log-probs", "reference forward",
           "reward model forward", "value forward, old values", "rollout rest (KL, GAE, decode)"]
UPDATE = ["policy forward, update", "value forward, update", "ptx forward",
          "backward, losses, clipping", "AdamW steps"]
PHASES = ROLLOUT + UPDATE + ["rest (metrics, prompt draw)"]


class PhaseTimer:
    """Seconds per label, from wrapped functions and forward hooks."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.hide_hooks = 0  # > 0 inside calls whose model forwards count as the call itself
        self._starts: dict[int, float] = {}

    def wrap(self, label: str, fn, hide_hooks: bool = False):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            self.hide_hooks += hide_hooks
            try:
                return fn(*args, **kwargs)
            finally:
                self.hide_hooks -= hide_hooks
                self.seconds[label] += time.perf_counter() - start
        return timed

    def watch(self, module: torch.nn.Module, rollout_label: str, update_label: str | None = None):
        """Time `module`'s forwards; under no_grad as rollout_label, else as update_label."""
        def pre(mod, args):
            self._starts[id(mod)] = time.perf_counter()

        def post(mod, args, output):
            start = self._starts.pop(id(mod))
            if not self.hide_hooks:
                label = update_label if torch.is_grad_enabled() else rollout_label
                self.seconds[label] += time.perf_counter() - start

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def build_trainer(recipe: str, seed: int = 0) -> ppo.PPOTrainer:
    """A PPOTrainer of the toy preset's `recipe`, on fresh models of the toy config."""
    preset = PRESETS["toy"]
    cfg = getattr(preset, recipe)
    tokenizer = load_tokenizer()
    torch.manual_seed(seed)
    sft = GPT(SIZES["toy"])
    stream = (token_stream([r["text"] for r in load_records("pretrain_train")], tokenizer)
              if cfg.ptx_coef > 0 else None)
    return ppo.PPOTrainer(cfg, sft, RewardModel(GPT(SIZES["toy"])), tokenizer,
                          load_records("prompts_train"), pretrain_stream=stream)


def profile_iterations(trainer: ppo.PPOTrainer, iterations: int) -> dict[str, float]:
    """Summed seconds per phase (PHASES) over `iterations` timed iterations, plus "total",
    "iteration median", "sampled tokens" and "response tokens"."""
    timer = PhaseTimer()
    tokens = {"sampled": 0, "response": 0}

    def generate(model, input_ids, *args, **kwargs):
        out = ppo_generate(model, input_ids, *args, **kwargs)
        tokens["sampled"] += out.shape[0] * (out.shape[1] - input_ids.shape[1])
        return out

    def rollout(prompts):
        r = trainer_rollout(prompts)
        tokens["response"] += int(r.mask.sum())
        return r

    ppo_generate, trainer_rollout = ppo.generate, trainer.rollout
    trainer.rollout = timer.wrap("rollout", rollout)
    trainer.update = timer.wrap("update", trainer.update)
    trainer.optimizer.step = timer.wrap("AdamW steps", trainer.optimizer.step)
    trainer.pretraining_loss = timer.wrap("ptx forward", trainer.pretraining_loss, hide_hooks=True)
    timer.watch(trainer.policy, "policy forward, old log-probs", "policy forward, update")
    timer.watch(trainer.reference, "reference forward")
    timer.watch(trainer.reward_model, "reward model forward")
    timer.watch(trainer.value_model, "value forward, old values", "value forward, update")
    ppo.generate = timer.wrap("generation", generate, hide_hooks=True)
    try:
        trainer.step()  # warm-up, not counted
        timer.seconds.clear()
        tokens.update(sampled=0, response=0)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            trainer.step()
            times.append(time.perf_counter() - start)
    finally:
        ppo.generate = ppo_generate
    s = timer.seconds
    s["rollout rest (KL, GAE, decode)"] = s["rollout"] - sum(s[p] for p in ROLLOUT[:-1])
    s["backward, losses, clipping"] = s["update"] - sum(
        s[p] for p in UPDATE if p != "backward, losses, clipping")
    s["total"] = sum(times)
    s["rest (metrics, prompt draw)"] = s["total"] - s["rollout"] - s["update"]
    return {**{p: s[p] for p in PHASES}, "total": s["total"],
            "iteration median": statistics.median(times),
            "sampled tokens": tokens["sampled"], "response tokens": tokens["response"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, repeats=5, sizes=None)
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help=f"comma-separated recipes of the toy preset, from {RECIPES}")
    args = parser.parse_args(argv)
    iterations = setup(args)
    results = {recipe: profile_iterations(build_trainer(recipe), iterations)
               for recipe in args.recipes.split(",")}
    rows = []
    for phase in PHASES:
        row = [phase]
        for r in results.values():
            row += [r[phase] / iterations, f"{100 * r[phase] / r['total']:.1f}%"]
        rows.append(row)
    rows.append(["iteration (median)"] + [v for r in results.values()
                                          for v in (r["iteration median"], "100%")])
    for kind in ("sampled", "response"):
        rows.append([f"{kind} tokens/s"] + [v for r in results.values()
                                            for v in (r[f"{kind} tokens"] / r["total"], "")])
    cfg = PRESETS["toy"].ppo
    print_table(f"PPO iteration of the toy preset ({cfg.batch_size} prompts, "
                f"{cfg.max_new_tokens} new tokens, {cfg.ppo_epochs} epochs of minibatches of "
                f"{cfg.minibatch_size}), {iterations} iterations",
                ["phase"] + [c for recipe in results for c in (f"{recipe} s/iter", "share")], rows)
    return results


if __name__ == "__main__":
    main()
