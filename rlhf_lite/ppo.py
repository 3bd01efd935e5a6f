"""Stage 3: PPO against the reward model, with a per-token KL penalty to the SFT policy.

InstructGPT (Ouyang et al. 2022, sec 3.5) fine-tunes the SFT policy with PPO (Schulman et al.
2017) in a bandit environment: a prompt comes in, the policy writes a response, the reward
model scores it, the episode ends. One iteration (`PPOTrainer.step`: `rollout`, then `update`;
the numbers below mark the steps in the code):

1. Rollout. Sample responses to a batch of left-padded prompts with the KV cache.
2. Score, without gradients and once: the policy's log-probs of its own tokens ("old"), the
   frozen SFT reference's log-probs, the value model's values, the reward model's score.
3. Per-token reward (the paper's objective, eq. 2):
       r_t = -beta * KL_t                   for every response token,
       r_T += RM(prompt, response)          at the last real token (eos),
   where KL_t is a per-token estimate of KL(pi || pi_SFT) (`rlhf_lite.kl`). A response that
   never emits eos is cut at max_new_tokens and its score is lowered by `missing_eos_penalty`.
   With `reward` "verifier" the score is `verifier.verifier_scores` instead (1 for an exactly
   right answer, 0 otherwise: RL with verifiable rewards). With `kl_in` "loss" (GRPO) the
   reward is the score alone and the KL goes into the loss (step 5); beta's controller still
   reads the logged KL.
4. Advantages with GAE (gamma = 1 as in the paper). Or, with `advantage` "rloo", "grpo" or
   "dr_grpo", a critic-free baseline: `group_size` samples of each prompt, each response's
   total reward (score - beta * KL) against its group's (`gae.group_advantages`), the same
   advantage on every token, and no value model. By default (`whiten_advantages`) the
   advantages are then whitened over the batch's valid tokens, so that the baseline is the
   only difference between the methods: the clipped step's size does not depend on the
   advantages' scale (GRPO and Dr. GRPO leave them as their group made them).
5. Several epochs of shuffled minibatches of the clipped surrogate plus a clipped value loss.
   The surrogate's tokens are averaged as `loss_aggregation` says (`gae.aggregate`: over the
   minibatch's tokens by default; per response first as GRPO; over a constant as Dr. GRPO).
   With `kl_in` "loss" it also gets beta * the aggregated `kl_estimator` of the new log-probs
   to the reference's (GRPO: k3), whose gradient flows through the new log-probs.
6. PPO-ptx (sec 3.5, eq. 2), when `ptx_coef` > 0: each minibatch's policy loss also gets
   ptx_coef * (next-token loss on a batch of pretraining text), which pulls the policy back
   towards the pretraining distribution and reduces the "alignment tax" (notebook 7).

Conventions (each is tested in tests/test_ppo.py):
- Log-probs come from logits[:, P-1:-1] divided by the sampling temperature, gathered at the
  sampled tokens; a response position t is predicted from the context before it.
- Values are read at the same positions: V_t estimates the return from token t on.
- Masks: 1 on response tokens up to and including the first eos, 0 after (pad).
- Dropout is off in all four models (a ratio that moves only because of dropout is noise).
- The first minibatch of the first epoch sees the exact weights and inputs that produced the
  old log-probs, so its ratio is exactly 1: a standard check that the implementation is sound.
- Data parallel under torchrun (rlhf_lite.distributed): batch_size and minibatch_size are
  global. Each process samples batch_size / W prompts with its own seed, whitens and trains
  on its share, and the policy and value model train through DDP, which averages the
  gradients of the processes' minibatch losses (each a mean over its own tokens). Metrics
  are combined over processes by their rule in METRIC_RULES (the same rule that combines an
  update's minibatches), so every process adapts beta on the same KL.
- The training pieces are the shared trainer's (rlhf_lite.training): the optimizer step
  (`backward_and_step`: clipping, loss scaling, NaN guard), the periodic checkpoint and resume
  (`resumable`, `run_steps`) and the log (`History`, one iteration per step).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import torch

from . import checkpoints, distributed, precision
from .chat import format_prompt
from .checkpoints import Checkpoint, fingerprint
from .datasource import DataSource, stage_recipe
from .gae import (
    AGGREGATIONS,
    GROUP_BASELINES,
    aggregate,
    compute_gae,
    explained_variance,
    group_advantages,
    masked_mean,
    whiten,
    zero_advantage_groups,
)
from .generation import generate, response_mask, sequence_logprobs
from .kl import KINDS, AdaptiveKLController, FixedKLController, kl_estimate, penalised_rewards
from .model import without_dropout
from .pretrain import lm_loss, random_windows, token_stream
from .runs import saved_with, train_side_by_side
from .tokenizer import never_generated
from .training import History, backward_and_step, resumable, run_steps
from .utils import (
    boolean,
    check_config,
    check_finite,
    derive_seed,
    integer,
    number,
    one_of,
    optional,
    rule,
    seed_everything,
)
from .verifier import CHECKABLE, verifier_scores, verifies


@dataclass
class PPOConfig:
    # rollout + update rounds (about 1 minute on 2 CPU cores)
    iterations: int = rule(40, integer(1))
    batch_size: int = rule(64, integer(1))  # prompts per rollout (paper: 512)
    minibatch_size: int = rule(16, integer(1))  # responses per gradient step (paper: 64)
    # passes over each rollout. The paper: 1. Four at a quarter of these learning rates reuse
    # the samples more but reached the same held-out gold and KL in 2.5x the time (2 seeds
    # each of PPO and RLOO: python -m bench.ppo_epochs, bench/results/ppo_epochs*.csv)
    ppo_epochs: int = rule(1, integer(1))
    # response length cap; longer answers count as unterminated
    max_new_tokens: int = rule(20, integer(1))
    # sampling temperature of rollouts (log-probs use the same one)
    temperature: float = rule(1.0, number(0, low_open=True))
    # policy learning rate (AdamW); small: the policy must stay near SFT
    lr: float = rule(8e-5, number(0, low_open=True))
    value_lr: float = rule(4e-4, number(0, low_open=True))  # value model learning rate
    clip_eps: float = rule(0.2, number(0, low_open=True))  # PPO ratio clip (paper: 0.2)
    # how far a value may move from its rollout value per update
    value_clip_eps: float = rule(0.2, number(0, low_open=True))
    # discount: none, the episode is one short response (0 would discount the RM score at eos
    # away from every earlier token)
    gamma: float = rule(1.0, number(0, 1, low_open=True))
    # GAE lambda: bias (0) vs variance (1) of the advantage estimate
    lam: float = rule(0.95, number(0, 1))
    # KL penalty coefficient (paper: 0.02; our small RM is easier to exploit)
    beta: float = rule(0.1, number(0))
    # adapt beta to keep the KL near kl_target (Ziegler et al.)
    adaptive_kl: bool = rule(False, boolean())
    # target KL per response, in nats (adaptive only)
    kl_target: float = rule(2.0, number(0, low_open=True))
    kl_horizon: int = rule(2000, integer(1))  # responses over which beta adapts (adaptive only)
    # per-token KL estimator in the reward (or the loss: kl_in): k1, k2 or k3
    kl_estimator: str = rule("k1", one_of(KINDS))
    # subtracted from the RM score of unterminated responses
    missing_eos_penalty: float = rule(2.0, number(0))
    # max gradient norm of each model; > 0: clip_grad_norm_ to 0 zeroes every gradient (no
    # learning, no error)
    grad_clip: float = rule(1.0, number(0, low_open=True))
    # PPO-ptx gamma: weight of the pretraining loss (0 = plain PPO)
    ptx_coef: float = rule(0.0, number(0))
    ptx_batch_size: int = rule(8, integer(1))  # pretraining windows per minibatch (PPO-ptx)
    # tokens per pretraining window; None: the policy's context (toy: 64). GPT-2's 1024 would
    # cost about 5x PPO's own FLOPs per minibatch, so the gpt2 preset uses shorter windows
    ptx_block_size: int | None = rule(None, optional(integer(1)))
    seed: int = rule(0, integer(0))  # prompt order, sampling and minibatch shuffling
    # iterations between checkpoints when training into a file (`PPOTrainer.train`); 0 = only
    # at the end. Steers the run only: it never makes a checkpoint stale.
    checkpoint_interval: int = rule(10, integer(0), run_control=True)
    # "gae": the value model and GAE (InstructGPT); "rloo" or "grpo": a critic-free baseline
    # over the group_size samples of each prompt (gae.group_advantages), no value model
    advantage: str = rule("gae", one_of(("gae",) + GROUP_BASELINES))
    # samples per prompt in a rollout; a group baseline needs 2 or more
    group_size: int = rule(1, integer(1))
    # the score of a response: "rm", the reward model's; "verifier", verifier.verifier_scores
    # (1 exactly right, 0 otherwise; RLVR), on checkable prompts only. The reward model is
    # still an argument of the trainer (it initialises the value model under GAE)
    reward: str = rule("rm", one_of(("rm", "verifier")))
    # how the policy loss (and a KL term in it) averages its tokens: gae.aggregate's "token"
    # (PPO, DAPO), "sequence" (GRPO: length-biased) or "constant" (Dr. GRPO)
    loss_aggregation: str = rule("token", one_of(AGGREGATIONS))
    # whiten the advantages over the batch's valid tokens (GRPO and Dr. GRPO do not; the
    # token-weighted mean it subtracts is itself a shift that depends on the lengths)
    whiten_advantages: bool = rule(True, boolean())
    # where beta * KL goes: "reward", k1..k3 per token in the reward (InstructGPT); "loss",
    # beta * aggregate(kl_estimator of the new log-probs) added to the policy loss (GRPO)
    kl_in: str = rule("reward", one_of(("reward", "loss")))
    # an iteration after which the run keeps a copy of its policy (`PPOTrainer.snapshot_policy`):
    # a long run compared with shorter ones at their length, without a stopped copy of it
    snapshot_at: int | None = rule(None, optional(integer(1)))

    def __post_init__(self):
        check_config(self)
        if self.snapshot_at is not None and self.snapshot_at > self.iterations:
            raise ValueError(f"PPOConfig.snapshot_at must be at most iterations "
                             f"({self.iterations}), got {self.snapshot_at}")
        if self.advantage != "gae" and (self.group_size < 2 or self.batch_size % self.group_size):
            raise ValueError(f"PPOConfig.group_size must be >= 2 and divide batch_size "
                             f"({self.batch_size}) for advantage {self.advantage!r}, got "
                             f"{self.group_size}")

    def as_dict(self) -> dict:
        return asdict(self)


def rlvr_variants(stage: PPOConfig) -> dict[str, PPOConfig]:
    """Notebook 10's variants of the grpo_verifier stage's recipe `stage`, each changing one
    thing: the learned reward model's score as the reward; GRPO's normalisations (the group's
    std divided out, each sequence's mean loss); k1 in the reward instead of k3 in the loss.
    Shared by notebook 10 and `bench.seeds`."""
    return {"RM reward": replace(stage, reward="rm"),
            "GRPO": replace(stage, advantage="grpo", loss_aggregation="sequence"),
            "k1 in the reward": replace(stage, kl_in="reward", kl_estimator="k1")}


class ValueModel(torch.nn.Module):
    """V(context) for every position: a GPT backbone and a scalar head (B, T) -> (B, T).

    Initialised from the reward model, as in the paper: it already knows which responses are
    good, so early advantages are informative.
    """

    def __init__(self, reward_model):
        super().__init__()
        self.backbone = copy.deepcopy(reward_model.backbone)
        self.head = copy.deepcopy(reward_model.head)

    def forward(self, input_ids, attention_mask):
        return self.head(self.backbone.hidden_states(input_ids, attention_mask)).squeeze(-1)


# How each logged metric is combined: over an update's minibatches (`PPOTrainer.update`) and
# over processes under torchrun (`distributed.reduce_metrics`). A metric without a rule here
# is an error, not silently averaged.
METRIC_RULES = {
    "rm_score": "mean", "kl": "mean", "beta": "mean", "entropy": "mean",
    "response_length": "mean", "terminated": "mean", "explained_variance": "mean",
    "gold_score": "mean", "policy_loss": "mean", "value_loss": "mean", "ptx_loss": "mean",
    "clipfrac": "mean", "approx_kl": "mean", "ratio_max": "max", "first_ratio_max": "max",
    "kl_loss": "mean", "zero_advantage_groups": "mean",
}


def metric_rule(name: str) -> str:
    """How metric `name` is combined, "mean" or "max" (its rule in METRIC_RULES)."""
    if name not in METRIC_RULES:
        raise KeyError(f"metric {name!r} has no rule in ppo.METRIC_RULES (mean or max)")
    return METRIC_RULES[name]


@dataclass(kw_only=True)
class Rollout:
    """One batch of experience; response tensors are (B, N), the rest as named. Built with
    keywords: eight of its fields are tensors of the same shape."""

    prompts: list[dict]
    sequences: torch.Tensor  # (B, P + N) prompt + response token ids
    attention_mask: torch.Tensor  # (B, P + N) 1 = real token (prompt or response incl. eos)
    mask: torch.Tensor  # (B, N) float, 1 on response tokens up to and including eos
    logprobs: torch.Tensor  # (B, N) old policy log-probs of the sampled tokens
    ref_logprobs: torch.Tensor  # (B, N) SFT reference log-probs
    values: torch.Tensor  # (B, N) old values
    scores: torch.Tensor  # (B,) RM (or verifier) score, after the missing-eos penalty
    rewards: torch.Tensor  # (B, N) per-token reward
    advantages: torch.Tensor  # (B, N) GAE's or the group baseline's (whitened by default)
    returns: torch.Tensor  # (B, N) value targets (A + V, before whitening)
    texts: list[str]  # decoded responses (for the gold labeler and for reading)
    terminated: torch.Tensor  # (B,) bool, emitted eos
    entropy: torch.Tensor  # (B, N) policy entropy at each response position


def response_logprobs(model, sequences, attention_mask, prompt_len: int, temperature: float,
                      suppress_token_ids=()) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (B, N) of the response tokens and the per-position entropy (B, N), under the
    distribution `generate` samples from (temperature, suppressed tokens)."""
    logprobs, logits = sequence_logprobs(model, sequences, attention_mask, prompt_len,
                                         temperature, suppress_token_ids)  # (B, N), (B, N, V)
    entropy = torch.logsumexp(logits, -1) - (logits.softmax(-1) * logits).sum(-1)
    return logprobs, entropy


def clipped_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps: float,
                        how: str = "token", max_len: int | None = None):
    """PPO's clipped surrogate, as a loss: the `gae.aggregate` (`how`, `max_len`; default the
    mean over valid tokens) of
    max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)),  ratio = exp(logp - logp_old).

    Returns (loss, stats) with stats, token means whatever `how`: clipfrac (share of valid
    tokens where the clipped term is the active one), approx_kl (mean of (ratio - 1) - log
    ratio, the k3 estimate of KL(old || new): how far this update has moved the policy),
    ratio_max.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    loss = aggregate(torch.max(unclipped, clipped), mask, how, max_len)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
                 "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask).item(),
                 "ratio_max": ratio[mask.bool()].max().item()}
    return loss, stats


def clipped_value_loss(values, old_values, returns, mask, clip_eps: float) -> torch.Tensor:
    """0.5 * mean over valid tokens of max((V - R)^2, (clip(V, V_old +- eps) - R)^2)."""
    clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


class PPOTrainer:
    """Holds the four models and the optimizer state; `step()` runs one PPO iteration.

    policy: trained (starts as a copy of SFT). reference: frozen SFT. reward_model: frozen.
    value_model: trained (starts as a copy of the reward model). With cfg.reward "verifier"
    the reward model scores nothing, but is still taken (the value model's init under GAE),
    and every prompt must be one the verifier can check (ValueError otherwise).
    `pretrain_stream` (1-D token ids, `rlhf_lite.pretrain.token_stream`) is needed for PPO-ptx.
    `recipe`: what its checkpoint records as the recipe (default: `cfg`;
    `datasource.stage_recipe`).
    """

    def __init__(self, cfg: PPOConfig, sft_model, reward_model, tokenizer, prompts: list[dict],
                 gold_judge=None, pretrain_stream: torch.Tensor | None = None,
                 recipe: dict | None = None):
        if cfg.ptx_coef > 0 and pretrain_stream is None:
            raise ValueError("PPOConfig.ptx_coef > 0 (PPO-ptx) needs a pretrain_stream of token "
                             "ids")
        if cfg.reward == "verifier" and not all(verifies(p) for p in prompts):
            other = sorted({p["category"] for p in prompts if not verifies(p)})
            raise ValueError(f"PPOConfig.reward 'verifier' can check only {CHECKABLE} prompts, "
                             f"got {other} ones too: filter them with verifier.verifies")
        self.cfg, self.tokenizer, self.prompts = cfg, tokenizer, prompts
        self.recipe = recipe or cfg.as_dict()
        self.suppressed = never_generated(tokenizer)  # pad, unk: never sampled, never scored
        self.pretrain_stream = pretrain_stream
        self.gold_judge = gold_judge  # prompt, text, terminated -> score; logging only
        self.policy = copy.deepcopy(sft_model).train()
        self.reference = copy.deepcopy(sft_model).eval().requires_grad_(False)
        self.reward_model = copy.deepcopy(reward_model).eval().requires_grad_(False)
        # the critic: trained alongside the policy under GAE; a group baseline has none
        self.value_model = ValueModel(reward_model).train() if cfg.advantage == "gae" else None
        self.trained = [m for m in (self.policy, self.value_model) if m is not None]
        for model in (self.policy, self.reference, self.reward_model, self.value_model):
            if model is not None:  # dropout off: the ratio must move only when weights move
                without_dropout(model)
        self.optimizer = torch.optim.AdamW(
            [{"params": m.parameters(), "lr": lr}
             for m, lr in zip(self.trained, (cfg.lr, cfg.value_lr))], weight_decay=0.0)
        self.scaler = precision.grad_scaler()  # loss scaling under fp16 autocast; else a no-op
        self.kl_ctl = (AdaptiveKLController(cfg.beta, cfg.kl_target, cfg.kl_horizon)
                       if cfg.adaptive_kl else FixedKLController(cfg.beta))
        # this process's share of each batch, its own samples, gradients averaged by DDP
        self.local_batch_size = distributed.per_process(cfg.batch_size, "PPOConfig.batch_size")
        self.local_minibatch_size = distributed.per_process(cfg.minibatch_size,
                                                            "PPOConfig.minibatch_size")
        self.ddp_policy = distributed.wrap(self.policy)  # the models themselves in one process
        self.ddp_value_model = self.value_model and distributed.wrap(self.value_model)
        self.generator = torch.Generator().manual_seed(distributed.seed_for_rank(cfg.seed))
        self.iteration = 0
        self.ptx_batches = 0  # pretraining batches drawn so far (PPO-ptx)
        self.snapshot: dict = {}  # the policy's weights after iteration cfg.snapshot_at
        self.history = History()  # one step per iteration; seconds summed over resumed runs

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def rollout(self, prompts: list[dict]) -> Rollout:
        """Steps 1-4 of the module docstring: experience for one update, all without grad."""
        cfg, tok = self.cfg, self.tokenizer
        # 1. rollout: left-padded prompts, sampled responses cut at eos
        enc = tok([format_prompt(p["prompt"]) for p in prompts], padding=True, return_tensors="pt")
        P = enc["input_ids"].shape[1]
        sequences = generate(self.policy, enc["input_ids"], enc["attention_mask"],
                             max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                             generator=self.generator, suppress_token_ids=self.suppressed)
        response = sequences[:, P:]  # (B, N)
        mask = response_mask(response, tok.eos_token_id).float()  # (B, N)
        attention_mask = torch.cat([enc["attention_mask"], mask.long()], dim=1)  # (B, P + N)
        terminated = (response == tok.eos_token_id).any(dim=1)  # (B,)

        # 2. score once: old log-probs in minibatch-sized chunks (the first minibatch of the
        # update then repeats this exact computation, and its ratio is exactly 1), reference
        # log-probs, values, the RM score with the missing-eos penalty
        mb = self.local_minibatch_size
        chunks = [response_logprobs(self.policy, sequences[i: i + mb], attention_mask[i: i + mb],
                                    P, cfg.temperature, self.suppressed)
                  for i in range(0, len(prompts), mb)]
        logprobs, entropy = (torch.cat(parts) for parts in zip(*chunks))
        ref_logprobs, _ = response_logprobs(self.reference, sequences, attention_mask, P,
                                            cfg.temperature, self.suppressed)
        values = (self.value_model(sequences, attention_mask)[:, P - 1: -1]  # (B, N)
                  if self.value_model is not None else torch.zeros_like(logprobs))
        texts = [tok.decode(row[m.bool()].tolist(), skip_special_tokens=True)
                 for row, m in zip(response, mask)]
        if cfg.reward == "verifier":  # the checker of the answer: 1 right, 0 otherwise
            scores = verifier_scores(prompts, texts, terminated).to(logprobs.device)
        else:
            scores = self.reward_model(sequences, attention_mask)  # (B,) at the last real token
        scores = scores - cfg.missing_eos_penalty * (~terminated).float()

        # 3. per-token reward: -beta * KL_t on every token, the score added at eos (with
        # kl_in "loss" the reward is the score alone: the KL is in the update's loss)
        beta = self.kl_ctl.beta if cfg.kl_in == "reward" else 0.0
        rewards, _ = penalised_rewards(logprobs, ref_logprobs, mask, scores, beta,
                                       cfg.kl_estimator)
        # 4. GAE advantages and returns (A + V); or the group baseline's advantage of each
        # response's total reward, on all its tokens. By default both whitened over valid
        # tokens: with the same scale, PPO and RLOO/GRPO differ only in their baseline
        if cfg.advantage == "gae":
            advantages, returns = compute_gae(rewards, values * mask, mask, cfg.gamma, cfg.lam)
        else:
            returns = rewards.sum(1, keepdim=True) * mask  # (B, N) no value targets: for logs
            advantages = group_advantages(rewards.sum(1), cfg.group_size,
                                          cfg.advantage)[:, None] * mask  # (B, N)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask)
        return Rollout(prompts=prompts, sequences=sequences, attention_mask=attention_mask,
                       mask=mask, logprobs=logprobs, ref_logprobs=ref_logprobs,
                       values=values * mask, scores=scores, rewards=rewards,
                       advantages=advantages, returns=returns, texts=texts,
                       terminated=terminated, entropy=entropy)

    # ------------------------------------------------------------------ update
    def update(self, r: Rollout) -> dict[str, float]:
        """Steps 5-6: epochs of minibatches of the clipped losses (plus ptx); the metrics,
        each combined over the minibatches by its rule (METRIC_RULES)."""
        cfg = self.cfg
        B = len(r.prompts)
        stats: dict[str, list[float]] = {}
        for epoch in range(cfg.ppo_epochs):
            # the first epoch keeps the rollout order, so the first minibatch repeats the
            # exact forward that produced the old log-probs (ratio exactly 1)
            order = (torch.arange(B) if epoch == 0 else
                     torch.randperm(B, generator=self.generator, device="cpu"))
            for start in range(0, B, self.local_minibatch_size):
                idx = order[start: start + self.local_minibatch_size]
                loss, pg_stats, losses = self.minibatch_loss(r, idx)
                if cfg.ptx_coef > 0:
                    ptx_loss = self.pretraining_loss()
                    loss = loss + cfg.ptx_coef * ptx_loss
                    stats.setdefault("ptx_loss", []).append(ptx_loss.item())
                check_finite(loss, "ppo: loss", self.iteration)
                backward_and_step(self.trained, self.optimizer, self.scaler, loss,
                                  cfg.grad_clip, "ppo: gradient norm", self.iteration)
                if epoch == 0 and start == 0:
                    stats.setdefault("first_ratio_max", []).append(pg_stats["ratio_max"])
                for k, v in {**pg_stats, **losses}.items():
                    stats.setdefault(k, []).append(v)
        return {k: max(v) if metric_rule(k) == "max" else sum(v) / len(v)
                for k, v in stats.items()}

    def minibatch_loss(self, r: Rollout, idx: torch.Tensor
                       ) -> tuple[torch.Tensor, dict[str, float], dict[str, float]]:
        """The loss of the rollout's responses `idx`: the clipped policy loss (plus beta * the
        aggregated KL estimate of the new log-probs, with kl_in "loss": GRPO's k3 term, whose
        gradient flows through the new log-probs only) and the clipped value loss under GAE.
        Returns (loss, the policy loss's stats, the logged losses)."""
        cfg = self.cfg
        P = r.sequences.shape[1] - r.mask.shape[1]
        seq, att, mask = r.sequences[idx], r.attention_mask[idx], r.mask[idx]
        logprobs, _ = response_logprobs(self.ddp_policy, seq, att, P, cfg.temperature,
                                        self.suppressed)
        pg_loss, pg_stats = clipped_policy_loss(logprobs, r.logprobs[idx], r.advantages[idx],
                                                mask, cfg.clip_eps, cfg.loss_aggregation,
                                                cfg.max_new_tokens)
        loss, losses = pg_loss, {"policy_loss": pg_loss.item()}
        if cfg.kl_in == "loss":
            kl_loss = aggregate(kl_estimate(logprobs, r.ref_logprobs[idx], cfg.kl_estimator),
                                mask, cfg.loss_aggregation, cfg.max_new_tokens)
            loss = loss + self.kl_ctl.beta * kl_loss
            losses["kl_loss"] = kl_loss.item()
        if self.value_model is not None:
            values = self.ddp_value_model(seq, att)[:, P - 1: -1]
            vf_loss = clipped_value_loss(values, r.values[idx], r.returns[idx], mask,
                                         cfg.value_clip_eps)
            loss = loss + vf_loss  # separate models: the sum just trains both
            losses["value_loss"] = vf_loss.item()
        return loss, pg_stats, losses

    def pretraining_loss(self) -> torch.Tensor:
        """The policy's next-token loss on fresh random windows of pretraining text (PPO-ptx)."""
        self.ptx_batches += 1  # a new, reproducible batch every call
        batch = random_windows(self.pretrain_stream, self.cfg.ptx_batch_size,
                               self.cfg.ptx_block_size or self.policy.config.block_size,
                               seed=derive_seed(self.cfg.seed, self.ptx_batches, "ptx"))
        return lm_loss(self.policy, batch)

    # ------------------------------------------------------------------ one iteration
    def step(self) -> dict[str, float]:
        """One rollout + update; returns (and records in history) the iteration's metrics."""
        cfg = self.cfg
        k = cfg.group_size  # each picked prompt is sampled k times, in consecutive rows
        pick = torch.randint(len(self.prompts), (self.local_batch_size // k,),
                             generator=self.generator,
                             device="cpu")  # CPU generator, also inside Preset.runtime on a GPU
        r = self.rollout([self.prompts[i] for i in pick.tolist() for _ in range(k)])
        kl_per_response = (kl_estimate(r.logprobs, r.ref_logprobs, "k1") * r.mask).sum(1).mean()
        metrics = {
            "rm_score": r.scores.mean().item(),  # what PPO maximises: RM's or verifier's
            "kl": kl_per_response.item(),  # KL(pi || pi_SFT) per response, nats (k1 mean)
            "beta": self.kl_ctl.beta,
            "entropy": masked_mean(r.entropy, r.mask).item(),  # per token, nats
            "response_length": r.mask.sum(1).mean().item(),  # tokens incl. eos
            "terminated": r.terminated.float().mean().item(),
        }
        if self.value_model is not None:  # how well the critic predicts the returns
            metrics["explained_variance"] = explained_variance(r.values, r.returns, r.mask)
        else:  # groups whose responses all got the same total reward: no policy gradient
            metrics["zero_advantage_groups"] = zero_advantage_groups(r.rewards.sum(1), k)
        if self.gold_judge is not None:  # evaluation only: PPO never sees it
            metrics["gold_score"] = sum(self.gold_judge(p, t, bool(e)) for p, t, e in
                                        zip(r.prompts, r.texts, r.terminated)) / len(r.texts)
        metrics = {**metrics, **self.update(r)}
        metrics = distributed.reduce_metrics(metrics, {k: metric_rule(k) for k in metrics})
        self.kl_ctl.update(metrics["kl"], cfg.batch_size)
        self.history.record(self.iteration, metrics)
        self.iteration += 1
        if self.iteration == cfg.snapshot_at:
            self.snapshot = {name: weight.detach().clone()
                             for name, weight in self.policy.state_dict().items()}
        return metrics

    def snapshot_policy(self):
        """A copy of the policy as it was after iteration cfg.snapshot_at, in eval mode."""
        if not self.snapshot:
            raise ValueError(f"no snapshot: PPOConfig.snapshot_at is {self.cfg.snapshot_at} and "
                             f"the run is at iteration {self.iteration}")
        policy = copy.deepcopy(self.policy)
        policy.load_state_dict(self.snapshot)
        return policy.eval()

    def train(self, iterations: int | None = None, checkpoint_path=None) -> History:
        """Run `iterations` more iterations (default: until cfg.iterations are done); returns
        the history. With `checkpoint_path`, a checkpoint there of a run from the same SFT and
        reward models is resumed first, and the run is saved every cfg.checkpoint_interval
        iterations and at the end (`training.run_steps`, as every stage)."""
        ckpt = resumable(checkpoint_path, self.inputs())
        if ckpt is not None:
            self.resume(ckpt)
        end = self.cfg.iterations if iterations is None else self.iteration + iterations

        def iteration(_: int) -> None:
            self.step()

        def save(_: int) -> None:
            save_policy(self, checkpoint_path)

        run_steps(range(self.iteration, end), iteration, self.history,
                  save if checkpoint_path is not None else None, self.cfg.checkpoint_interval,
                  "ppo")
        return self.history

    def inputs(self) -> dict[str, str]:
        """Fingerprints of the models this run is trained from (its checkpoint's inputs)."""
        return {"sft": fingerprint(self.reference), "rm": fingerprint(self.reward_model)}

    def state(self) -> dict:
        """What continuing this run exactly needs besides the policy weights: the value model,
        the optimizer moments, beta, the sampling generator, the PPO-ptx batch counter, the
        policy snapshot."""
        return {"value_model": self.value_model.state_dict() if self.value_model else {},
                "optimizer": self.optimizer.state_dict(), "beta": self.kl_ctl.beta,
                "generator": self.generator.get_state(), "ptx_batches": self.ptx_batches,
                "snapshot": self.snapshot}

    def resume(self, ckpt: Checkpoint) -> None:
        """Continue the run saved in `ckpt` (by `save_policy`; `training.resumable` checks
        its weights against their fingerprint and that it was trained from the same SFT and
        reward models)."""
        self.policy.load_state_dict(ckpt.model)
        if self.value_model is not None:
            self.value_model.load_state_dict(ckpt.resume["value_model"])
        self.optimizer.load_state_dict(ckpt.resume["optimizer"])
        self.kl_ctl.beta = ckpt.resume["beta"]
        self.generator.set_state(ckpt.resume["generator"])
        self.ptx_batches, self.iteration = ckpt.resume["ptx_batches"], ckpt.step
        self.snapshot = ckpt.resume["snapshot"]
        self.history = History.from_dict(ckpt.history)


def save_policy(trainer: PPOTrainer, path) -> None:
    """Write the policy as a stage checkpoint (rlhf_lite.checkpoints; artifacts loads it),
    with what `PPOTrainer.resume` needs to continue the run; under torchrun rank 0 writes it
    and the other processes wait. Its inputs are the fingerprints of the SFT model and reward
    model it was trained from."""
    checkpoints.save(policy_checkpoint(trainer), path)


def policy_checkpoint(trainer: PPOTrainer) -> Checkpoint:
    """The checkpoint `save_policy` writes (also a saved run's: `train_run`)."""
    return Checkpoint(
        trainer.policy.state_dict(), step=trainer.iteration, max_steps=trainer.cfg.iterations,
        model_config=asdict(trainer.policy.config), recipe=trainer.recipe,
        inputs=trainer.inputs(), history=trainer.history.to_dict(), resume=trainer.state())


def resumed_trainer(ckpt: Checkpoint, cfg: PPOConfig, *args, **kwargs) -> PPOTrainer:
    """The trainer saved in `ckpt` (`policy_checkpoint`), rebuilt from its arguments: a saved
    run loaded (`runs.train_side_by_side`) is the trainer that was trained."""
    trainer = PPOTrainer(cfg, *args, **kwargs)
    trainer.resume(ckpt)
    return trainer


@saved_with(policy_checkpoint, resumed_trainer)
def train_run(cfg: PPOConfig, *args, **kwargs) -> "PPOTrainer":
    """One whole PPO run: `seed_everything(cfg.seed)`, then `PPOTrainer(cfg, *args,
    **kwargs).train()`; returns the trainer (`runs.train_side_by_side` runs several, and
    saves them)."""
    seed_everything(cfg.seed)
    trainer = PPOTrainer(cfg, *args, **kwargs)
    trainer.train()
    return trainer


def train_in_parallel(configs: dict, *args, saved_as: str | None = None, retrain: bool = False,
                      **kwargs) -> dict:
    """Independent PPO runs side by side: {name: PPOConfig} -> {name: trained PPOTrainer}
    (`train_run` for each, through `runs.train_side_by_side`: one process and one thread per
    run, exactly the numbers of running them alone with one thread, a progress bar each;
    `args` and `kwargs` are the other arguments of PPOTrainer). `saved_as`, `retrain`: the
    runs are saved under that name and loaded when current, unless `retrain`."""
    return train_side_by_side({name: (train_run, (cfg, *args), kwargs)
                               for name, cfg in configs.items()}, saved_as, retrain)


def build(cfg: PPOConfig, data: DataSource, tokenizer, inputs: dict, path) -> None:
    """The PPO stages (rlhf_lite.stages: "ppo", "ppo_ptx", "rloo", "grpo_verifier"): PPO from
    the SFT model against the reward model on the data source's train prompts (PPO-ptx,
    `ptx_coef` > 0, with its pretraining text; `reward` "verifier": against the verifier, on
    the train prompts it can check), logging its gold score if it has a gold judge; the policy
    is saved to `path`."""
    stream = (token_stream(data.pretraining_text("train"), tokenizer)
              if cfg.ptx_coef > 0 else None)
    prompts = data.prompts("train", tokenizer)
    if cfg.reward == "verifier":
        prompts = [p for p in prompts if verifies(p)]
    trainer = PPOTrainer(cfg, inputs["sft"], inputs["rm"], tokenizer, prompts,
                         gold_judge=data.gold_judge, pretrain_stream=stream,
                         recipe=stage_recipe(cfg, data))
    trainer.train(checkpoint_path=path)  # resumes an interrupted run, checkpoints as it goes
