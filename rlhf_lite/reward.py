"""Stage 2: the reward model (RM), learned from rankings of K completions.

InstructGPT (Ouyang et al. 2022, sec 3.5 "Reward modeling"):

* The RM is the SFT model with its unembedding replaced by a scalar head: it reads a prompt
  and a response and outputs one number r(x, y). Here the head reads the final hidden state
  of the last real token (the eos of a finished response).
* Labelers rank K = 4..9 completions of a prompt; a ranking implies C(K, 2) comparisons.
  For a pair where y_w was preferred to y_l, the Bradley-Terry model says
  P(y_w > y_l) = sigmoid(r(x, y_w) - r(x, y_l)), and the loss is its negative log-likelihood,
  -log sigmoid(r_w - r_l).
* All C(K, 2) pairs of a prompt go into the same batch element: the K completions are scored
  in one forward (K forwards instead of 2 C(K, 2)), and the RM never sees one completion in
  many separate steps, which made it overfit in a single epoch. The paper trains one epoch;
  the toy preset two (after one, its validation accuracy is still rising).
* A reward is only defined up to a constant (the loss sees differences), so after training
  the head's bias is shifted until the labelers' demonstrations score 0 on average.

Input layout: format_prompt(prompt) + response tokens + eos if the response ended,
RIGHT-padded (`batching.encode_responses`; the RM ignores its labels). The score is read at
the last 1 of the attention mask, so left-padded rows (as PPO's rollouts are) give the same
score.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batching import encode_responses, epoch_batch, score_distinct, steps_per_epoch
from .checkpoints import Checkpoint, fingerprint
from .comparisons import accuracy_from_scores, check_ranking, flatten_rankings, save_rankings
from .datasource import DataSource, stage_recipe
from .model import GPT
from .runs import model_checkpoint, saved_with
from .training import History, TrainConfig, set_by_epochs, train
from .utils import check_config, integer, nested, number, rule


@dataclass
class RewardConfig:
    # completions ranked per prompt (paper: K = 4..9); a ranking of one has no pair to learn from
    k: int = rule(4, integer(2))
    # rankings per training prompt, each of K fresh samples from the SFT policy
    rounds: int = rule(16, integer(1))
    # rankings per validation prompt (held-out accuracy and its ceiling)
    val_rounds: int = rule(16, integer(1))
    # sampling temperature of the SFT policy
    temperature: float = rule(1.0, number(0, low_open=True))
    # response length cap when sampling; with 0 every response is empty and the RM trains on
    # nothing at 50% accuracy
    max_new_tokens: int = rule(24, integer(1))
    # seeds the training samples; validation samples use sample_seed + 1
    sample_seed: int = rule(0, integer(0))
    labeler_seed: int = rule(0, integer(0))  # the labeler who ranks the training completions
    # the labeler who ranks the validation completions
    val_labeler_seed: int = rule(1, integer(0))
    # a second labeler re-ranking them: the agreement ceiling
    ceiling_labeler_seed: int = rule(2, integer(0))
    # rankings per step; all C(K, 2) pairs of a ranking share its step
    batch_size: int = rule(16, integer(1))
    # passes over the rankings (the paper: one, more overfit its 6B RM; bench.rm_levers: a
    # second adds nothing measurable here)
    epochs: int = rule(1, integer(1))
    train: TrainConfig = nested(lambda: TrainConfig(
        max_steps=None,  # train_reward_model counts them: epochs * steps_per_epoch(rankings)
        lr=3e-4, warmup_steps=10, eval_interval=50, desc="rm"), set_by_epochs())

    def __post_init__(self):
        check_config(self)

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- the model
def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 1/0 mask -> (B,) column of each row's last 1 (works for left and right padding)."""
    T = attention_mask.shape[1]
    return T - 1 - attention_mask.flip(-1).argmax(dim=-1)  # argmax finds the first max


class RewardModel(nn.Module):
    """A GPT backbone and a scalar head on the hidden state of each row's last real token."""

    def __init__(self, backbone: GPT):
        super().__init__()
        self.backbone = backbone  # initialised from the SFT model (the paper: a 6B SFT model)
        self.head = nn.Linear(backbone.config.n_embd, 1)
        # zero init: every score starts at 0, so the first loss is exactly log 2
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        """The backbone's GPTConfig (what a checkpoint needs to rebuild the model)."""
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores (B,) of sequences input_ids (B, T) with attention_mask (B, T)."""
        h = self.backbone.hidden_states(input_ids, attention_mask)  # (B, T, C)
        last = h[torch.arange(len(h)), last_token_index(attention_mask)]  # (B, C)
        return self.head(last).squeeze(-1)  # (B,)


class RewardEnsemble(nn.Module):
    """Several reward models read as one (Coste et al. 2023, "Reward Model Ensembles Help
    Mitigate Overoptimization"): forward(input_ids, attention_mask) -> (B,) like a RewardModel,
    so PPO (`ppo.PPOTrainer`), online DPO or best-of-n take it in its place.

    The members (the same rankings, different seeds) disagree most where the policy has
    wandered off their training data, which is where a single RM is exploited. `combine`:
      "mean"  the mean of the members' scores,
      "min"   the worst case over the members (WCO: worst-case optimisation),
      "uwo"   mean - penalty * variance over the members (uncertainty-weighted optimisation;
              the variance is the population one, 1/M sum (r_m - mean)^2).
    The members must be comparable in scale: each of `train_reward_model` is normalised so
    the demonstrations score 0 on average (`normalize_to_demonstrations`), which fixes each
    member's offset (a Bradley-Terry reward has none of its own); their spreads are what
    they learned. The members are held, not copied.

    Under GAE, PPO's value model starts from `backbone` and `head`: those of the first member
    (`ppo.ValueModel`).
    """

    combines = ("mean", "min", "uwo")

    def __init__(self, members: list[RewardModel], combine: str = "mean",
                 penalty: float | None = None):
        super().__init__()
        if not members:
            raise ValueError("RewardEnsemble: members is empty: give at least one RewardModel")
        if combine not in self.combines:
            raise ValueError(f"RewardEnsemble: combine must be one of {self.combines}, got "
                             f"{combine!r}")
        if (combine == "uwo") != (penalty is not None):
            raise ValueError(f"RewardEnsemble: penalty is the weight of the variance of combine="
                             f"'uwo' (required there, meaningless else); got combine={combine!r}, "
                             f"penalty={penalty!r}")
        if penalty is not None and not penalty >= 0:
            raise ValueError(f"RewardEnsemble: penalty must be >= 0, got {penalty!r}")
        self.members = nn.ModuleList(members)
        self.combine, self.penalty = combine, penalty
        # the combination is part of what this reward is: kept in the state dict, so that a
        # fingerprint (`checkpoints.fingerprint`, a saved run's key) tells a mean from a worst
        # case, or one penalty from another, over the same members
        self.register_buffer("rule", torch.tensor([float(self.combines.index(combine)),
                                                   float(penalty or 0.0)]))

    @property
    def config(self):
        """The first member's GPTConfig."""
        return self.members[0].config

    @property
    def backbone(self) -> GPT:
        """The first member's backbone (where PPO's value model starts)."""
        return self.members[0].backbone

    @property
    def head(self) -> nn.Linear:
        """The first member's head (where PPO's value model starts)."""
        return self.members[0].head

    def member_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                      ) -> torch.Tensor:
        """Each member's scores (M, B) of sequences input_ids (B, T)."""
        return torch.stack([m(input_ids, attention_mask) for m in self.members])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The combined scores (B,)."""
        return combine_member_scores(self.member_scores(input_ids, attention_mask),
                                     self.combine, self.penalty)


def combine_member_scores(scores: torch.Tensor, combine: str, penalty: float | None = None
                          ) -> torch.Tensor:
    """Members' scores (M, B) -> one score (B,): "mean", "min" (the worst case) or "uwo" (the
    mean minus penalty * the members' population variance), as `RewardEnsemble` combines."""
    if combine == "min":
        return scores.min(0).values
    if combine == "uwo":
        return scores.mean(0) - penalty * scores.var(0, unbiased=False)
    return scores.mean(0)


def member_config(cfg: RewardConfig, seed: int) -> RewardConfig:
    """A member of an ensemble (notebook 11): the rm stage's recipe `cfg` with training seed
    `seed`, evaluated at the end only (its curves are not drawn)."""
    return replace(cfg, train=replace(cfg.train, seed=seed, eval_interval=0))


def uwo_penalty(members: list[RewardModel], tokenizer, rankings: list[dict]
                ) -> tuple[int, float, float]:
    """UWO's lambda from SFT's answers (the responses of `rankings`), no gold judge: the value
    at which its penalty, lambda * the members' variance, equals the worst case's, mean - min,
    on average, rounded (at least 1). Returns (lambda, the worst case's mean penalty, the mean
    variance)."""
    texts = flatten_rankings(rankings)[:3]  # prompts, responses, terminated
    scores = torch.stack([score_responses(m, tokenizer, *texts) for m in members])  # (M, N)
    mean = scores.mean(0)
    worst = (mean - scores.min(0).values).mean().item()
    variance = ((scores - mean) ** 2).mean(0).mean().item()
    if variance == 0:
        raise ValueError("uwo_penalty: the members agree on every answer, so UWO is their mean "
                         "whatever its lambda: give members that differ (other seeds)")
    return max(1, round(worst / variance)), worst, variance


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected) over pairs.

    logsigmoid is computed stably: log(sigmoid(d)) would round sigmoid to 0 for d < -100
    and return -inf.
    """
    return -F.logsigmoid(r_chosen - r_rejected).mean()


# ----------------------------------------------------------------------------- batching
def collate_rankings(tokenizer, rankings: list[dict]) -> dict[str, torch.Tensor]:
    """A training batch: input_ids, attention_mask (M, T) (and labels, unused) and chosen,
    rejected (P,).

    All K responses of a ranking are scored in one forward, and all its C(K, 2) pairs are in
    the batch of its ranking (see `flatten_rankings`).
    """
    prompts, responses, terminated, chosen, rejected = flatten_rankings(rankings)
    return {**encode_responses(tokenizer, prompts, responses, terminated),
            "chosen": chosen, "rejected": rejected}


def rm_loss(rm: RewardModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Bradley-Terry loss averaged over all pairs of a `collate_rankings` batch."""
    scores = rm(batch["input_ids"], batch["attention_mask"])  # (M,)
    return bradley_terry_loss(scores[batch["chosen"]], scores[batch["rejected"]])


# ----------------------------------------------------------------------------- evaluation
def score_responses(rm: RewardModel, tokenizer, prompts: list[str], responses: list[str],
                    terminated: list[bool], batch_size: int = 256) -> torch.Tensor:
    """RM scores (N,), without gradients, in eval mode. Each distinct (prompt, response,
    terminated) is scored once (`batching.score_distinct`), so identical responses get exactly
    equal scores (a tie), whatever batch row they would have sat in."""
    return score_distinct(rm, lambda m, batch: m(batch["input_ids"], batch["attention_mask"]),
                          tokenizer, prompts, responses, terminated, batch_size)


def pair_scores(rm: RewardModel, tokenizer,
                rankings: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the chosen and rejected response of every pair of `rankings`: two (P,) tensors."""
    prompts, responses, terminated, chosen, rejected = flatten_rankings(rankings)
    scores = score_responses(rm, tokenizer, prompts, responses, terminated)  # (M,)
    return scores[chosen], scores[rejected]


def pairwise_accuracy(rm: RewardModel, tokenizer, rankings: list[dict]) -> float:
    """Share of the rankings' pairs whose preferred response the RM scores higher (ties 1/2)."""
    return accuracy_from_scores(*pair_scores(rm, tokenizer, rankings))


def normalize_to_demonstrations(rm: RewardModel, tokenizer, demos: list[dict]) -> float:
    """Shift the head's bias so the demonstrations (prompt + response + eos) score 0 on
    average (paper sec 3.5); returns the shift. Pairwise losses and accuracies are unchanged."""
    scores = score_responses(rm, tokenizer, [d["prompt"] for d in demos],
                             [d["response"] for d in demos], [True] * len(demos))
    shift = -scores.mean().item()
    with torch.no_grad():
        rm.head.bias += shift
    return shift


# ----------------------------------------------------------------------------- training
def loaded_run(ckpt: Checkpoint, cfg: RewardConfig, sft_model: GPT, *args, **kwargs
               ) -> tuple[RewardModel, History]:
    """The (rm, history) of a saved `train_reward_model` run (`runs.model_checkpoint`): an RM
    on a copy of `sft_model`, given the trained (normalised) weights."""
    rm = RewardModel(copy.deepcopy(sft_model))
    rm.load_state_dict(ckpt.model)
    return rm.eval(), History.from_dict(ckpt.history)


@saved_with(model_checkpoint, loaded_run)
def train_reward_model(cfg: RewardConfig, sft_model: GPT, tokenizer, train_rankings: list[dict],
                       val_rankings: list[dict], demos: list[dict], checkpoint_path=None,
                       start_role: str = "sft", recipe: dict | None = None
                       ) -> tuple[RewardModel, History]:
    """Train an RM initialised from a copy of `sft_model`, normalise it; return it and its history.

    One step = cfg.batch_size rankings; cfg.epochs passes over `train_rankings`. History eval
    metrics: "val_loss" and "val_accuracy" on `val_rankings`. The bias is normalised after
    the last step, before the one final save (the checkpoint's extra["bias_shift"] holds the
    shift applied). `start_role` names the stage `sft_model` comes from in the checkpoint's
    inputs (the gold RM starts from "base"), `recipe` what it records as its recipe (default:
    `cfg`; `datasource.stage_recipe`). Saveable as a run (`runs.train_side_by_side(saved_as=
    ...)`: RMs of several seeds for a `RewardEnsemble`).
    """
    for name, rankings in (("train", train_rankings), ("validation", val_rankings)):
        for i, record in enumerate(rankings):
            check_ranking(record, f"{name} ranking {i}")
    rm = RewardModel(copy.deepcopy(sft_model))
    n = len(train_rankings)
    train_cfg = replace(cfg.train, max_steps=cfg.epochs * steps_per_epoch(n, cfg.batch_size))

    def get_batch(step: int) -> list[dict]:
        idx = epoch_batch(n, cfg.batch_size, step, cfg.train.seed)
        return [train_rankings[i] for i in idx.tolist()]

    def loss_fn(m: RewardModel, rankings: list[dict]) -> tuple[torch.Tensor, int]:
        batch = collate_rankings(tokenizer, rankings)
        return rm_loss(m, batch), len(batch["chosen"])  # the mean over the rankings' pairs

    def eval_fn(m: RewardModel) -> dict[str, float]:
        chosen, rejected = pair_scores(m, tokenizer, val_rankings)
        return {"val_loss": bradley_terry_loss(chosen, rejected).item(),
                "val_accuracy": accuracy_from_scores(chosen, rejected)}

    def finalize(m: RewardModel) -> dict[str, float]:
        return {"bias_shift": normalize_to_demonstrations(m, tokenizer, demos)}

    history = train(rm, loss_fn, get_batch, train_cfg, eval_fn=eval_fn, finalize=finalize,
                    checkpoint_path=checkpoint_path,
                    meta={"model_config": asdict(sft_model.config),
                          "recipe": recipe or cfg.as_dict(),
                          "inputs": {start_role: fingerprint(sft_model)}})
    rm.eval()
    return rm, history


def build(cfg: RewardConfig, data: DataSource, tokenizer, inputs: dict, path) -> None:
    """The "rm" stage (rlhf_lite.stages): get the rankings of the train and validation prompts
    from the data source (the toy world samples completions of the SFT policy and ranks them),
    save them beside the checkpoint, then train the RM into `path`.

    Rankings of train prompts train it; rankings of validation prompts measure its accuracy
    (the held-out prompts stay unseen for the final evaluation). Sampling is seeded, so a
    resumed build re-creates the same rankings.
    """
    rankings = {split: data.rankings(split, tokenizer, inputs["sft"], cfg)
                for split in ("train", "validation")}
    save_rankings(rankings, Path(path).parent)  # DPO trains on them, the evaluation validates
    train_reward_model(cfg, inputs["sft"], tokenizer, rankings["train"], rankings["validation"],
                       data.normalizing_demonstrations(rankings["train"]), checkpoint_path=path,
                       recipe=stage_recipe(cfg, data))
