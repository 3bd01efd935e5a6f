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
  comparison per sample: a higher gold score wins, a tie counts 1/2; `GoldRMJudge`), with a
  95% interval from a bootstrap over prompts (`judges.policy_row`, as for the toy world);
* the mean proxy RM score ("rm_score"): rising while the gold score falls is
  over-optimisation;
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

from .. import artifacts
from ..evaluation import kl_to_reference
from ..generation import Completion
from ..judges import by_column, markdown_table, policy_row, sample
from ..presets import get_preset
from ..reward import pairwise_accuracy, score_responses
from ..stages import models
from .preference_data import PARTS, prompt_records, too_long, too_long_note


def _scores(rm, tokenizer, prompts: list[dict], completions: list[Completion]) -> torch.Tensor:
    return score_responses(rm, tokenizer, [p["prompt"] for p in prompts],
                           [c.text for c in completions], [c.terminated for c in completions])


class GoldRMJudge:
    """A gold reward model as the judge (`judges.Judge`): a completion wins against the
    reference completion of its prompt when the gold RM scores it higher (a tie counts 1/2)."""

    def __init__(self, gold_rm, tokenizer, prompts: list[dict], reference: list[Completion]):
        self.gold_rm, self.tokenizer = gold_rm, tokenizer
        self.reference_scores = _scores(gold_rm, tokenizer, prompts, reference)

    def judge(self, prompts: list[dict], completions: list[Completion]) -> tuple:
        import pandas as pd  # in the function: importing rlhf_lite stays light

        scores = _scores(self.gold_rm, self.tokenizer, prompts, completions)
        wins = ((scores > self.reference_scores).double()
                + 0.5 * (scores == self.reference_scores).double()).tolist()
        lengths = [len(c.text.split()) for c in completions]  # words: the same for any tokenizer
        table = pd.DataFrame({"prompt": [q["prompt"] for q in prompts],
                              "response": [c.text for c in completions],
                              "terminated": [c.terminated for c in completions],
                              "gold_rm": scores.tolist(), "win": wins})
        return table, {"mean_gold_rm": scores.mean().item(),
                       "mean_length": sum(lengths) / len(lengths),
                       "terminated": sum(c.terminated for c in completions) / len(completions)}


def evaluate_preset(preset: str, samples: int = 3, seed: int = 0) -> dict:
    """Sample each policy of the preset on the held-out prompts and judge it with the gold RM
    (module docstring). Returns plain numbers (JSON-ready); "tables" holds each model's
    samples and scores (pandas DataFrames, dropped before results.json is written)."""
    p = get_preset(preset)
    tokenizer = p.load_tokenizer()
    parts = {name: p.data.part(name, tokenizer) for name in PARTS}
    heldout = prompt_records(parts["heldout"])
    prompts = heldout * samples
    gold, rm, sft = (artifacts.load_model(s, p) for s in ("gold_rm", "rm", "sft"))
    length = p.ppo.max_new_tokens  # as long as PPO's rollouts may be
    judge = GoldRMJudge(gold, tokenizer, prompts,  # SFT samples with other seeds
                        sample(sft, tokenizer, heldout, samples, seed + 1000,
                               max_new_tokens=length))
    rows = {}
    trained = artifacts.stages_of(p)
    for name, stage in models().items():
        if stage.name not in trained or stage.prompted:  # the base model is GPT-2, no policy
            continue
        model = artifacts.load_model(stage.name, p)
        completions = sample(model, tokenizer, heldout, samples, seed, max_new_tokens=length)
        rows[name] = policy_row(judge, prompts, completions, rm, tokenizer,
                                sum(t.numel() for t in model.parameters()),
                                kl_to_reference(model, sft, tokenizer, prompts, completions),
                                seed)
    return {"preset": preset, "judge": "gold reward model", "data": asdict(p.data.dataset),
            "split_sizes": {name: len(r) for name, r in parts.items()},
            # comparisons left out of each part as longer than the data's max_tokens
            "too_long": too_long(p.data.dataset, tokenizer),
            "n_prompts": len(heldout), "samples_per_prompt": samples,
            "n_comparisons": len(prompts), **by_column(rows),
            # the comparisons each RM learned from (the proxy may take fewer: max_pairs)
            "rm_train_pairs": {"RM": len(parts["train"][: p.rm.max_pairs]),
                               "gold RM": len(parts["gold_train"][: p.gold_rm.max_pairs])},
            "rm_accuracy": pairwise_accuracy(rm, tokenizer, parts["validation"]),
            "gold_rm_accuracy": pairwise_accuracy(gold, tokenizer, parts["gold_validation"]),
            "heldout_accuracy": {"RM": pairwise_accuracy(rm, tokenizer, parts["heldout"]),
                                 "gold RM": pairwise_accuracy(gold, tokenizer, parts["heldout"])}}


def report_markdown(results: dict) -> str:
    """The results as a Markdown report: one table of policies, then the reward models."""
    sizes, pairs = results["split_sizes"], results["rm_train_pairs"]
    lines = [f"# Pipeline results: preset `{results['preset']}`", "",
             f"{results['n_prompts']} held-out prompts x {results['samples_per_prompt']} samples "
             f"= {results['n_comparisons']} responses per model, judged by a gold reward model "
             f"trained on {pairs['gold RM']:,} comparisons that no policy or proxy RM saw "
             f"(data: `{results['data']['source']}`).", "",
             too_long_note(results["too_long"], sizes, results["data"]["max_tokens"]) + ".", "",
             *markdown_table(results, {
                 "parameters": "{params:,}", "mean gold RM": "{mean_gold_rm:.3f}",
                 "win rate vs SFT by gold RM (95% CI)":
                     "{win_rate_vs_sft:.1%} ({win_rate_ci[0]:.1%}-{win_rate_ci[1]:.1%})",
                 "mean proxy RM": "{rm_score:.3f}", "KL to SFT (nats)": "{kl_to_sft:.2f}",
                 "length (words)": "{mean_length:.1f}", "ended with eos": "{terminated:.0%}"})]
    held = results["heldout_accuracy"]
    lines += ["", f"Proxy RM accuracy on its validation comparisons: {results['rm_accuracy']:.1%} "
              f"(trained on {pairs['RM']:,}); gold RM on its own: "
              f"{results['gold_rm_accuracy']:.1%}; on the {sizes['heldout']:,} comparisons of "
              f"the held-out prompts, which neither saw: proxy {held['RM']:.1%}, gold "
              f"{held['gold RM']:.1%}. Win rates are against SFT samples drawn with other seeds "
              "(so SFT itself scores about 50%); a tie counts 1/2."]
    return "\n".join(lines) + "\n"
