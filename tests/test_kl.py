import math

import pytest
import torch

from rlhf_lite.kl import (
    KINDS,
    AdaptiveKLController,
    FixedKLController,
    estimator_gradients,
    kl_estimate,
)


def sampled_logprobs(p, p_ref, n=200_000, seed=0):
    """Sample n tokens from p; return their log-probs under p and p_ref, and the exact KL."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.multinomial(p, n, replacement=True, generator=g)  # (n,)
    exact = (p * (p.log() - p_ref.log())).sum().item()  # KL(p || p_ref)
    return p.log()[tokens], p_ref.log()[tokens], exact


def test_k3_is_nonnegative_and_finite_even_for_extreme_log_ratios():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(10_000, generator=g, dtype=torch.float64) * 20
    ref_logp = torch.randn(10_000, generator=g, dtype=torch.float64) * 20
    extreme = torch.tensor([-50.0, -1e-9, 0.0, 1e-9, 50.0], dtype=torch.float64)  # log r
    for lp, ref in [(logp, ref_logp), (torch.zeros_like(extreme), extreme)]:
        k3 = kl_estimate(lp, ref, "k3")
        assert torch.isfinite(k3).all() and (k3 >= 0).all()
    # float32: still >= 0 (also for tiny log r, where expm1 keeps the x^2/2 term), finite up
    # to log r ~ 88, and exp overflows to inf beyond ~ 88.7.
    log_r32 = torch.tensor([-50.0, -1e-6, 1e-6, 50.0, 88.0, 89.0])
    k3 = kl_estimate(torch.zeros_like(log_r32), log_r32, "k3")
    assert (k3 >= 0).all() and torch.isfinite(k3[:-1]).all() and torch.isinf(k3[-1])


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_unbiased_estimators_match_the_exact_kl(kind):
    p = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
    p_ref = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2], dtype=torch.float64)
    logp, ref_logp, exact = sampled_logprobs(p, p_ref)
    est = kl_estimate(logp, ref_logp, kind)
    std_err = est.std().item() / math.sqrt(len(est))
    assert abs(est.mean().item() - exact) < 4 * std_err


def test_k2_is_close_to_the_kl_when_the_distributions_are_close():
    p = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
    p_ref = torch.tensor([0.38, 0.31, 0.16, 0.1, 0.05], dtype=torch.float64)
    logp, ref_logp, exact = sampled_logprobs(p, p_ref)
    k2 = kl_estimate(logp, ref_logp, "k2")
    # k2's bias is third order in log r: within 5% of the KL here, and its samples vary less
    # than k1's.
    assert abs(k2.mean().item() - exact) < 0.05 * exact
    assert k2.std() < kl_estimate(logp, ref_logp, "k1").std()
    # Far apart, the bias shows: k2 overestimates this KL of ~0.43 by ~0.08, many standard errors.
    far = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2], dtype=torch.float64)
    logp, ref_logp, exact = sampled_logprobs(p, far)
    k2 = kl_estimate(logp, ref_logp, "k2")
    assert k2.mean().item() - exact > 10 * k2.std().item() / math.sqrt(len(k2))


@pytest.mark.parametrize("kind", KINDS)
def test_all_estimators_are_zero_when_the_policy_equals_the_reference(kind):
    logp = torch.log_softmax(torch.randn(4, 7), dim=-1)
    assert torch.equal(kl_estimate(logp, logp.clone(), kind), torch.zeros(4, 7))


def test_k1_can_be_negative_on_a_sample_but_k3_cannot():
    # A token the reference likes more than the policy: p = 0.2, p_ref = 0.5, so
    # k1 = log(0.2 / 0.5) = log 0.4 < 0, while k3 = (2.5 - 1) - log 2.5 > 0.
    logp, ref_logp = torch.tensor([math.log(0.2)]), torch.tensor([math.log(0.5)])
    assert kl_estimate(logp, ref_logp, "k1").item() == pytest.approx(math.log(0.4))
    assert kl_estimate(logp, ref_logp, "k3").item() == pytest.approx(1.5 - math.log(2.5))


def test_invalid_kind_and_shape_raise():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="unknown kind"):
        kl_estimate(x, x, "k4")
    with pytest.raises(ValueError, match="same shape"):
        kl_estimate(x, torch.zeros(2, 3))


def test_adaptive_controller_one_update_by_hand():
    # target 6, horizon 10000, batch of 512 responses: n_steps / horizon = 0.0512.
    above = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    above.update(current_kl=12.0, n_steps=512)  # e = 12/6 - 1 = 1, clipped to 0.2
    assert above.beta == pytest.approx(0.1 * (1 + 0.2 * 0.0512))  # 0.101024
    below = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    below.update(current_kl=3.0, n_steps=512)  # e = 3/6 - 1 = -0.5, clipped to -0.2
    assert below.beta == pytest.approx(0.1 * (1 - 0.2 * 0.0512))  # 0.098976
    inside = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    inside.update(current_kl=6.6, n_steps=512)  # e = 0.1, inside the clip
    assert inside.beta == pytest.approx(0.1 * (1 + 0.1 * 0.0512))  # 0.100512


@pytest.mark.parametrize("init_beta", [0.02, 0.5])
def test_adaptive_controller_steers_the_kl_to_target(init_beta):
    # A toy policy whose KL falls as the penalty grows: KL(beta) = 0.6 / beta, so the KL is
    # on target (6) at beta = 0.1. Starting too low or too high, beta walks there.
    target = 6.0
    ctl = AdaptiveKLController(init_beta=init_beta, target=target, horizon=1000)
    gaps = []
    for _ in range(100):
        kl = 0.6 / ctl.beta
        gaps.append(abs(kl - target))
        ctl.update(kl, n_steps=500)
    assert all(b <= a + 1e-12 for a, b in zip(gaps, gaps[1:]))  # never moves away
    assert gaps[-1] < 0.01 * target
    assert ctl.beta == pytest.approx(0.1, rel=0.01)


def test_fixed_controller_never_changes():
    ctl = FixedKLController(0.02)
    for kl in [0.0, 3.0, 1e6]:
        ctl.update(kl, n_steps=512)
    assert ctl.beta == 0.02


# ----------------------------------------------------------------------------- gradients
def autograd_expected_gradient(logits, ref_logits, kind):
    """sum_y p(y) d k(y) / d logits, each k(y) differentiated by autograd with y held fixed
    (the estimator as a loss term on a sampled token, as GRPO uses k3)."""
    p = torch.softmax(logits, dim=-1)
    ref_logp = torch.log_softmax(ref_logits, dim=-1)
    total = torch.zeros_like(logits)
    for y in range(len(logits)):
        x = logits.clone().requires_grad_()
        kl_estimate(torch.log_softmax(x, dim=-1)[y], ref_logp[y], kind).backward()
        total += p[y] * x.grad
    return total


def autograd_kl_gradient(logits, ref_logits, forward=False):
    """d KL(p || p_ref) / d logits by autograd, or of KL(p_ref || p) if `forward`."""
    x = logits.clone().requires_grad_()
    logp, ref_logp = torch.log_softmax(x, dim=-1), torch.log_softmax(ref_logits, dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum() if forward else (
        logp.exp() * (logp - ref_logp)).sum()
    kl.backward()
    return x.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimator_gradients_match_autograd_on_a_small_categorical(seed):
    g = torch.Generator().manual_seed(seed)
    logits, ref_logits = torch.randn(2, 5, generator=g, dtype=torch.float64) * 1.5
    grads = estimator_gradients(logits, ref_logits)
    for kind in KINDS:
        expected = autograd_expected_gradient(logits, ref_logits, kind)
        torch.testing.assert_close(grads[kind], expected, rtol=0, atol=1e-12)
    kl_grad = autograd_kl_gradient(logits, ref_logits)
    torch.testing.assert_close(grads["kl"], kl_grad, rtol=0, atol=1e-12)
    # the known results: k1 in the loss does nothing, k2 follows the KL's gradient, k3 follows
    # the forward KL's, KL(p_ref || p), which differs from the KL's here by more than a fifth
    torch.testing.assert_close(grads["k1"], torch.zeros(5, dtype=torch.float64), rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(grads["k2"], kl_grad, rtol=0, atol=1e-12)
    forward = autograd_kl_gradient(logits, ref_logits, forward=True)
    torch.testing.assert_close(grads["k3"], forward, rtol=0, atol=1e-12)
    assert (grads["k3"] - kl_grad).norm() > 0.2 * kl_grad.norm()


def test_estimator_gradients_by_hand():
    # p = (1/2, 1/2), p_ref = (1/4, 3/4): k3 gives p - p_ref = (1/4, -1/4); the KL's gradient
    # is p * (log p/p_ref - KL) with KL = log(4/3) / 2, i.e. (log 3 / 4, -log 3 / 4).
    logits = torch.zeros(2, dtype=torch.float64)
    ref_logits = torch.tensor([0.25, 0.75], dtype=torch.float64).log()
    grads = estimator_gradients(logits, ref_logits)
    torch.testing.assert_close(grads["k1"], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(grads["k3"], torch.tensor([0.25, -0.25], dtype=torch.float64))
    quarter_log3 = torch.tensor([1.0, -1.0], dtype=torch.float64) * math.log(3) / 4
    torch.testing.assert_close(grads["kl"], quarter_log3)
    torch.testing.assert_close(grads["k2"], quarter_log3)
    # policy equal to the reference: every gradient is zero (any shape, any shift of logits)
    logits = torch.randn(3, 4, 7, dtype=torch.float64)
    for name, grad in estimator_gradients(logits, logits + 2.0).items():
        assert grad.shape == logits.shape
        torch.testing.assert_close(grad, torch.zeros_like(logits), rtol=0, atol=1e-12, msg=name)


def test_k3_gradient_agrees_with_the_kl_only_to_first_order():
    g = torch.Generator().manual_seed(3)
    logits, direction = torch.randn(2, 5, generator=g, dtype=torch.float64)
    for eps in (1e-1, 1e-2, 1e-3):
        grads = estimator_gradients(logits, logits + eps * direction)
        relative = ((grads["k3"] - grads["kl"]).norm() / grads["kl"].norm()).item()
        assert 0.01 * eps < relative < eps, (eps, relative)  # shrinks with eps, never zero


def test_estimator_gradients_stay_finite_where_the_policy_underflows():
    # p(y) = 0 in float32 while p_ref(y) > 0: r = p_ref / p is inf there, k3's p - p_ref is not
    logits = torch.tensor([0.0, -200.0, 3.0])
    ref_logits = torch.zeros(3)
    grads = estimator_gradients(logits, ref_logits)
    assert all(torch.isfinite(g).all() for g in grads.values())
    p, p_ref = torch.softmax(logits, -1), torch.softmax(ref_logits, -1)
    torch.testing.assert_close(grads["k3"], p - p_ref)


def test_estimator_gradients_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        estimator_gradients(torch.zeros(3), torch.zeros(2, 3))
