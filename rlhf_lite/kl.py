"""The KL penalty of RLHF: per-token KL estimators and the controllers of its coefficient beta.

InstructGPT (Ouyang et al. 2022, sec 3.5, eq. 2) maximises the reward model's score minus
beta * KL(pi_RL || pi_SFT), so the policy cannot drift far from the SFT model into text that
fools the reward model. As in Ziegler et al. 2019 ("Fine-tuning language models from human
preferences", sec 2.2) and their code (lm-human-preferences), the penalty is paid token by
token: the per-token reward is

    r_t = -beta * KL_t  for every response token,  plus the RM score at the last one (eos).

A larger beta keeps the policy closer to the reference (less reward hacking, less reward
gained); beta = 0 is unconstrained reward maximisation.

KL_t is estimated from the log-probabilities of the SAMPLED tokens only, under the policy p
(`logp`, the sampling distribution) and the reference p_ref (`ref_logp`). With
log r = ref_logp - logp, i.e. r = p_ref / p, John Schulman's note "Approximating KL
Divergence" (2020, http://joschu.net/blog/kl-approx.html) gives three estimators of
KL(p || p_ref) = E_p[-log r]:

    k1 = -log r                 unbiased, high variance, negative on some samples
    k2 = (log r)^2 / 2          biased (good when p and p_ref are close), low variance
    k3 = (r - 1) - log r        unbiased, low variance near p_ref, always >= 0

k3 is computed as expm1(log r) - log r, which is accurate for small log r. It is finite for
|log r| up to about 88 in float32 (exp overflows to inf beyond log r ~ 88.7) and up to about
709 in float64. InstructGPT and lm-human-preferences use k1.
"""
from __future__ import annotations

import torch

KINDS = ("k1", "k2", "k3")


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(p || p_ref) from log-probs of tokens sampled from p; same shape.

    `kind` is "k1", "k2" or "k3" (see the module docstring); ValueError otherwise. Average
    over valid tokens (or sum over a response) to estimate the KL of a batch.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"kl_estimate: logp {tuple(logp.shape)} and ref_logp "
                         f"{tuple(ref_logp.shape)} must have the same shape")
    log_r = ref_logp - logp  # log p_ref / p
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"kl_estimate: unknown kind {kind!r}, expected one of {KINDS}")


def estimator_gradients(logits: torch.Tensor, ref_logits: torch.Tensor
                        ) -> dict[str, torch.Tensor]:
    """Exact expected gradients, with respect to the policy's logits, of each estimator used as
    a LOSS term, and the exact gradient of KL(p || p_ref) itself; each the shape of `logits`.

    p = softmax(logits), p_ref = softmax(ref_logits) (the reference is fixed), over the last
    dim. GRPO (Shao et al. 2024) adds beta * k3 of the sampled tokens to the loss: the sample y
    is held fixed and the gradient flows only through log p(y) (the pathwise term; the
    score-function term of sampling y from p is missing). With log r = log p_ref(y) - log p(y),
    d log p(y) / d logits = e_y - p, so for an estimator k(log r) this gradient is
    -k'(log r(y)) (e_y - p), and its expectation over y ~ p is

        E[grad k] = -p * k' + p * E_p[k']      (elementwise, k' evaluated at each y)

    k1 = -log r,          k' = -1:     E[grad k1] = p - p = 0: in the loss k1 adds only noise.
    k2 = (log r)^2 / 2,   k' = log r:  E[grad k2] = p * (log p/p_ref - KL): the KL's gradient.
    k3 = r - 1 - log r,   k' = r - 1:  E[grad k3] = -(p_ref - p) + p * 0 = p - p_ref, which is
                                       the gradient of the FORWARD KL(p_ref || p)
                                       (= -sum_y p_ref(y) (e_y - p)), not of KL(p || p_ref);
                                       the two agree only to first order as p -> p_ref.
    "kl": grad KL(p || p_ref) = sum_y grad p(y) (log p/p_ref + 1) = p * (log p/p_ref - KL).

    So only k2 in the loss follows the KL's gradient, although k1 and k3 are the unbiased
    estimators of its value. An unbiased value gives the right gradient only with the
    score-function term, E[k(y) grad log p(y)] + E[grad k(y)]; that is why k1 belongs in the
    reward (InstructGPT, RLOO), where the policy gradient supplies E[k1 grad log p] = grad KL.
    Returns {"k1", "k2", "k3", "kl"}.
    """
    if logits.shape != ref_logits.shape:
        raise ValueError(f"estimator_gradients: logits {tuple(logits.shape)} and ref_logits "
                         f"{tuple(ref_logits.shape)} must have the same shape")
    logp = torch.log_softmax(logits, dim=-1)
    log_r = torch.log_softmax(ref_logits, dim=-1) - logp
    p = logp.exp()

    def expected(slope: torch.Tensor) -> torch.Tensor:  # E_{y~p}[-k'(log r(y)) (e_y - p)]
        return -p * slope + p * (p * slope).sum(dim=-1, keepdim=True)

    kl = -(p * log_r).sum(dim=-1, keepdim=True)
    # k3: expected(r - 1) = p - p_ref, written out: where p underflows to 0, r = p_ref / p
    # overflows and expected() would multiply inf by 0
    return {"k1": expected(-torch.ones_like(log_r)), "k2": expected(log_r),
            "k3": p - torch.softmax(ref_logits, dim=-1), "kl": p * (-log_r - kl)}


def penalised_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                      scores: torch.Tensor, beta: float, kind: str = "k1"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's per-token reward (the paper's eq. 2, paid token by token) and the per-token KL.

        r_t = -beta * KL_t            for every response token (mask 1),
        r_T += score                  at the last real token (eos), nothing after it.

    logprobs, ref_logprobs, mask: (B, N) over response positions; scores: (B,) RM scores.
    Returns rewards (B, N) and the masked KL estimate (B, N) (`kl_estimate` of `kind`).
    """
    kl = kl_estimate(logprobs, ref_logprobs, kind) * mask  # (B, N)
    rewards = -beta * kl
    last = mask.sum(dim=1).long() - 1  # (B,) index of the last real token (eos)
    rewards[torch.arange(len(rewards)), last] += scores
    return rewards, kl


class FixedKLController:
    """A constant KL coefficient beta (InstructGPT uses beta = 0.02).

    beta scales the per-token penalty r_t = -beta * KL_t that is added to the RM score.
    """

    def __init__(self, beta: float):
        if beta < 0:
            raise ValueError(f"FixedKLController: beta must be >= 0, got {beta}")
        self.beta = float(beta)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: the coefficient stays fixed (same signature as AdaptiveKLController)."""


class AdaptiveKLController:
    """Adapts beta so that the policy's KL to the reference tracks `target` (Ziegler et al.
    sec 2.2).

    beta scales the per-token penalty r_t = -beta * KL_t that is added to the RM score. After
    each batch, with the observed KL `current_kl`:

        e = clip(current_kl / target - 1, -0.2, 0.2)
        beta <- beta * (1 + e * n_steps / horizon)

    so beta grows while the KL is above target and shrinks while below, by at most a factor
    (1 +- 0.2 * n_steps / horizon) per update. As in lm-human-preferences, current_kl and
    target are the KL of a whole response (summed over its tokens, averaged over the batch),
    and n_steps is the number of responses in the batch, so horizon counts responses.
    """

    def __init__(self, init_beta: float, target: float, horizon: int):
        if init_beta <= 0 or target <= 0 or horizon <= 0:
            raise ValueError("AdaptiveKLController: init_beta, target and horizon must be > 0, "
                             f"got {init_beta}, {target}, {horizon}")
        self.beta = float(init_beta)
        self.target = float(target)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move beta toward keeping the KL at target, after a batch of n_steps responses."""
        error = min(max(float(current_kl) / self.target - 1, -0.2), 0.2)
        self.beta *= 1 + error * n_steps / self.horizon
