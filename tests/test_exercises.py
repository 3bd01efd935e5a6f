"""The exercise checkers: a correct answer passes, the stub is "not done yet", usual mistakes fail
with a message naming the case and a hint. Correct answers here are written independently of the
package (loops, textbook formulas)."""
import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

from rlhf_lite import exercises
from rlhf_lite.exercises import ExerciseError
from rlhf_lite.kl import AdaptiveKLController


def stub(*args, **kwargs):
    raise NotImplementedError


def ellipsis_stub(*args, **kwargs):
    ...


# ----------------------------------------------------------------------------- correct answers
def next_token_loss(logits, targets):
    logp = logits.log_softmax(-1)
    return -logp.gather(-1, targets[..., None]).mean()


def unigram_loss(train, val, vocab_size):
    counts = [1.0] * vocab_size
    for t in train.tolist():
        counts[t] += 1
    total = sum(counts)
    return sum(-math.log(counts[t] / total) for t in val[1:].tolist()) / (len(val) - 1)


def sft_labels(input_ids, attention_mask, prompt_lengths):
    labels = input_ids.clone()
    for i, n in enumerate(prompt_lengths.tolist()):
        labels[i, :n] = -100
    return labels.masked_fill(attention_mask == 0, -100)


def ranking_to_pairs(ranking):
    return [(ranking[i], ranking[j])
            for i in range(len(ranking)) for j in range(i + 1, len(ranking))]


def bradley_terry_loss(chosen, rejected):
    return F.softplus(rejected - chosen).mean()  # -log sigmoid(d) = log(1 + e^-d)


def td_errors(rewards, values, mask, gamma):
    out = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum())
        for t in range(n):
            next_value = values[b, t + 1] if t + 1 < n else 0.0
            out[b, t] = rewards[b, t] + gamma * next_value - values[b, t]
    return out


def whiten(x, mask):
    valid = x[mask.bool()]
    mean, var = valid.mean(), valid.var(unbiased=False)
    return torch.where(mask.bool(), (x - mean) / torch.sqrt(var + 1e-8), 0.0)


def clipped_policy_loss(logp, old, adv, mask, eps):
    terms = []  # a loop over valid tokens that keeps the graph: the checker also wants gradients
    for b, t in mask.nonzero().tolist():
        ratio, a = torch.exp(logp[b, t] - old[b, t]), adv[b, t]
        terms.append(-torch.minimum(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a))
    return torch.stack(terms).mean()


def clipped_value_loss(values, old, returns, mask, eps):
    clipped = torch.maximum(torch.minimum(values, old + eps), old - eps)
    per_token = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * per_token[mask.bool()].mean()


def penalised_rewards(logp, ref_logp, mask, scores, beta):
    rewards = torch.zeros_like(logp)  # a loop over rows and tokens: independent of the package
    for b in range(len(logp)):
        n = int(mask[b].sum())
        for t in range(n):
            rewards[b, t] = -beta * (logp[b, t] - ref_logp[b, t])
        rewards[b, n - 1] += scores[b]
    return rewards


def score_at_last_column(logp, ref_logp, mask, scores, beta):
    """A usual mistake: the score at column -1, which is padding in a shorter row."""
    rewards = -beta * (logp - ref_logp) * mask
    rewards[:, -1] += scores
    return rewards


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return torch.nn.functional.softplus(-margin).mean()  # -log sigmoid(m) = log(1 + e^-m)


def kl_estimate(logp, ref_logp, kind):
    log_r = (ref_logp - logp).double()  # float64: exact enough without expm1
    return {"k1": -log_r, "k2": log_r**2 / 2, "k3": log_r.exp() - 1 - log_r}[kind].float()


def kl_horizon(growth, iterations, n_steps):
    """By bisection on the controller's loop written out: the H whose compounded factor is
    growth (the factor moves monotonically with H above 0.2 * n_steps, where a shrinking beta's
    factor would reach 0)."""
    error = 0.2 if growth > 1 else -0.2
    low, high = 0.2 * n_steps, 1e9
    for _ in range(200):
        h = math.sqrt(low * high)
        beta = 1.0
        for _ in range(iterations):
            beta *= 1 + error * n_steps / h
        if (beta > growth) == (growth > 1):  # moved too far: a longer horizon
            low = h
        else:
            high = h
    return math.sqrt(low * high)


def gradient_norm(loss, params, clear=True):
    """Through .backward and the .grad fields (the checker uses torch.autograd.grad)."""
    if clear:
        for p in params:
            p.grad = None
    loss.backward(retain_graph=True)
    return math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))


def ptx_coef_for(ppo_loss, lm_loss, params, share):
    return share * gradient_norm(ppo_loss, params) / gradient_norm(lm_loss, params)


def bootstrap_interval(outcomes, groups, seed=0, resamples=2000, prompt_means=False):
    """A plain loop with the random module; prompt_means: the usual mistake of averaging each
    drawn prompt's mean instead of pooling the drawn prompts' outcomes."""
    rng, members = random.Random(seed), {}
    for value, group in zip(outcomes, groups):
        members.setdefault(group, []).append(value)
    members = list(members.values())
    means = []
    for _ in range(resamples):
        drawn = [rng.choice(members) for _ in members]
        means.append(sum(sum(m) / len(m) for m in drawn) / len(drawn) if prompt_means
                     else sum(map(sum, drawn)) / sum(map(len, drawn)))
    means.sort()

    def quantile(q):  # linear interpolation between order statistics
        position = q * (len(means) - 1)
        below = math.floor(position)
        above = min(below + 1, len(means) - 1)
        return means[below] + (position - below) * (means[above] - means[below])
    return quantile(0.025), quantile(0.975)


def rloo_advantages(returns, group_size):
    out = []  # a loop over groups and samples: independent of the package
    for start in range(0, len(returns), group_size):
        group = returns[start: start + group_size].tolist()
        out += [r - (sum(group) - r) / (len(group) - 1) for r in group]
    return torch.tensor(out)


def k3_loss_gradient(logits, ref_logits):
    """By enumeration with autograd: sum over y of p(y) * d k3(y) / d logits, y held fixed."""
    flat, ref_flat = logits.double().reshape(-1, logits.shape[-1]), ref_logits.double()
    ref_flat = ref_flat.reshape(-1, logits.shape[-1])
    rows = []
    for x, ref in zip(flat, ref_flat):
        p = x.softmax(-1)
        total = torch.zeros_like(x)
        for y in range(len(x)):
            z = x.clone().requires_grad_(True)
            log_r = ref.log_softmax(-1)[y] - z.log_softmax(-1)[y]
            (torch.exp(log_r) - 1 - log_r).backward()
            total += p[y] * z.grad
        rows.append(total)
    return torch.stack(rows).reshape(logits.shape).float()


def combine_scores(scores, combine, penalty=None):
    combined = []  # a loop over answers and members: independent of the package
    for b in range(scores.shape[1]):
        column = [float(scores[m, b]) for m in range(scores.shape[0])]
        mean = sum(column) / len(column)
        variance = sum((r - mean) ** 2 for r in column) / len(column)
        combined.append({"mean": mean, "min": min(column),
                         "uwo": mean - (penalty or 0.0) * variance}[combine])
    return torch.tensor(combined)


def rank_two(prompts, texts, terminated, scores):
    rankings = []
    for i, prompt in enumerate(prompts):
        a, b = scores[2 * i], scores[2 * i + 1]
        if a == b:
            continue
        first = 0 if a > b else 1
        rankings.append({"prompt": prompt["prompt"], "responses": texts[2 * i: 2 * i + 2],
                         "terminated": terminated[2 * i: 2 * i + 2],
                         "ranking": [first, 1 - first]})
    return rankings, (len(prompts) - len(rankings)) / len(prompts)


CHECKERS = {
    "check_next_token_loss": next_token_loss, "check_unigram_loss": unigram_loss,
    "check_sft_labels": sft_labels, "check_ranking_to_pairs": ranking_to_pairs,
    "check_bradley_terry_loss": bradley_terry_loss, "check_td_errors": td_errors,
    "check_whiten": whiten, "check_clipped_policy_loss": clipped_policy_loss,
    "check_clipped_value_loss": clipped_value_loss, "check_kl_estimate": kl_estimate,
    "check_penalised_rewards": penalised_rewards, "check_dpo_loss": dpo_loss,
    "check_kl_horizon": kl_horizon, "check_ptx_coef_for": ptx_coef_for,
    "check_bootstrap_interval": bootstrap_interval, "check_rloo_advantages": rloo_advantages,
    "check_k3_loss_gradient": k3_loss_gradient, "check_ensemble_combine": combine_scores,
    "check_online_pairs": rank_two,
}


@pytest.mark.parametrize("growth, iterations, n_steps", [(10.0, 40, 64), (0.5, 20, 64),
                                                        (2.0, 10, 512)])
def test_kl_horizon_is_the_horizon_at_which_the_controller_grows_beta_so(growth, iterations,
                                                                        n_steps):
    controller = AdaptiveKLController(1.0, target=1.0,
                                      horizon=kl_horizon(growth, iterations, n_steps))
    for _ in range(iterations):  # the KL at twice the target, or at 0: the error clipped
        controller.update(2.0 if growth > 1 else 0.0, n_steps)
    assert controller.beta == pytest.approx(growth, rel=1e-6)
    exercises.check_kl_horizon(kl_horizon)


def test_every_checker_is_covered():
    assert sorted(n for n in dir(exercises) if n.startswith("check_")) == sorted(CHECKERS)


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_an_independent_correct_answer_passes(name, capsys):
    assert getattr(exercises, name)(CHECKERS[name]) is True
    assert "correct on all" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(CHECKERS))
@pytest.mark.parametrize("unfinished", [stub, ellipsis_stub])
def test_the_stub_is_not_done_yet_and_does_not_raise(name, unfinished, capsys):
    assert getattr(exercises, name)(unfinished) is None  # no Out[] line under a student's stub
    assert "not done yet" in capsys.readouterr().out


# ----------------------------------------------------------------------------- usual mistakes
MISTAKES = [
    ("check_next_token_loss",
     lambda logits, y: -logits.softmax(-1).gather(-1, y[..., None]).log().mean(),
     "huge logits"),
    ("check_next_token_loss",
     lambda logits, y: -logits.log_softmax(-1).gather(-1, y[..., None]).sum(),
     "expected"),
    ("check_unigram_loss", lambda tr, val, V: unigram_loss(tr, torch.cat([val[:1], val]), V),
     "small vocabulary"),
    ("check_unigram_loss", lambda tr, val, V: -(torch.bincount(tr, minlength=V).double()
                                                 / len(tr)).log()[val[1:]].mean().item(),
     "small vocabulary"),
    ("check_sft_labels", lambda ids, mask, n: ids.masked_fill(mask == 0, -100),
     "-100 on the first"),
    ("check_ranking_to_pairs", lambda r: list(zip(r, r[1:])), "K = 3"),
    ("check_ranking_to_pairs", lambda r: [(b, a) for a, b in ranking_to_pairs(r)], "K = 2"),
    ("check_bradley_terry_loss", lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(), "-200"),
    ("check_bradley_terry_loss", lambda c, r: F.softplus(c - r).mean(), "random scores"),
    ("check_td_errors", lambda r, v, m, g: (r + g * torch.cat([v[:, 1:], 0 * v[:, :1]], 1) - v) * m,
     "nan in the padding"),
    ("check_td_errors", lambda r, v, m, g: torch.where(m.bool(), r - v, 0.0), "worked example"),
    ("check_whiten",
     lambda x, m: torch.where(m.bool(), (x - x[m.bool()].mean()) / x[m.bool()].std(), 0.0),
     "POPULATION"),
    ("check_clipped_policy_loss",
     lambda lp, o, a, m, e: clipped_policy_loss(lp, o, a, torch.ones_like(m), e)
     if m.shape[0] > 1 else clipped_policy_loss(lp, o, a, m, e), "ragged"),
    # the clipped term alone: right on the worked example, wrong when A < 0
    ("check_clipped_policy_loss",
     lambda lp, o, a, m, e: -(torch.exp(lp - o).clamp(1 - e, 1 + e) * a)[m.bool()].mean(),
     "log-ratios ~ 0.5"),
    # padding zeroed by multiplying with the mask: nan * 0 = nan
    ("check_clipped_policy_loss",
     lambda lp, o, a, m, e: (torch.max(-a * torch.exp(lp - o), -a * torch.exp(lp - o).clamp(
         1 - e, 1 + e)) * m).sum() / m.sum(), "nan in the padding"),
    ("check_clipped_value_loss", lambda v, o, r, m, e: 0.5 * ((v - r) ** 2)[m.bool()].mean(),
     "beyond the clip"),
    ("check_penalised_rewards", score_at_last_column, "ragged batch"),
    ("check_dpo_loss", lambda pc, pr, rc, rr, beta: -torch.log(torch.sigmoid(
        beta * ((pc - rc) - (pr - rr)))).mean(), "wrong by 400 nats"),
    ("check_dpo_loss", lambda pc, pr, rc, rr, beta: torch.nn.functional.softplus(
        -((pc - rc) - (pr - rr))).mean(), "margin beta"),  # beta forgotten
    # the penalty not masked: the padding's garbage log-probs earn rewards
    ("check_penalised_rewards", lambda lp, ref, m, s, beta: -beta * (lp - ref)
     + penalised_rewards(lp, ref, m, s, 0.0), "ragged batch"),
    # the penalty masked by multiplying: nan * 0 = nan
    ("check_penalised_rewards", lambda lp, ref, m, s, beta: -beta * (lp - ref) * m
     + penalised_rewards(torch.zeros_like(lp), torch.zeros_like(ref), m, s, 0.0),
     "nan in the padding"),
    ("check_kl_estimate", lambda lp, ref, kind: {"k1": lp - ref, "k2": (ref - lp) ** 2 / 2,
                                                 "k3": torch.exp(ref - lp) - 1 - (ref - lp)}[kind],
     "tiny log-ratios"),
    ("check_kl_estimate", lambda lp, ref, kind: ref - lp, "k1, random"),
    # no compounding (growth spread evenly); the 0.2 clip forgotten; the sign of a shrinking beta
    ("check_kl_horizon", lambda g, it, n: 0.2 * n * it / abs(g - 1), "x10 in 40"),
    ("check_kl_horizon", lambda g, it, n: n / abs(g ** (1 / it) - 1), "x10 in 40"),
    ("check_kl_horizon", lambda g, it, n: 0.2 * n / (g ** (1 / it) - 1), "beta halves"),
    # the losses' values instead of their gradients; the ratio upside down; .grad not cleared
    ("check_ptx_coef_for", lambda pl, lm, params, share: share * pl.item() / lm.item(),
     "share 0.1"),
    ("check_ptx_coef_for",
     lambda pl, lm, params, share: share * gradient_norm(lm, params) / gradient_norm(pl, params),
     "share 0.1"),
    ("check_ptx_coef_for", lambda pl, lm, params, share: share * gradient_norm(pl, params) /
     gradient_norm(lm, params, clear=False), "share 0.1"),
    # resampling samples, not prompts; grouping by position (blocks of 3); prompt means
    ("check_bootstrap_interval", lambda o, g, seed=0, resamples=2000: bootstrap_interval(
        o, list(range(len(o))), seed, resamples), "30 prompts x 3 samples"),
    ("check_bootstrap_interval", lambda o, g, seed=0, resamples=2000: bootstrap_interval(
        o, [i // 3 for i in range(len(o))], seed, resamples), "30 prompts x 3 samples"),
    ("check_bootstrap_interval", lambda o, g, seed=0, resamples=2000: bootstrap_interval(
        o, g, seed, resamples, prompt_means=True), "unequal size"),
    # Dr. GRPO's advantage (the sample in its own baseline), GRPO's (divided by the std), the
    # other returns' sum divided by group_size instead of group_size - 1, one batch-wide baseline
    ("check_rloo_advantages", lambda r, k: (r.view(-1, k) - r.view(-1, k).mean(1, True)).flatten(),
     "worked example"),
    ("check_rloo_advantages", lambda r, k: ((r.view(-1, k) - r.view(-1, k).mean(1, True))
                                            / r.view(-1, k).std(1, True)).flatten(),
     "worked example"),
    ("check_rloo_advantages", lambda r, k: (
        r.view(-1, k) - (r.view(-1, k).sum(1, True) - r.view(-1, k)) / k).flatten(),
     "worked example"),
    ("check_rloo_advantages", lambda r, k: r - (r.sum() - r) / (len(r) - 1), "worked example"),
    # the gradient of KL(p || p_ref), k2's; the sign flipped; 0, as k1's
    ("check_k3_loss_gradient", lambda x, ref: x.softmax(-1) * (
        x.log_softmax(-1) - ref.log_softmax(-1) - (x.softmax(-1) * (
            x.log_softmax(-1) - ref.log_softmax(-1))).sum(-1, True)), "by hand"),
    ("check_k3_loss_gradient", lambda x, ref: ref.softmax(-1) - x.softmax(-1), "by hand"),
    ("check_k3_loss_gradient", lambda x, ref: torch.zeros_like(x), "by hand"),


    ("check_ensemble_combine", lambda s, c, penalty=None: combine_scores(s, c, penalty)
     if c != "uwo" else s.mean(0) - penalty * s.var(0), "uwo with penalty 1"),  # torch's M - 1
    ("check_ensemble_combine", lambda s, c, penalty=None: combine_scores(s, c, penalty)
     if c != "uwo" else s.mean(0) - penalty * s.std(0, unbiased=False), "uwo with penalty 1"),
    ("check_ensemble_combine", lambda s, c, penalty=None: s.mean(1) if c == "mean"
     else combine_scores(s, c, penalty), "mean"),  # over the answers, not the members
    ("check_online_pairs", lambda p, t, e, s: rank_two(p, t, e, [x + 1e-9 * i for i, x in
                                                               enumerate(s)]), "identical"),
    ("check_online_pairs", lambda p, t, e, s: (rank_two(p, t, e, s)[0],
                                               rank_two(p, t, e, s)[1] / 2), "tie exactly"),
    ("check_online_pairs", lambda p, t, e, s: rank_two(p, t, e, [round(x, 6) for x in s]),
     "1e-7"),
]


@pytest.mark.parametrize("name, wrong, names_the_case", MISTAKES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_a_usual_mistake_fails_with_the_case_and_a_hint(name, wrong, names_the_case):
    with pytest.raises(ExerciseError) as info:
        getattr(exercises, name)(wrong)
    message = str(info.value)
    assert name.removeprefix("check_") in message and "Hint:" in message
    assert names_the_case in message, message


def test_a_detached_ratio_has_the_right_value_and_fails_on_its_gradient(capsys):
    def detached(logp, old, adv, mask, eps):
        return clipped_policy_loss(logp.detach(), old, adv, mask, eps)  # no gradient to logp

    def half_gradient(logp, old, adv, mask, eps):  # right value, gradient halved
        loss = clipped_policy_loss(logp, old, adv, mask, eps)
        return 0.5 * loss + 0.5 * loss.detach()
    with pytest.raises(ExerciseError, match="(?s)carries no gradient to the log-probs.*Hint: keep"):
        exercises.check_clipped_policy_loss(detached)
    with pytest.raises(ExerciseError, match="the value is right, but its gradient is not"):
        exercises.check_clipped_policy_loss(half_gradient)
    assert exercises.check_clipped_policy_loss(clipped_policy_loss) is True
    assert "its gradient equals the package's too" in capsys.readouterr().out


def test_messages_say_what_differs():
    with pytest.raises(ExerciseError, match=r"expected shape \(1, 4\), got \(4,\)"):
        exercises.check_td_errors(lambda r, v, m, g: td_errors(r, v, m, g)[0])
    with pytest.raises(ExerciseError, match="expected a number, got 'a'"):
        exercises.check_bootstrap_interval(lambda o, g, seed=0, resamples=2000: ("a", "b"))
    with pytest.raises(ExerciseError, match="raised ZeroDivisionError") as info:
        exercises.check_kl_horizon(lambda *args: 1 / 0)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_difference_reports_the_first_wrong_entry():
    got, expected = torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert exercises._difference(got, expected, 1e-5, 1e-4) == \
        "1 of 4 values differ; first at index (1, 1): expected 4, got 5"
    assert exercises._difference(torch.tensor([[float("nan")]]), torch.ones(1, 1), 1e-5, 1e-4) == \
        "got nan at index (0, 0), expected 1"
    assert exercises._difference([(0, 1)], [(0, 1), (0, 2)], 0, 0).startswith("expected 2 items")
    assert exercises._difference(torch.tensor(2.0), 2.0, 0, 0) is None


def test_pair_checker_accepts_any_order_but_not_missing_pairs():
    assert exercises.check_ranking_to_pairs(lambda r: ranking_to_pairs(r)[::-1])
    with pytest.raises(ExerciseError, match="items"):
        exercises.check_ranking_to_pairs(lambda r: list(itertools.combinations(r, 2))[:-1])
