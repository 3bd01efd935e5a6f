import math
import random

import pytest
import torch

from rlhf_lite import gae
from rlhf_lite.gae import compute_gae, discounted_returns, explained_variance, whiten


def ragged_batch(seed, B=6, T=9):
    """Random float64 rewards, values and a prefix mask (B, T); rows of length 0 to T."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0], lengths[1] = 0, T  # always an empty row and a full row
    mask = (torch.arange(T) < lengths[:, None]).long()  # (B, T)
    return rewards, values, mask


def gae_loop(rewards, values, mask, gamma, lam):
    """Plain Python GAE, row by row and token by token, straight from the definitions."""
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    ret = [[0.0] * T for _ in range(B)]
    for b in range(B):
        n = int(sum(mask[b]))
        a_next = 0.0
        for t in reversed(range(n)):
            v_next = values[b][t + 1] if t + 1 < n else 0.0
            delta = rewards[b][t] + gamma * v_next - values[b][t]
            a_next = delta + gamma * lam * a_next
            adv[b][t] = a_next
            ret[b][t] = a_next + values[b][t]
    return torch.tensor(adv, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)


def mc_returns_loop(rewards, mask, gamma):
    """G_t = sum_k gamma^k r_{t+k} over each row's valid tokens, by explicit sums."""
    B, T = rewards.shape
    G = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        n = int(mask[b].sum())
        for t in range(n):
            G[b, t] = sum(gamma ** (k - t) * rewards[b, k].item() for k in range(t, n))
    return G


@pytest.mark.parametrize("seed", range(5))
def test_gae_matches_a_plain_python_loop(seed):
    rewards, values, mask = ragged_batch(seed)
    rng = random.Random(seed)
    gamma, lam = rng.random(), rng.random()
    adv, ret = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = gae_loop(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)


def test_hand_worked_example():
    # One row, 3 valid tokens then 1 pad; gamma = 0.5, lam = 0.5 (gamma * lam = 0.25).
    # rewards r = [0, 0, 1], values V = [0.5, 0.25, 0.5]; the pad holds garbage (ignored),
    # and V = 0 after the last valid token.
    #   delta_2 = 1 + 0.5 * 0    - 0.5  =  0.5
    #   delta_1 = 0 + 0.5 * 0.5  - 0.25 =  0
    #   delta_0 = 0 + 0.5 * 0.25 - 0.5  = -0.375
    #   A_2 = 0.5
    #   A_1 = 0      + 0.25 * 0.5   =  0.125
    #   A_0 = -0.375 + 0.25 * 0.125 = -0.34375
    #   returns = A + V = [0.15625, 0.375, 1.0], and 0 on the pad.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 7.0]])
    values = torch.tensor([[0.5, 0.25, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.5, lam=0.5)
    assert adv.tolist() == [[-0.34375, 0.125, 0.5, 0.0]]
    assert ret.tolist() == [[0.15625, 0.375, 1.0, 0.0]]


@pytest.mark.parametrize("seed", range(3))
def test_lambda_zero_gives_one_step_td_error(seed):
    rewards, values, mask = ragged_batch(seed)
    gamma = 0.9
    adv, _ = compute_gae(rewards, values, mask, gamma=gamma, lam=0.0)
    v = values * mask
    v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)  # 0 after the last token
    delta = (rewards + gamma * v_next - v) * mask
    torch.testing.assert_close(adv, delta)


@pytest.mark.parametrize("seed", range(3))
def test_lambda_one_gives_monte_carlo_return_minus_value(seed):
    rewards, values, mask = ragged_batch(seed)
    gamma = 0.8
    G = mc_returns_loop(rewards, mask, gamma)
    adv, ret = compute_gae(rewards, values, mask, gamma=gamma, lam=1.0)
    torch.testing.assert_close(adv, (G - values) * mask)
    torch.testing.assert_close(ret, G)  # returns = A + V = G: the value targets are MC returns
    torch.testing.assert_close(discounted_returns(rewards, mask, gamma), G)


def test_no_discount_and_zero_values_give_reward_to_go():
    rewards, _, mask = ragged_batch(0)
    r = rewards * mask
    to_go = r.flip(1).cumsum(1).flip(1)  # sum of rewards from t to the end of the row
    adv, ret = compute_gae(rewards, torch.zeros_like(rewards), mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, to_go)
    torch.testing.assert_close(ret, to_go)


def test_masked_positions_are_exactly_zero_and_cannot_leak():
    rewards, values, mask = ragged_batch(3)
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.95)
    pad = ~mask.bool()
    garbage = torch.full_like(rewards, float("nan"))
    adv2, ret2 = compute_gae(torch.where(pad, garbage, rewards), torch.where(pad, 1e6, values),
                             mask, gamma=0.9, lam=0.95)
    assert (adv[pad] == 0).all() and (ret[pad] == 0).all()
    assert torch.equal(adv, adv2) and torch.equal(ret, ret2)


def test_gae_carries_no_grad():
    rewards, values, mask = ragged_batch(0)
    adv, ret = compute_gae(rewards, values.requires_grad_(), mask)
    assert not adv.requires_grad and not ret.requires_grad


def test_bad_shapes_and_masks_raise_clear_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="same \\(B, T\\) shape"):
        compute_gae(x, torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="same \\(B, T\\) shape"):
        compute_gae(torch.zeros(3), torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="prefix"):
        compute_gae(x, x, torch.tensor([[1, 0, 1], [1, 1, 1]]))
    with pytest.raises(ValueError, match="same \\(B, T\\) shape"):
        whiten(x, torch.ones(3, 2))
    with pytest.raises(ValueError, match="same \\(B, T\\) shape"):
        explained_variance(x, x, torch.ones(2, 1))


def test_whiten_over_valid_tokens_only():
    x, _, mask = ragged_batch(1)
    x = 3 * x + 5
    white = whiten(torch.where(mask.bool(), x, 1e6), mask)  # pad values must not matter
    valid = white[mask.bool()]
    assert abs(valid.mean().item()) < 1e-12
    assert abs(valid.var(unbiased=False).item() - 1) < 1e-6  # population variance
    assert (white[~mask.bool()] == 0).all()
    kept = whiten(x, mask, shift_mean=False)[mask.bool()]  # rescaled, mean kept
    torch.testing.assert_close(kept.mean(), x[mask.bool()].mean())
    assert abs(kept.var(unbiased=False).item() - 1) < 1e-6


def test_whiten_empty_mask_raises():
    with pytest.raises(ValueError, match="no valid token"):
        whiten(torch.randn(2, 3), torch.zeros(2, 3))


def test_explained_variance():
    returns, _, mask = ragged_batch(2)
    assert explained_variance(returns, returns, mask) == 1.0  # perfect value head
    mean = returns[mask.bool()].mean()
    assert abs(explained_variance(torch.full_like(returns, mean.item()), returns, mask)) < 1e-12
    # Hand-computed on 4 valid tokens (the pad is ignored): returns [1, 2, 3, 4] have
    # population variance 1.25; residuals returns - values = [0, 0, 0, 2] have mean 0.5 and
    # variance (3 * 0.25 + 2.25) / 4 = 0.75; so EV = 1 - 0.75 / 1.25 = 0.4.
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0, 99.0]])
    values = torch.tensor([[1.0, 2.0, 3.0, 2.0, -5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    assert explained_variance(values, returns, mask) == pytest.approx(0.4)
    assert math.isnan(explained_variance(values, torch.ones_like(returns), mask))


# ---------------------------------------------------------------- critic-free group baselines
def test_group_advantages_match_a_loop():
    torch.manual_seed(0)
    returns, k = torch.randn(12), 4
    rloo = gae.group_advantages(returns, k, "rloo")
    grpo = gae.group_advantages(returns, k, "grpo")
    dr_grpo = gae.group_advantages(returns, k, "dr_grpo")
    for g in range(0, 12, k):
        group = returns[g: g + k].tolist()
        mean = sum(group) / k
        std = (sum((x - mean) ** 2 for x in group) / k) ** 0.5
        for i, r in enumerate(group):
            others = [x for j, x in enumerate(group) if j != i]
            assert rloo[g + i].item() == pytest.approx(r - sum(others) / (k - 1), abs=1e-6)
            assert grpo[g + i].item() == pytest.approx((r - mean) / (std + 1e-6), abs=1e-5)
            assert dr_grpo[g + i].item() == pytest.approx(r - mean, abs=1e-6)


def test_equal_rewards_give_zero_group_advantages():
    returns = torch.tensor([2.0, 2.0, 2.0, -1.0, -1.0, -1.0])
    for kind in gae.GROUP_BASELINES:
        assert torch.equal(gae.group_advantages(returns, 3, kind), torch.zeros(6))


def test_rloo_advantages_of_a_group_sum_to_zero_and_bad_input_is_refused():
    adv = gae.group_advantages(torch.tensor([1.0, 0.0, 0.0, 3.0]), 2, "rloo")
    assert adv.tolist() == [1.0, -1.0, -3.0, 3.0]
    with pytest.raises(ValueError, match="groups of group_size >= 2"):
        gae.group_advantages(torch.zeros(5), 2, "rloo")
    with pytest.raises(ValueError, match="unknown kind 'ppo'"):
        gae.group_advantages(torch.zeros(4), 2, "ppo")


def test_dr_grpo_keeps_the_scale_grpo_divides_away():
    """Dr. GRPO (Liu et al. 2025): a group whose samples nearly agree gets small advantages,
    where GRPO's division by the std blows them up to the size of any other group's."""
    returns = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.01, 0.0, 0.0, 0.0])
    dr, grpo = (gae.group_advantages(returns, 4, kind) for kind in ("dr_grpo", "grpo"))
    assert dr.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25,
                                         0.0075, -0.0025, -0.0025, -0.0025])
    assert grpo[4].item() == pytest.approx(grpo[0].item(), rel=1e-3)  # both 3 / sqrt(3)


def test_zero_advantage_groups_counts_the_groups_of_equal_returns():
    returns = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, -2.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    assert gae.zero_advantage_groups(returns, 3) == pytest.approx(3 / 4)
    for kind in gae.GROUP_BASELINES:  # exactly the groups whose advantages are all 0
        zero = (gae.group_advantages(returns, 3, kind).view(4, 3) == 0).all(1)
        assert zero.tolist() == [True, True, False, True]


def test_aggregate_matches_a_loop():
    torch.manual_seed(0)
    x = torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    rows = [[x[b, t].item() for t in range(5) if mask[b, t]] for b in range(3)]
    tokens = [v for row in rows for v in row]
    max_len = 7  # the cap, longer than this batch's responses
    assert gae.aggregate(x, mask).item() == pytest.approx(sum(tokens) / len(tokens), abs=1e-6)
    assert gae.aggregate(x, mask, "sequence").item() == pytest.approx(
        sum(sum(row) / len(row) for row in rows) / 3, abs=1e-6)
    assert gae.aggregate(x, mask, "constant", max_len).item() == pytest.approx(
        sum(tokens) / (3 * max_len), abs=1e-6)
    assert torch.equal(gae.aggregate(x, mask, "token"), gae.masked_mean(x, mask))


def test_sequence_aggregation_weighs_a_long_response_s_tokens_less():
    """GRPO's per-response mean: the same per-token loss of 1 costs a 1-token response 1 and
    each token of a 4-token response 1/4 (the length bias); "token" and "constant" weigh
    every token alike."""
    x = torch.ones(2, 4, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    for how, long_weight, short_weight in [("sequence", 1 / 8, 1 / 2), ("token", 1 / 5, 1 / 5),
                                           ("constant", 1 / 8, 1 / 8)]:
        (grad,) = torch.autograd.grad(gae.aggregate(x, mask, how, max_len=4), x)
        assert grad[0, 0].item() == pytest.approx(long_weight), how
        assert grad[1, 0].item() == pytest.approx(short_weight), how
        assert (grad[1, 1:] == 0).all()


def test_aggregate_refuses_bad_input():
    x, mask = torch.ones(2, 3), torch.tensor([[1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="a response with no valid token"):
        gae.aggregate(x, mask, "sequence")
    with pytest.raises(ValueError, match="give max_len"):
        gae.aggregate(x, mask, "constant")
    with pytest.raises(ValueError, match="unknown how 'median'"):
        gae.aggregate(x, mask, "median")
    with pytest.raises(ValueError, match="same"):
        gae.aggregate(x, torch.ones(2, 4))
