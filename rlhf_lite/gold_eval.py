"""Judging policies trained on real preference data offline, with a gold reward model.

Real preference data (HH-RLHF) has no gold labeler to ask about new answers, so a real-data
preset (`gpt2-hh`) is judged the way Gao et al. (2022, "Scaling laws for reward model
overoptimization", sec 2) judge: by a "gold" reward model that stands in for the humans. Its
"gold_rm" stage is trained on the gold half of the comparisons, which SFT, the proxy reward
model, PPO, DPO and RLOO never see (`preference_data.split_comparisons`), from the base model
rather than from SFT. PPO optimises the proxy; whether that helped is the gold RM's call.

Every policy the preset trains is sampled `samples` times on the held-out prompts (no stage
trained on them) and measured by:

* the mean gold RM score and the win rate against SFT samples drawn with other seeds (one
  comparison per sample: a higher gold score wins, a tie counts 1/2), with a 95% interval
  from a bootstrap over prompts (`evaluation.bootstrap_interval`);
* the mean proxy RM score: rising while the gold score falls is over-optimisation;
* KL to SFT per response (`evaluation.kl_to_reference`), the mean response length in words
  and the share of responses that ended with eos: a reward model may simply prefer longer
  answers, and PPO can buy a score with length.

Both reward models' accuracies are reported on their own validation pairs and on the held-out
prompts' pairs, which neither saw. `pipeline.run` calls `evaluate_preset` and
`report_markdown` here for a preset with a gold_rm recipe.
"""
from __future__ import annotations

from dataclasses import asdict

import torch

from . import artifacts
from .evaluation import bootstrap_interval, kl_to_reference
from .generation import complete
from .preference_data import PreferenceData, prompt_records, split_comparisons
from .presets import get_preset
from .reward import pairwise_accuracy, score_responses
from .stages import models


def preference_data(preset) -> PreferenceData:
    """The one `PreferenceData` every data-reading recipe of `preset` names (a ValueError if
    they differ: then the gold half of one could be the training half of another)."""
    recipes = [preset.recipe(s) for s in artifacts.stages_of(preset)]
    sources = {r.data for r in recipes if hasattr(r, "data")}
    if len(sources) != 1:
        raise ValueError(f"preset {preset.name!r}: its recipes must name one PreferenceData, "
                         f"found {len(sources)}: {sources}")
    return sources.pop()


def _scores(rm, tokenizer, prompts: list[dict], completions) -> torch.Tensor:
    return score_responses(rm, tokenizer, [p["prompt"] for p in prompts],
                           [c.text for c in completions], [c.terminated for c in completions])


def evaluate_preset(preset: str, samples: int = 3, seed: int = 0) -> dict:
    """Sample each policy of the preset on the held-out prompts and judge it with the gold RM
    (module docstring). Returns plain numbers (JSON-ready); "tables" holds each model's
    samples and scores (pandas DataFrames, dropped before results.json is written)."""
    import pandas as pd  # in the function: importing rlhf_lite stays light

    p = get_preset(preset)
    tokenizer, data = p.load_tokenizer(), preference_data(p)
    parts = split_comparisons(data, tokenizer)
    heldout = prompt_records(parts["heldout"])
    prompts = heldout * samples
    groups = [q["id"] for q in prompts]
    gold, rm, sft = (artifacts.load_model(s, p) for s in ("gold_rm", "rm", "sft"))

    def sample(model, offset: int):  # as long as PPO's rollouts may be
        return sum((complete(model, tokenizer, heldout, max_new_tokens=p.ppo.max_new_tokens,
                             seed=seed + offset + s) for s in range(samples)), [])

    reference_gold = _scores(gold, tokenizer, prompts, sample(sft, 1000))  # other seeds
    results = {"preset": preset, "judge": "gold reward model", "data": asdict(data),
               "split_sizes": {name: len(r) for name, r in parts.items()},
               "n_prompts": len(heldout), "samples_per_prompt": samples,
               "n_comparisons": len(prompts), "params": {}, "mean_gold_rm": {},
               "win_rate_vs_sft": {}, "win_rate_ci": {}, "mean_rm": {}, "kl_to_sft": {},
               "mean_length": {}, "terminated": {}, "tables": {}}
    trained = artifacts.stages_of(p)
    for name, stage in models().items():
        if stage.name not in trained or stage.prompted:  # the base model is GPT-2, no policy
            continue
        model = artifacts.load_model(stage.name, p)
        completions = sample(model, 0)
        gold_scores = _scores(gold, tokenizer, prompts, completions)
        wins = ((gold_scores > reference_gold).double()
                + 0.5 * (gold_scores == reference_gold).double()).tolist()
        lengths = [len(c.text.split()) for c in completions]  # words: the same for any tokenizer
        results["params"][name] = sum(t.numel() for t in model.parameters())
        results["mean_gold_rm"][name] = gold_scores.mean().item()
        results["win_rate_vs_sft"][name] = sum(wins) / len(wins)
        results["win_rate_ci"][name] = list(bootstrap_interval(wins, groups, seed))
        results["mean_rm"][name] = _scores(rm, tokenizer, prompts, completions).mean().item()
        results["kl_to_sft"][name] = kl_to_reference(model, sft, tokenizer, prompts, completions)
        results["mean_length"][name] = sum(lengths) / len(lengths)
        results["terminated"][name] = sum(c.terminated for c in completions) / len(completions)
        results["tables"][name] = pd.DataFrame({
            "prompt": [q["prompt"] for q in prompts], "response": [c.text for c in completions],
            "terminated": [c.terminated for c in completions], "gold_rm": gold_scores.tolist(),
            "win": wins})
    # the comparisons each RM learned from (the proxy may take fewer: max_pairs)
    results["rm_train_pairs"] = {"RM": len(parts["train"][: p.rm.max_pairs]),
                                 "gold RM": len(parts["gold_train"][: p.gold_rm.max_pairs])}
    results["rm_accuracy"] = pairwise_accuracy(rm, tokenizer, parts["validation"])
    results["gold_rm_accuracy"] = pairwise_accuracy(gold, tokenizer, parts["gold_validation"])
    results["heldout_accuracy"] = {"RM": pairwise_accuracy(rm, tokenizer, parts["heldout"]),
                                   "gold RM": pairwise_accuracy(gold, tokenizer, parts["heldout"])}
    return results


def report_markdown(results: dict) -> str:
    """The results as a Markdown report: one table of policies, then the reward models."""
    sizes, pairs = results["split_sizes"], results["rm_train_pairs"]
    lines = [f"# Pipeline results: preset `{results['preset']}`", "",
             f"{results['n_prompts']} held-out prompts x {results['samples_per_prompt']} samples "
             f"= {results['n_comparisons']} responses per model, judged by a gold reward model "
             f"trained on {pairs['gold RM']:,} comparisons that no policy or proxy RM saw "
             f"(data: `{results['data']['source']}`).", "",
             "| model | parameters | mean gold RM | win rate vs SFT by gold RM (95% CI) "
             "| mean proxy RM | KL to SFT (nats) | length (words) | ended with eos |",
             "|---|---|---|---|---|---|---|---|"]
    for name in results["win_rate_vs_sft"]:
        low, high = results["win_rate_ci"][name]
        lines.append(f"| {name} | {results['params'][name]:,} | "
                     f"{results['mean_gold_rm'][name]:.3f} | "
                     f"{results['win_rate_vs_sft'][name]:.1%} ({low:.1%}-{high:.1%}) | "
                     f"{results['mean_rm'][name]:.3f} | {results['kl_to_sft'][name]:.2f} | "
                     f"{results['mean_length'][name]:.1f} | {results['terminated'][name]:.0%} |")
    held = results["heldout_accuracy"]
    lines += ["", f"Proxy RM accuracy on its validation comparisons: {results['rm_accuracy']:.1%} "
              f"(trained on {pairs['RM']:,}); gold RM on its own: "
              f"{results['gold_rm_accuracy']:.1%}; on the {sizes['heldout']:,} comparisons of "
              f"the held-out prompts, which neither saw: proxy {held['RM']:.1%}, gold "
              f"{held['gold RM']:.1%}. Win rates are against SFT samples drawn with other seeds "
              "(so SFT itself scores about 50%); a tie counts 1/2."]
    return "\n".join(lines) + "\n"
