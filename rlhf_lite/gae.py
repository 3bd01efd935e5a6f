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


GROUP_BASELINES = ("rloo", "grpo")


def group_advantages(returns: torch.Tensor, group_size: int, kind: str) -> torch.Tensor:
    """Critic-free advantages (B,) of B = n * group_size sequence returns, each group being
    `group_size` consecutive samples of one prompt: the other samples are the baseline.

        rloo: A_i = R_i - mean of the group's other returns (leave-one-out, Ahmadian et al.
              2024, "Back to basics": unbiased, since R_i is not in its own baseline)
        grpo: A_i = (R_i - group mean) / (group std + 1e-6) (population std, Shao et al. 2024)

    A group of equal returns gets zero advantages: nothing in it is better than the rest.
    """
    if returns.dim() != 1 or len(returns) % group_size or group_size < 2:
        raise ValueError(f"group_advantages: {tuple(returns.shape)} returns must be 1-D and "
                         f"split into groups of group_size >= 2, got {group_size}")
    groups = returns.view(-1, group_size)  # (n, k)
    if kind == "rloo":
        others = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
        return (groups - others).reshape(-1)
    if kind == "grpo":
        centred = groups - groups.mean(1, keepdim=True)
        return (centred / (groups.std(1, unbiased=False, keepdim=True) + 1e-6)).reshape(-1)
    raise ValueError(f"group_advantages: unknown kind {kind!r}, expected one of "
                     f"{GROUP_BASELINES}")


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
