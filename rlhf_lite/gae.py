"""Generalized Advantage Estimation over response tokens, plus whitening and explained variance.

GAE is from Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized
Advantage Estimation" (eq. 16). In RLHF each response token is one action, so an episode is
one response: InstructGPT (Ouyang et al. 2022, sec 3.5 and appendix C.4) runs PPO with no
discount (gamma = 1), and the per-token reward is -beta * KL_t plus the reward model's score
at the last real token (see `rlhf_lite.kl`).

Conventions, shared by every function here:

- Tensors are (B, T) over response tokens. `mask` (B, T) is 1 on valid tokens and 0 after
  them; in `compute_gae` it must be a prefix in each row (the tokens up to and including eos,
  as `generation.response_mask` gives). Any dtype works: nonzero means valid.
- Masked positions are ignored completely: whatever rewards or values hold there (even nan)
  cannot change a valid position's result.
- A response ends at its last valid token: V = 0 after it, nothing is bootstrapped. A response
  cut at the length limit without eos is treated the same way (the "eos trick" penalises it
  in the reward instead).
"""
from __future__ import annotations

import torch


def _check_same_2d(name: str, **tensors: torch.Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        listed = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"{name}: {listed} must all have the same (B, T) shape")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over its valid tokens (mask != 0), as a 0-d tensor. ValueError if none."""
    valid = mask.bool()
    n = valid.sum()
    if n == 0:
        raise ValueError("mask has no valid token: a mean over zero tokens is undefined")
    return torch.where(valid, x, 0).sum() / n


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """POPULATION variance (divide by n, not n - 1) of x over its valid tokens."""
    centred = x - masked_mean(x, mask)
    return masked_mean(centred**2, mask)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) with mean and population variance over valid tokens.

    PPO whitens the advantages of a batch this way, so that the policy step size does not
    depend on the reward scale. shift_mean=False adds the mean back (only rescales; TRL uses
    it for rewards). Masked positions are set to 0. ValueError if the mask has no valid token.
    """
    _check_same_2d("whiten", x=x, mask=mask)
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    white = (x - mean) * torch.rsqrt(var + 1e-8)  # (B, T)
    if not shift_mean:
        white = white + mean
    return torch.where(mask.bool(), white, 0)


@torch.no_grad()
def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and value targets: (B, T) x3 -> (advantages, returns), each (B, T).

    delta_t = r_t + gamma * V_{t+1} - V_t, with V = 0 after the last valid token;
    A_t = delta_t + gamma * lam * A_{t+1}, computed backwards over time;
    returns = A + V, taken before any whitening of A (they are the value loss's targets).
    Advantages and returns are exactly 0 at masked positions. lam = 0 gives the one-step TD
    error, lam = 1 the Monte Carlo return minus V. Both outputs are targets: no grad flows.
    """
    _check_same_2d("compute_gae", rewards=rewards, values=values, mask=mask)
    valid = mask.bool()  # (B, T)
    if (valid[:, 1:] & ~valid[:, :-1]).any():
        raise ValueError("compute_gae: mask must be a prefix in every row (1s, then 0s)")
    rewards = torch.where(valid, rewards, 0)
    values = torch.where(valid, values, 0)  # V = 0 at masked positions, so after the last token
    B, T = rewards.shape
    advantages = torch.zeros_like(values)  # (B, T)
    next_value = values.new_zeros(B)  # V_{t+1}, (B,)
    next_adv = values.new_zeros(B)  # A_{t+1}, (B,)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        next_adv = torch.where(valid[:, t], delta + gamma * lam * next_adv, 0)
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, advantages + values


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor,
                       gamma: float = 1.0) -> torch.Tensor:
    """Monte Carlo returns G_t = sum_k gamma^k r_{t+k} over valid tokens, (B, T) -> (B, T).

    This is GAE with V = 0 and lam = 1 (then A_t = G_t), so it shares compute_gae's conventions.
    """
    return compute_gae(rewards, torch.zeros_like(rewards), mask, gamma=gamma, lam=1.0)[0]


GROUP_BASELINES = ("rloo", "grpo", "dr_grpo")


def group_advantages(returns: torch.Tensor, group_size: int, kind: str) -> torch.Tensor:
    """Critic-free advantages (B,) of B = n * group_size sequence returns, each group being
    `group_size` consecutive samples of one prompt: the other samples are the baseline.

        rloo: A_i = R_i - mean of the group's other returns (leave-one-out, Ahmadian et al.
              2024, "Back to basics": unbiased, since R_i is not in its own baseline)
        grpo: A_i = (R_i - group mean) / (group std + 1e-6) (population std, Shao et al. 2024)
        dr_grpo: A_i = R_i - group mean (Liu et al. 2025, "Understanding R1-Zero-like
              training": GRPO's division by the std up-weights the prompts whose samples nearly
              agree, too easy or too hard; Dr. GRPO drops it)

    A group of equal returns gets zero advantages: nothing in it is better than the rest
    (`zero_advantage_groups` counts them).
    """
    if returns.dim() != 1 or len(returns) % group_size or group_size < 2:
        raise ValueError(f"group_advantages: {tuple(returns.shape)} returns must be 1-D and "
                         f"split into groups of group_size >= 2, got {group_size}")
    groups = returns.view(-1, group_size)  # (n, k)
    if kind == "rloo":
        others = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
        return (groups - others).reshape(-1)
    centred = groups - groups.mean(1, keepdim=True)
    if kind == "grpo":
        return (centred / (groups.std(1, unbiased=False, keepdim=True) + 1e-6)).reshape(-1)
    if kind == "dr_grpo":
        return centred.reshape(-1)
    raise ValueError(f"group_advantages: unknown kind {kind!r}, expected one of "
                     f"{GROUP_BASELINES}")


def zero_advantage_groups(returns: torch.Tensor, group_size: int) -> float:
    """The share of the groups (`group_size` consecutive returns each, as in
    `group_advantages`) whose returns are all equal: every advantage in such a group is 0, so
    it gives no policy gradient (only a KL term in the loss, if any). With a 0/1 verifier and
    the KL outside the reward this is every group the policy always or never solves: the
    policy loss can be 0 while the policy still trains on the other groups."""
    groups = returns.view(-1, group_size)  # (n, k)
    return (groups == groups[:, :1]).all(1).float().mean().item()


AGGREGATIONS = ("token", "sequence", "constant")


def aggregate(x: torch.Tensor, mask: torch.Tensor, how: str = "token",
              max_len: int | None = None) -> torch.Tensor:
    """A per-token loss (B, T) reduced to a 0-d tensor over its valid tokens, as `how` says:

        token:    mean over all valid tokens of the batch (PPO; DAPO, Yu et al. 2025)
        sequence: each response's mean over its own tokens, then the mean over responses
                  (GRPO, Shao et al. 2024). A token of a response of length |o| weighs
                  1/|o|: a long wrong answer is penalised less per token (the length bias)
        constant: the sum over valid tokens / (B * max_len) (Dr. GRPO, Liu et al. 2025): every
                  token weighs the same whatever its response's length or the batch's

    `max_len` (the response length cap) is needed by "constant" only. ValueError if a row has
    no valid token under "sequence", or none at all under "token".
    """
    _check_same_2d("aggregate", x=x, mask=mask)
    valid = mask.bool()
    if how == "token":
        return masked_mean(x, mask)
    if how == "sequence":
        lengths = valid.sum(1)  # (B,)
        if (lengths == 0).any():
            raise ValueError("aggregate: a response with no valid token has no mean")
        return (torch.where(valid, x, 0).sum(1) / lengths).mean()
    if how == "constant":
        if max_len is None:
            raise ValueError("aggregate: 'constant' divides by B * max_len: give max_len")
        return torch.where(valid, x, 0).sum() / (x.shape[0] * max_len)
    raise ValueError(f"aggregate: unknown how {how!r}, expected one of {AGGREGATIONS}")


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[returns - values] / Var[returns] over valid tokens: a PPO value-head diagnostic.

    1 means the value head predicts the returns perfectly, 0 means it does no better than
    their mean, negative means worse than the mean. nan if Var[returns] == 0 (undefined).
    """
    _check_same_2d("explained_variance", values=values, returns=returns, mask=mask)
    var_returns = masked_var(returns, mask)
    if var_returns == 0:
        return float("nan")
    return float(1 - masked_var(returns - values, mask) / var_returns)
