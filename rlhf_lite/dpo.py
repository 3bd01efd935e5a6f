"""Stage 3, without RL: Direct Preference Optimization (DPO) on the reward model's rankings.

Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward
Model" (sec 4; the loss is their eq. 7). Derivation, from the objective PPO maximises
(notebook 6), per prompt x:

    max_pi  E_{y ~ pi}[r(x, y)] - beta KL(pi(.|x) || pi_ref(.|x))
          = -beta E_{y ~ pi}[log pi(y|x) - log pi_ref(y|x) - r(x, y) / beta]
          = -beta KL(pi(.|x) || pi*(.|x)) + beta log Z(x),

    pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x),
    Z(x) = sum_y pi_ref(y|x) exp(r(x, y) / beta)   (normalises pi* to a distribution).

Z(x) does not depend on pi and a KL is >= 0, 0 only at pi*: pi* is the optimum. Solved for
the reward, r(x, y) = beta log(pi*(y|x) / pi_ref(y|x)) + beta log Z(x). The Bradley-Terry
model of the labelers (rlhf_lite.reward) only sees the difference of the rewards of two
responses to the same prompt, so Z(x) cancels; writing the policy pi_theta for pi* and
taking the negative log-likelihood of the comparisons (y_w preferred to y_l):

    loss = -log sigmoid(beta * ((log pi - log pi_ref)(y_w) - (log pi - log pi_ref)(y_l)))

No reward model, no sampling, no value model: one supervised loss. The policy is its own
reward model, with the implicit reward r_hat(x, y) = beta (log pi(y|x) - log pi_ref(y|x))
(the true one up to beta log Z(x), equal for all responses to x, so it ranks them). The
gradient is -beta sigmoid(r_hat(y_l) - r_hat(y_w)) (grad log pi(y_w) - grad log pi(y_l)):
pairs the implicit reward orders wrongly weigh most.

Here:
- The data are the "rm" stage's rankings (K samples of the SFT policy each, ranked by the
  labeler), with all C(K, 2) pairs of a ranking in its ranking's batch, as the RM trains;
  the samples come from pi_ref = SFT, the setting the paper's derivation assumes.
- log pi(y|x) is the sum of the log-probs of the response tokens, and of eos when the
  response ended (prompt and pad masked), under the distribution the policy samples from:
  temperature 1 with pad and unk suppressed (`generation.sequence_logprobs`, as PPO and
  `evaluation.kl_to_reference` compute them).
- The reference is a frozen copy of the SFT model; its log-probs are constants of the loss,
  computed once before training. Dropout is off in both models (a log-ratio that moves
  because of dropout is noise).

Online DPO (`DPOConfig.pairs = "online"`; Guo et al. 2024, "Direct Language Model Alignment
from Online AI Feedback"; Xu et al. 2024, Tang et al. 2024): the fixed rankings are samples of
pi_ref, and as the policy moves away from it they say less and less about the responses it
now writes. Online, every step samples 2 responses per prompt from the current policy and a
reward model picks the chosen one (`online_pairs`); the loss is the same, against the same
frozen reference, whose log-probs are now computed each step. The RM is what PPO maximises,
so this is the offline loss on PPO's data source.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .batching import IGNORE_INDEX, encode_responses, epoch_batch, score_distinct, steps_per_epoch
from .checkpoints import Checkpoint, fingerprint
from .comparisons import (
    accuracy_from_scores,
    check_ranking,
    flatten_rankings,
    rankings_file,
    read_rankings,
)
from .data import file_sha256
from .generation import complete, sequence_logprobs
from .model import GPT, without_dropout
from .reward import score_responses
from .runs import model_checkpoint, saved_with, train_side_by_side
from .tokenizer import never_generated
from .training import History, TrainConfig, set_by_epochs, train
from .utils import check_config, derive_seed, integer, nested, number, one_of, rule


@dataclass
class DPOConfig:
    # the KL coefficient of the objective DPO solves (paper: 0.1); > 0: at 0 every implicit
    # reward is 0 and the loss is log 2 whatever the policy
    beta: float = rule(0.1, number(0, low_open=True))
    # rankings per step, all C(K, 2) pairs of a ranking in its step (online: prompts per step,
    # full batches only: `train_steps`)
    batch_size: int = rule(16, integer(1))
    # passes over the rankings (as the RM: one; online: over the prompts)
    epochs: int = rule(1, integer(1))
    # where the pairs come from: "rankings", the fixed rankings of SFT samples (offline), or
    # "online", 2 samples per prompt of the current policy each step, ranked by a reward model
    pairs: str = rule("rankings", one_of(("rankings", "online")))
    # online: response length cap of the policy's samples
    max_new_tokens: int = rule(24, integer(1))
    train: TrainConfig = nested(lambda: TrainConfig(
        max_steps=None,  # train_dpo counts them: `train_steps`
        # a starting point, not tuned on the full toy run; no weight decay: it would pull the
        # weights towards 0, not towards the reference (PPO's policy has none either)
        lr=1e-4, warmup_steps=10, weight_decay=0.0, eval_interval=50, desc="dpo"),
        set_by_epochs())

    def __post_init__(self):
        check_config(self)

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- log-probs
def log_likelihoods(model, batch: dict[str, torch.Tensor], suppress_token_ids=()) -> torch.Tensor:
    """log pi(y|x) (B,): the summed log-probs (`generation.sequence_logprobs`) of the labelled
    tokens (response and eos) of a `batching.encode_responses` batch."""
    logp, _ = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"],
                                suppress_token_ids=suppress_token_ids)  # (B, T-1)
    scored = batch["labels"][:, 1:] != IGNORE_INDEX  # (B, T-1) position t scores token t+1
    return torch.where(scored, logp, torch.zeros_like(logp)).sum(-1)  # (B,)


def logprobs_of_responses(model, tokenizer, prompts: list[str], responses: list[str],
                          terminated: list[bool], batch_size: int = 64) -> torch.Tensor:
    """log pi(y|x) (N,) without gradients, in eval mode, each distinct (prompt, response,
    terminated) scored once (`batching.score_distinct`: identical responses tie, as in
    `reward.score_responses`). `batch_size` rows at a time: their logits take
    batch_size x T x vocabulary floats."""
    suppressed = never_generated(tokenizer)
    return score_distinct(model, lambda m, batch: log_likelihoods(m, batch, suppressed),
                          tokenizer, prompts, responses, terminated, batch_size)


def rankings_logprobs(model, tokenizer, rankings: list[dict]) -> torch.Tensor:
    """log pi(y|x) (M,) of every response of `rankings`, in `comparisons.flatten_rankings` order."""
    prompts, responses, terminated, _, _ = flatten_rankings(rankings)
    return logprobs_of_responses(model, tokenizer, prompts, responses, terminated)


# ----------------------------------------------------------------------------- the loss
def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over pairs of -log sigmoid(beta * ((pi - ref)(y_w) - (pi - ref)(y_l))), all (P,)
    sequence log-probs; logsigmoid keeps it finite for any margin (see bradley_terry_loss).

    Returns (loss, stats) with stats of the implicit rewards r_hat = beta (log pi - log pi_ref):
    reward_accuracy (share of pairs with r_hat(y_w) > r_hat(y_l), ties 1/2), reward_margin
    (mean r_hat(y_w) - r_hat(y_l)), chosen_reward and rejected_reward (means).
    """
    chosen = beta * (policy_chosen - ref_chosen)  # (P,) r_hat(x, y_w)
    rejected = beta * (policy_rejected - ref_rejected)  # (P,) r_hat(x, y_l)
    loss = -F.logsigmoid(chosen - rejected).mean()
    with torch.no_grad():
        stats = {"reward_accuracy": accuracy_from_scores(chosen, rejected),
                 "reward_margin": (chosen - rejected).mean().item(),
                 "chosen_reward": chosen.mean().item(), "rejected_reward": rejected.mean().item()}
    return loss, stats


def implicit_rewards(policy, reference, tokenizer, rankings: list[dict], beta: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """r_hat of the chosen and rejected response of every pair of `rankings`: two (P,) tensors."""
    *_, chosen, rejected = flatten_rankings(rankings)
    r_hat = beta * (rankings_logprobs(policy, tokenizer, rankings)
                    - rankings_logprobs(reference, tokenizer, rankings))  # (M,)
    return r_hat[chosen], r_hat[rejected]


def implicit_reward_accuracy(policy, reference, tokenizer, rankings: list[dict],
                             beta: float) -> float:
    """Share of the rankings' pairs whose preferred response the policy's implicit reward
    scores higher (ties 1/2): DPO's counterpart of the RM's `pairwise_accuracy`."""
    return accuracy_from_scores(*implicit_rewards(policy, reference, tokenizer, rankings, beta))


# ----------------------------------------------------------------------------- training
def rank_two(prompts: list[dict], texts: list[str], terminated: list[bool],
             scores: list[float]) -> tuple[list[dict], float]:
    """Online DPO's rankings from two scored samples per prompt: `texts`, `terminated` and
    `scores` hold 2 B entries, prompt i's two samples at rows 2i and 2i + 1. A ranking of K = 2
    (the rm stage's record format, the higher-scored sample first) for each prompt whose two
    scores differ; equal scores (an exact tie: two identical answers get exactly equal scores
    from `reward.score_responses`) have no chosen answer and are left out. Returns (rankings,
    the share of the B prompts that tied)."""
    if not len(texts) == len(terminated) == len(scores) == 2 * len(prompts):
        raise ValueError(f"rank_two: {len(prompts)} prompts need 2 texts, terminated flags and "
                         f"scores each; got {len(texts)}, {len(terminated)} and {len(scores)}")
    rankings = [{"prompt_id": p.get("id", ""), "prompt": p["prompt"],
                 "responses": texts[2 * i: 2 * i + 2], "terminated": terminated[2 * i: 2 * i + 2],
                 "ranking": [0, 1] if a > b else [1, 0]}
                for i, (p, a, b) in enumerate(zip(prompts, scores[0::2], scores[1::2])) if a != b]
    return rankings, 1 - len(rankings) / len(prompts)


def online_pairs(policy, reward_model, tokenizer, prompts: list[dict], max_new_tokens: int,
                 seed: int, gold_judge=None) -> tuple[list[dict], dict[str, float]]:
    """Online DPO's pairs of one step: 2 responses per prompt record sampled from `policy`
    (temperature 1, `generation.complete` seeded by `seed`), both scored by `reward_model`
    (any module with a RewardModel's signature, e.g. a `reward.RewardEnsemble`), the
    higher-scored one chosen.

    Returns (rankings, stats): a ranking of K = 2 (the rm stage's record format) for each
    prompt whose two scores differ, and stats "rm_score" (mean score of all 2 B samples),
    "tied" (share of prompts whose two scores are equal: mostly two identical responses,
    which `reward.score_responses` scores exactly alike; they teach nothing and are left out)
    and with `gold_judge(prompt, text, terminated)` "gold_score" (mean over the samples;
    logging only, the loss never sees it).
    """
    twice = [p for p in prompts for _ in range(2)]  # the two samples of a prompt: rows 2i, 2i+1
    samples = complete(policy, tokenizer, twice, max_new_tokens, seed=seed)
    texts, ended = [c.text for c in samples], [c.terminated for c in samples]
    scores = score_responses(reward_model, tokenizer, [p["prompt"] for p in twice], texts,
                             ended)  # (2B,)
    rankings, tied = rank_two(prompts, texts, ended, scores.tolist())
    stats = {"rm_score": scores.mean().item(), "tied": tied}
    if gold_judge is not None:
        stats["gold_score"] = sum(map(gold_judge, twice, texts, ended)) / len(twice)
    return rankings, stats


def frozen_reference(sft_model: GPT) -> GPT:
    """pi_ref: a copy of the SFT model in eval mode, no gradients, no dropout."""
    return without_dropout(copy.deepcopy(sft_model)).eval().requires_grad_(False)


def collate_pairs(tokenizer, rankings: list[dict], ref_logprobs: list[torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """A training batch: input_ids, attention_mask, labels (M, T), the reference's log-probs
    ref_logprobs (M,) (`ref_logprobs[i]`: those of ranking i's K responses) and chosen,
    rejected (P,): the rows of every pair of every ranking (`comparisons.flatten_rankings`)."""
    prompts, responses, terminated, chosen, rejected = flatten_rankings(rankings)
    return {**encode_responses(tokenizer, prompts, responses, terminated),
            "ref_logprobs": torch.cat(ref_logprobs), "chosen": chosen, "rejected": rejected}


def batch_loss(policy, batch: dict[str, torch.Tensor], beta: float, suppress_token_ids=()
               ) -> torch.Tensor:
    """DPO loss averaged over all pairs of a `collate_pairs` batch."""
    logp = log_likelihoods(policy, batch, suppress_token_ids)  # (M,)
    ref, chosen, rejected = batch["ref_logprobs"], batch["chosen"], batch["rejected"]
    return dpo_loss(logp[chosen], logp[rejected], ref[chosen], ref[rejected], beta)[0]


def loaded_run(ckpt: Checkpoint, cfg: DPOConfig, sft_model: GPT, *args, **kwargs
               ) -> tuple[GPT, History]:
    """The (policy, history) saved by `runs.model_checkpoint`: the policy is built as `train_dpo`
    builds it, from `sft_model`, then given the trained weights."""
    policy = without_dropout(copy.deepcopy(sft_model))
    policy.load_state_dict(ckpt.model)
    return policy.eval(), History.from_dict(ckpt.history)


def check_pair_source(online: bool, train_rankings, prompts, reward_model, gold_judge) -> None:
    """Refuse arguments `train_dpo` would ignore: rankings online, prompts or a reward model
    offline (DPOConfig.pairs says which)."""
    if online and (train_rankings is not None or not prompts or reward_model is None):
        raise ValueError("DPOConfig.pairs='online' samples its pairs: pass train_rankings=None, "
                         "a non-empty list of prompt records as prompts and a reward_model")
    if not online and (train_rankings is None or prompts is not None or reward_model is not None
                       or gold_judge is not None):
        raise ValueError("DPOConfig.pairs='rankings' trains on train_rankings (a list): "
                         "prompts, reward_model and gold_judge are for pairs='online'")


def train_steps(cfg: DPOConfig, n: int) -> int:
    """Optimizer steps of `train_dpo` over `n` rankings (offline) or prompts (online): cfg.epochs
    passes. Online, full batches only: a prompt's pair can tie and drop out of a step, and a
    short remainder batch (162 prompts in 16s: 2) would make some steps' mean rest on one or two
    pairs at the full learning rate; each pass leaves out other prompts instead."""
    online = cfg.pairs == "online"
    return cfg.epochs * steps_per_epoch(n, cfg.batch_size, drop_last=online)


def online_recipe(cfg: DPOConfig) -> DPOConfig:
    """Notebook 11's online DPO from the offline recipe `cfg` (the dpo stage's): the same beta,
    batch size and learning rate, and 16 passes over the toy preset's 162 training prompts, 160
    steps of 16 prompts: about the offline stage's 162 steps (its one pass over 2592 rankings).
    Shared by notebook 11, its solutions and `bench.seeds`."""
    return replace(cfg, pairs="online", epochs=16)


@saved_with(model_checkpoint, loaded_run)
def train_dpo(cfg: DPOConfig, sft_model: GPT, tokenizer, train_rankings: list[dict] | None,
              val_rankings: list[dict], checkpoint_path=None, stop_after: int | None = None,
              extra_inputs: dict[str, str] | None = None, prompts: list[dict] | None = None,
              reward_model=None, gold_judge=None) -> tuple[GPT, History]:
    """Train a policy from a copy of `sft_model` against a frozen copy; return it and its history.

    Offline (cfg.pairs "rankings"): one step = cfg.batch_size rankings; cfg.epochs passes over
    `train_rankings`. Online (cfg.pairs "online", `train_rankings` None): one step =
    cfg.batch_size prompt records of `prompts`, cfg.epochs passes over them, each sampled twice
    from the current policy and ranked by `reward_model` (`online_pairs`, seeded by the step
    and cfg.train.seed: a resumed run samples the same); a prompt whose two samples tie is
    left out of the step's loss (the mean over the others) and counted in the log, and a step
    where all tie leaves the policy as it is (loss 0). History.metrics per step (online):
    "rm_score", "tied", and "gold_score" with `gold_judge(prompt, text, terminated)` (logging
    only). Online DPO runs in one process (`runs.train_side_by_side`, not torchrun).

    History eval metrics on `val_rankings`: "val_loss", "val_accuracy" (implicit-reward
    accuracy, ties 1/2) and "val_margin". `stop_after`: as `training.train` (stop and
    checkpoint; call again to resume). `extra_inputs`: more {role: fingerprint} for the
    checkpoint's inputs (e.g. the "rm" stage that wrote the rankings, the digests of the
    rankings files); online, the reward model's fingerprint is recorded as "rm".
    """
    online = cfg.pairs == "online"
    check_pair_source(online, train_rankings, prompts, reward_model, gold_judge)
    for name, rankings in (("train", train_rankings or []), ("validation", val_rankings)):
        for i, record in enumerate(rankings):
            check_ranking(record, f"{name} ranking {i}")
    policy, reference = without_dropout(copy.deepcopy(sft_model)), frozen_reference(sft_model)
    suppressed = never_generated(tokenizer)
    ref_val = rankings_logprobs(reference, tokenizer, val_rankings)  # (M_val,)
    *_, val_chosen, val_rejected = flatten_rankings(val_rankings)
    n = len(prompts) if online else len(train_rankings)
    train_cfg = replace(cfg.train, max_steps=train_steps(cfg, n))
    if online:
        extra_inputs = {"rm": fingerprint(reward_model), **(extra_inputs or {})}
    else:  # the reference's log-probs are constants of the loss: computed once, per ranking
        sizes = [len(r["responses"]) for r in train_rankings]
        ref_train = list(rankings_logprobs(reference, tokenizer, train_rankings).split(sizes))

    def get_batch(step: int) -> list[int] | tuple[list[int], int]:
        """The indices of the step's rankings; online, of its prompts and the samples' seed."""
        idx = epoch_batch(n, cfg.batch_size, step, cfg.train.seed, drop_last=online).tolist()
        return (idx, derive_seed(cfg.train.seed, step, "samples")) if online else idx

    def loss_fn(model, idx: list[int]) -> tuple[torch.Tensor, int]:
        batch = collate_pairs(tokenizer, [train_rankings[i] for i in idx],
                              [ref_train[i] for i in idx])
        return batch_loss(model, batch, cfg.beta, suppressed), len(batch["chosen"])

    def online_loss_fn(model, batch: tuple[list[int], int]
                       ) -> tuple[torch.Tensor, int, dict[str, float]]:
        idx, seed = batch
        pairs, stats = online_pairs(model, reward_model, tokenizer, [prompts[i] for i in idx],
                                    cfg.max_new_tokens, seed, gold_judge)
        if not pairs:  # every pair tied: nothing to learn from, no gradient
            return torch.zeros((), requires_grad=True), 0, stats
        ref = list(rankings_logprobs(reference, tokenizer, pairs).split(2))  # without grad
        return (batch_loss(model, collate_pairs(tokenizer, pairs, ref), cfg.beta, suppressed),
                len(pairs), stats)

    def eval_fn(m: GPT) -> dict[str, float]:
        logp = rankings_logprobs(m, tokenizer, val_rankings)  # (M_val,)
        loss, stats = dpo_loss(logp[val_chosen], logp[val_rejected], ref_val[val_chosen],
                               ref_val[val_rejected], cfg.beta)
        return {"val_loss": loss.item(), "val_accuracy": stats["reward_accuracy"],
                "val_margin": stats["reward_margin"]}

    history = train(policy, online_loss_fn if online else loss_fn, get_batch, train_cfg,
                    eval_fn=eval_fn, checkpoint_path=checkpoint_path, stop_after=stop_after,
                    meta={"model_config": asdict(sft_model.config), "recipe": cfg.as_dict(),
                          "inputs": {"sft": fingerprint(sft_model), **(extra_inputs or {})}})
    policy.eval()
    return policy, history


def train_in_parallel(configs: dict, *args, saved_as: str | None = None,
                      retrain: bool = False) -> dict:
    """Independent DPO runs side by side (a beta sweep): {name: DPOConfig} -> {name: (policy,
    history)}: `train_dpo(cfg, *args)` for each, through `runs.train_side_by_side` (one
    process and one thread per run, exactly the numbers of running it alone with one thread;
    `args`: the other arguments of train_dpo, without a checkpoint). `saved_as`, `retrain`:
    the runs are saved under that name and loaded when current, unless `retrain`."""
    return train_side_by_side({name: (train_dpo, (cfg, *args), {})
                               for name, cfg in configs.items()}, saved_as, retrain)


def _rankings_files(folder: str | Path) -> dict[str, Path]:
    return {split: rankings_file(folder, split) for split in ("train", "validation")}


def stage_rankings(folder: str | Path) -> dict[str, list[dict]]:
    """{split: rankings} the "rm" stage saved in `folder`; a clear error if it has not run."""
    files = _rankings_files(folder)
    missing = [str(path) for path in files.values() if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"DPO trains on the rankings the 'rm' stage saves beside its checkpoint, and "
            f"{', '.join(missing)} is missing: build the 'rm' stage of this preset first "
            "(artifacts.load_model('rm', preset)), or write its rankings again "
            "(artifacts.load_rankings(split, preset))")
    return {split: read_rankings(path) for split, path in files.items()}


def file_inputs(folder: str | Path) -> dict[str, str]:
    """The files of `folder` the "dpo" stage trains from (`stages.Stage.file_inputs`):
    {"rankings_<split>": a digest of its bytes, or "missing"}. Recorded among its checkpoint's
    inputs, so an edited ranking makes a finished DPO stale and a partial one is not resumed."""
    return {f"rankings_{split}": file_sha256(path)[:16] if path.exists() else "missing"
            for split, path in _rankings_files(folder).items()}


def build(cfg: DPOConfig, data: None, tokenizer, inputs: dict, path) -> None:
    """The "dpo" stage (rlhf_lite.stages): DPO from the SFT model on the rankings the "rm"
    stage saved beside `path` (train rankings train it, validation ones measure its
    implicit-reward accuracy), into `path`. The checkpoint's inputs record the digests of the
    rankings files (`file_inputs`), so edited rankings make it stale, and with inputs["rm"]
    (the stage registered with inputs=("sft", "rm")) the reward model's fingerprint, so a
    rebuilt rm stage does too."""
    folder = Path(path).parent
    extra = {**file_inputs(folder), **({"rm": fingerprint(inputs["rm"])} if "rm" in inputs else {})}
    rankings = stage_rankings(folder)
    train_dpo(cfg, inputs["sft"], tokenizer, rankings["train"], rankings["validation"],
              checkpoint_path=path, extra_inputs=extra)
