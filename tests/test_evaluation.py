"""Evaluation helpers: completions cut at eos, judgement tables, win rates and their intervals."""
import itertools
import math

import pytest
import torch

from rlhf_lite import evaluation, generation
from rlhf_lite.labeler import LABELER_NOISE, gold_score
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.tokenizer import load_tokenizer

ARITH = {"id": "a", "category": "arithmetic", "prompt": "what is two plus three ?",
         "meta": {"answer": "five"}}


def test_wilson_interval_hand_values():
    low, high = evaluation.wilson_interval(50, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    low, high = evaluation.wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)


def test_win_rate_of_better_answers_and_of_identical_answers():
    good, bad = (generation.Completion(t, True) for t in ("five .", "what is one plus one ?"))
    prompts = [{**ARITH, "id": f"a{i}"} for i in range(400)]  # 400 prompts, one sample each
    better = evaluation.win_rate(prompts, [good] * 400, [bad] * 400, seed=1)
    # gold scores 10 vs 5: the labeler prefers the answer with probability sigmoid(5 / noise)
    p = 1 / (1 + math.exp(-5 / LABELER_NOISE))
    assert abs(better["win_rate"] - p) < 3.5 * math.sqrt(p * (1 - p) / 400) and better["n"] == 400
    assert better["low"] < better["win_rate"] < better["high"]
    same = evaluation.win_rate(prompts, [good] * 400, [good] * 400, seed=1)
    assert same["low"] < 0.5 < same["high"]
    with pytest.raises(ValueError, match="lengths differ"):
        evaluation.win_rate(prompts, [good], [bad])


def test_bootstrap_interval_resamples_whole_prompts():
    # every outcome the same: no uncertainty left to resample
    assert evaluation.bootstrap_interval([1] * 30, list(range(30))) == (1.0, 1.0)
    # 60 independent coin-like outcomes: close to the binomial (Wilson) interval
    outcomes = [i % 2 for i in range(60)]
    low, high = evaluation.bootstrap_interval(outcomes, list(range(60)), seed=3)
    w_low, w_high = evaluation.wilson_interval(30, 60)
    assert abs(low - w_low) < 0.04 and abs(high - w_high) < 0.04, (low, high, w_low, w_high)
    # the same 60 outcomes as 20 prompts x 3 identical samples: really only 20 comparisons,
    # so the interval is wider (about sqrt 3 times) than one treating them as 60
    tripled = [i % 2 for i in range(20) for _ in range(3)]
    groups = [i for i in range(20) for _ in range(3)]
    t_low, t_high = evaluation.bootstrap_interval(tripled, groups, seed=3)
    assert (t_high - t_low) > 1.4 * (high - low), (t_low, t_high, low, high)
    assert evaluation.bootstrap_interval(tripled, groups, seed=3) == (t_low, t_high)  # seeded
    with pytest.raises(ValueError, match="one group per outcome"):
        evaluation.bootstrap_interval([1, 0], [0])


GOOD, BAD = (generation.Completion(t, True) for t in ("five .", "what is one plus one ?"))


def test_paired_bootstrap_hand_computed_cases():
    assert [gold_score(ARITH, c.text) for c in (GOOD, BAD)] == [10.0, 5.0]
    prompts = [{**ARITH, "id": f"a{i}"} for i in range(30)] * 2  # 30 prompts x 2 samples
    # every comparison differs by 5: no uncertainty left to resample
    same = evaluation.paired_bootstrap(prompts, [GOOD] * 60, prompts, [BAD] * 60, seed=1)
    assert (same["gold_difference"], same["gold_ci"], same["gold_resolved"]) == (5.0, [5.0, 5.0],
                                                                               True)
    wins = evaluation.preferences(prompts, [GOOD] * 60, [BAD] * 60, seed=1)
    assert same["win_rate"] == sum(wins) / 60 and same["n"] == 60  # the labeler's verdicts
    ids = [p["id"] for p in prompts]
    assert same["win_rate_ci"] == list(evaluation.bootstrap_interval(wins, ids, seed=1))
    identical = evaluation.paired_bootstrap(prompts, [GOOD] * 60, prompts, [GOOD] * 60)
    assert identical["gold_ci"] == [0.0, 0.0] and not identical["gold_resolved"]
    # two prompts, differences 5 and 0: a resample holds {5, 5}, {5, 0} or {0, 0}, with mean
    # 5, 2.5 or 0 (probability 1/4, 1/2, 1/4), so the 2.5% and 97.5% quantiles are 0 and 5
    two = prompts[:2]
    hand = evaluation.paired_bootstrap(two, [GOOD, GOOD], two, [BAD, GOOD])
    assert (hand["gold_difference"], hand["gold_ci"], hand["gold_resolved"]) == (2.5, [0.0, 5.0],
                                                                               False)

    assert evaluation.gold_difference(hand) == evaluation.Difference(2.5, 0.0, 5.0)
    assert str(evaluation.gold_difference(same)) == "+5.00 (95% CI +5.00 to +5.00): higher"


def test_difference_verdict_text_and_paired_difference_by_hand():
    assert evaluation.Difference(0.3, -0.1, 0.7).verdict == "no difference measured"
    assert evaluation.Difference(0.3, 0.0, 0.7).verdict == "no difference measured"  # 0 inside
    assert evaluation.Difference(0.3, 0.1, 0.7).verdict == "higher"
    assert evaluation.Difference(-0.3, -0.7, -0.1).verdict == "lower"
    assert not evaluation.Difference(0.3, -0.1, 0.7).resolved
    assert evaluation.Difference(-0.3, -0.7, -0.1).resolved
    assert (evaluation.Difference(-1.234, -2.5, -0.25).text(1, " points")
            == "-1.2 points (95% CI -2.5 points to -0.2 points): lower")
    assert -evaluation.Difference(-0.3, -0.7, -0.1) == evaluation.Difference(0.3, 0.1, 0.7)
    # two prompts, differences 5 and 0 (the second item of each prompt equal on both sides):
    # resampled means 5, 2.5 or 0 with probability 1/4, 1/2, 1/4, so the interval is [0, 5]
    d = evaluation.paired_difference(torch.tensor([6.0, 1.0, 2.0, 2.0]), [1, 1, 2, 2],
                                     ["a", "a", "b", "b"])
    assert d == evaluation.Difference(1.25, 0.0, 2.5)
    with pytest.raises(ValueError, match="3 values vs 2"):
        evaluation.paired_difference([1, 2, 3], [1, 2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="one group per outcome"):
        evaluation.paired_difference([1, 2], [1, 2], ["a"])


def test_a_wider_level_takes_the_resampled_means_outer_quantiles():
    outcomes = [float(i % 3) for i in range(60)]  # one outcome per prompt
    draw = torch.randint(60, (2000, 60), generator=torch.Generator().manual_seed(4))
    means = torch.tensor(outcomes, dtype=torch.float64)[draw].mean(1)  # the same resamples
    by_hand = torch.quantile(means, torch.tensor([0.005, 0.995], dtype=torch.float64)).tolist()
    wide = evaluation.bootstrap_interval(outcomes, list(range(60)), seed=4, level=0.99)
    assert wide == pytest.approx(by_hand, abs=1e-12)
    narrow = evaluation.bootstrap_interval(outcomes, list(range(60)), seed=4)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]
    # Bonferroni for three comparisons: each at 1 - 0.05 / 3, and the sentence says so
    d = evaluation.paired_difference(outcomes, [1.0] * 60, list(range(60)), level=1 - 0.05 / 3)
    assert d.level == 1 - 0.05 / 3 and d.text().startswith("+0.00 (98.3% CI -0.")
    assert (-d).level == d.level
    prompts = [{**ARITH, "id": f"a{i}"} for i in range(30)]
    paired = evaluation.paired_bootstrap(prompts, [GOOD] * 30, prompts, [BAD] * 30, level=0.9)
    assert evaluation.gold_difference(paired).text() == "+5.00 (90% CI +5.00 to +5.00): higher"
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\), got 95"):
        evaluation.bootstrap_interval(outcomes, list(range(60)), level=95)


def test_unpaired_difference_resamples_each_side_and_matches_the_normal_interval():
    # nothing varies: the difference is exact
    same = evaluation.unpaired_difference([1.0] * 6, list("abcdef"), [0.0] * 4, list("wxyz"))
    assert (same.mean, same.low, same.high) == (1.0, 1.0, 1.0)
    # two large Bernoulli samples, one outcome per prompt: the normal interval of p1 - p2
    ours = [float(i % 10 < 7) for i in range(400)]  # 0.7 of 400
    theirs = [float(i % 2) for i in range(300)]  # 0.5 of 300
    d = evaluation.unpaired_difference(ours, list(range(400)), theirs, list(range(300)))
    half = 1.96 * math.sqrt(0.7 * 0.3 / 400 + 0.5 * 0.5 / 300)
    assert d.mean == pytest.approx(0.2)
    assert (d.low, d.high) == pytest.approx((0.2 - half, 0.2 + half), abs=0.01)
    # three identical samples per prompt are one prompt's worth, not three: the same interval
    tripled = evaluation.unpaired_difference(ours * 3, list(range(400)) * 3, theirs,
                                             list(range(300)))
    assert (tripled.high - tripled.low) == pytest.approx(d.high - d.low, rel=0.1)
    assert evaluation.unpaired_difference(ours, list(range(400)), theirs, list(range(300)),
                                          level=0.99).low < d.low
    with pytest.raises(ValueError, match="one group per outcome"):
        evaluation.unpaired_difference([1.0, 2.0], ["a"], [1.0], ["b"])
    with pytest.raises(ValueError, match=r"unpaired_difference: level must lie"):
        evaluation.unpaired_difference([1.0], ["a"], [1.0], ["b"], level=1.5)


def test_student_t_quantiles_match_the_printed_table_and_a_simulation():
    # two-sided 95% values of any statistics table (df 1, 2, 4, 10, 30)
    for df, table in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert evaluation.student_t_quantile(0.975, df) == pytest.approx(table, abs=1e-3)
    assert evaluation.student_t_quantile(0.95, 4) == pytest.approx(2.132, abs=1e-3)
    # independent of the integral: t = z / sqrt(chi2 / df), sampled
    g = torch.Generator().manual_seed(0)
    z, chi2 = torch.randn(400_000, generator=g), torch.randn(400_000, 4, generator=g).pow(2).sum(1)
    simulated = torch.quantile((z / (chi2 / 4).sqrt())[:100_000], 0.975).item()
    assert simulated == pytest.approx(evaluation.student_t_quantile(0.975, 4), abs=0.05)
    with pytest.raises(ValueError, match="1/2 < q < 1"):
        evaluation.student_t_quantile(0.3, 4)


def test_seeds_and_prompts_difference_by_hand_and_by_simulation():
    # seed means 2, 3 (s2 0.5), prompt means 1.5, 3.5 (s2 2): var 0.5/2 + 2/2 = 1.25, degrees of
    # freedom 1.25^2 / (0.25^2 + 1^2) = 1.47, rounded down to 1 (t 12.706)
    d = evaluation.seeds_and_prompts_difference([[1.0, 3.0], [2.0, 4.0]])
    assert d.mean == 2.5 and d.high - 2.5 == pytest.approx(12.706 * math.sqrt(1.25), abs=1e-2)
    # every prompt alike: the t interval over the seeds' means, mean +- t(0.975, 2) sd / sqrt(3)
    d = evaluation.seeds_and_prompts_difference([[0.1] * 4, [0.2] * 4, [0.3] * 4])
    assert d.low == pytest.approx(0.2 - 4.303 * 0.1 / math.sqrt(3), abs=1e-3)
    # at 99% the same case takes t(0.995, 2) = 9.925 from the printed table
    d = evaluation.seeds_and_prompts_difference([[0.1] * 4, [0.2] * 4, [0.3] * 4], level=0.99)
    assert d.low == pytest.approx(0.2 - 9.925 * 0.1 / math.sqrt(3), abs=1e-3)
    assert d.text().startswith("+0.20 (99% CI")
    assert evaluation.seeds_and_prompts_difference([[0.5, 0.5]] * 2) == evaluation.Difference(
        0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"two seeds and two prompts or more, got shape \(1, 3\)"):
        evaluation.seeds_and_prompts_difference([[0.1, 0.2, 0.3]])
    # d = 0.2 + seed + prompt + noise, 5 seeds x 100 prompts: the interval covers 0.2 in about 95%
    # of data sets or more, whichever spread dominates; without the prompts' term (a t interval
    # over the seed means alone) it would not where the prompts' spread dominates
    g = torch.Generator().manual_seed(0)
    for seed_sd, prompt_sd in ((0.3, 0.0), (0.2, 0.2), (0.0, 1.0)):
        covered = 0
        for _ in range(400):
            d = (0.2 + seed_sd * torch.randn(5, 1, generator=g)
                 + prompt_sd * torch.randn(1, 100, generator=g) + torch.randn(5, 100, generator=g))
            r = evaluation.seeds_and_prompts_difference(d)
            covered += r.low <= 0.2 <= r.high
        assert covered / 400 >= 0.93, (seed_sd, prompt_sd, covered)


def test_paired_interval_is_narrower_than_unpaired_when_outcomes_correlate():
    """Both models answer the even prompts well and the odd ones badly (a shared difficulty);
    theirs is also bad on every 8th prompt. Each model's mean varies with which prompts a
    resample draws, the difference hardly does."""
    prompts = [{**ARITH, "id": f"a{i}"} for i in range(40)] * 3
    ours = [GOOD if int(p["id"][1:]) % 2 == 0 else BAD for p in prompts]
    theirs = [BAD if int(p["id"][1:]) % 8 == 0 else a for p, a in zip(prompts, ours)]
    paired = evaluation.paired_bootstrap(prompts, ours, prompts, theirs)
    ids = [p["id"] for p in prompts]
    half_widths = []
    for seed, answers in enumerate((ours, theirs)):  # each model resampled on its own
        low, high = evaluation.bootstrap_interval(
            [gold_score(p, c.text) for p, c in zip(prompts, answers)], ids, seed=seed)
        half_widths.append((high - low) / 2)
    unpaired = math.hypot(*half_widths)  # half-width of the difference of independent means
    low, high = paired["gold_ci"]
    assert paired["gold_difference"] == pytest.approx(5 * 5 / 40) and paired["gold_resolved"]
    assert (high - low) / 2 < 0.6 * unpaired, (paired["gold_ci"], unpaired)
    assert unpaired > paired["gold_difference"]  # unpaired, the difference is not resolved


def test_paired_bootstrap_rejects_misaligned_comparisons():
    prompts = [{**ARITH, "id": f"a{i}"} for i in range(3)]
    with pytest.raises(ValueError, match="lengths differ"):
        evaluation.paired_bootstrap(prompts, [GOOD] * 3, prompts, [GOOD] * 2)
    with pytest.raises(ValueError, match="different prompts"):
        evaluation.paired_bootstrap(prompts, [GOOD] * 3, prompts[::-1], [GOOD] * 3)


def test_complete_cuts_at_eos_and_reports_termination():
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=16))
    out = generation.complete(model, tokenizer, [ARITH] * 5, max_new_tokens=8, seed=0)
    assert len(out) == 5
    for text, ended in out:
        assert "<eos>" not in text and "<pad>" not in text
        assert ended or len(text.split()) == 8
    assert out == generation.complete(model, tokenizer, [ARITH] * 5, max_new_tokens=8, seed=0)
    table = evaluation.judge_all([ARITH] * 5, out)
    assert list(table.columns[:3]) == ["category", "prompt", "response"] and len(table) == 5


def test_reward_exploits_keeps_the_rm_top_quarter_below_three_quarters_gold():
    # eight answers to one sum: the right one (gold 10) and wrong ones (gold below 7.5)
    texts = ["five .", "six .", "seven .", "two .", "five .", "nine .", "one .", "four ."]
    table = evaluation.judge_all([ARITH] * 8, [generation.Completion(t, True) for t in texts])
    assert table.total[0] == 10 and (table.total[1:4] < 7.5).all()
    scores = [3.0, 2.0, 0.5, 2.5, 0.0, 1.0, 0.2, 0.1]  # the top quarter: rows 0 and 3
    exploits = evaluation.reward_exploits(table, scores)
    assert list(exploits.index) == [3]  # row 0 is in the top quarter but scores full gold
    assert exploits["RM score"].tolist() == [2.5] and exploits["RM rank"].tolist() == [7 / 8]
    # a looser cut: the top half by RM score, highest first
    assert list(evaluation.reward_exploits(table, scores, top_share=0.5).index) == [3, 1, 5]
    with pytest.raises(ValueError, match="7 scores for 8 rows"):
        evaluation.reward_exploits(table, scores[:7])


def test_best_of_n_picks_the_highest_score_per_prompt():
    a, b, c = (generation.Completion(t, True) for t in ("a", "b", "c"))
    assert evaluation.best_of_n([[a, b, c], [a, b]], [[0.1, 0.9, 0.5], [2.0, 2.0]]) == [b, a]
    with pytest.raises(ValueError, match="one score per candidate"):
        evaluation.best_of_n([[a, b]], [[1.0]])


def test_best_of_n_kl_against_its_bound_and_a_hand_computed_case():
    assert evaluation.best_of_n_kl_bound(1) == 0.0
    assert evaluation.best_of_n_kl_bound(16) == pytest.approx(math.log(16) - 15 / 16)
    # a large pool of distinct scores: the estimate approaches the formula
    pool = [i / 10_000 for i in range(10_000)]
    for n in (2, 4, 16):
        assert evaluation.best_of_n_kl(pool, n) == pytest.approx(
            evaluation.best_of_n_kl_bound(n), abs=1e-3)
    # two outcomes of probability 1/2 and n = 2: best-of-2 picks the better one with
    # probability 3/4, so KL = 3/4 log(3/2) + 1/4 log(1/2), below the bound 0.193
    kl = evaluation.best_of_n_kl([0.0, 0.0, 1.0, 1.0], 2)
    assert kl == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert kl < evaluation.best_of_n_kl_bound(2)
    assert evaluation.best_of_n_kl([3.0] * 8, 16) == 0.0  # one answer: nothing to pick


def brute_force_best_of_n(selector, values, n):
    """The mean over every n-subset of the value of its top sample (ties: their mean)."""
    import itertools
    picks = []
    for subset in itertools.combinations(range(len(values)), n):
        top = max(selector[i] for i in subset)
        tied = [values[i] for i in subset if selector[i] == top]
        picks.append(sum(tied) / len(tied))
    return sum(picks) / len(picks)


def test_best_of_n_expected_equals_enumerating_every_subset():
    selector = [0.3, -1.0, 0.3, 2.0, 0.5, 0.5, 0.5]  # ties included
    values = [7.0, 4.0, 9.0, 6.0, 10.0, 5.0, 8.0]
    for n in range(1, len(values) + 1):
        assert evaluation.best_of_n_expected(selector, values, n) == pytest.approx(
            brute_force_best_of_n(selector, values, n)), n
    assert evaluation.best_of_n_expected(selector, values, 1) == pytest.approx(sum(values) / 7)
    assert evaluation.best_of_n_expected(selector, values, 7) == 6.0  # the top selector's value
    with pytest.raises(ValueError, match="1 <= n <= pool size"):
        evaluation.best_of_n_expected(selector, values, 8)


def test_best_of_n_curve_oracle_bounds_the_reward_model_pick():
    import random
    rng = random.Random(0)
    pools = []
    for _ in range(20):
        gold = [float(rng.randrange(11)) for _ in range(16)]
        pools.append({"gold": gold, "rm": [g + rng.gauss(0, 3) for g in gold]})  # a noisy proxy
    rows = evaluation.best_of_n_curve(pools, [1, 2, 4, 8, 16])
    assert rows[0]["gold"] == pytest.approx(rows[0]["oracle gold"])  # n = 1: no choice made
    for row in rows:
        assert row["gold"] <= row["oracle gold"] + 1e-9
        assert row["kl estimate"] <= row["kl bound"] + 1e-9
        assert row["oracle kl estimate"] <= row["kl estimate"] + 1e-9  # gold has fewer values
    assert [r["rm"] for r in rows] == sorted(r["rm"] for r in rows)  # the proxy always rises
    assert rows[-1]["oracle gold"] == pytest.approx(sum(max(p["gold"]) for p in pools) / 20)


@pytest.mark.parametrize("form", ["best-of-n", "rl"])
def test_fit_gao_recovers_known_coefficients_and_matches_numpy(form):
    import numpy as np
    kl = [0.1, 0.5, 1.0, 2.0, 4.0, 8.0]
    d = np.sqrt(kl)
    g = d if form == "best-of-n" else np.log(d)
    exact = d * (1.5 - 0.4 * g)
    fit = evaluation.fit_gao(kl, exact.tolist(), form)
    assert (fit["alpha"], fit["beta"]) == (pytest.approx(1.5), pytest.approx(0.4))
    assert fit["rmse"] < 1e-9
    noisy = exact + np.array([0.05, -0.03, 0.02, -0.04, 0.01, 0.03])
    fit = evaluation.fit_gao(kl, noisy.tolist(), form)
    reference, *_ = np.linalg.lstsq(np.stack([d, -d * g], axis=1), noisy, rcond=None)
    assert (fit["alpha"], fit["beta"]) == (pytest.approx(reference[0]), pytest.approx(reference[1]))
    assert 0 < fit["alpha_se"] < 0.2 and 0 < fit["beta_se"] < 0.2


def test_fit_gao_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown form"):
        evaluation.fit_gao([1, 2, 3], [1, 2, 3], "dpo")
    with pytest.raises(ValueError, match="3 or more points"):
        evaluation.fit_gao([1, 2], [1, 2], "rl")
    with pytest.raises(ValueError, match="KL >= 0"):
        evaluation.fit_gao([1, -2, 3], [1, 2, 3], "rl")


def test_pass_at_k_hand_values():
    # n = 4 samples, c = 1 correct: a k-subset misses it with probability C(3, k) / C(4, k)
    assert evaluation.pass_at_k(4, 1, 1) == pytest.approx(1 / 4)
    assert evaluation.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)
    assert evaluation.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2) / C(5,2)
    assert evaluation.pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c / n
    assert evaluation.pass_at_k(4, 0, 3) == 0.0
    assert evaluation.pass_at_k(4, 2, 3) == 1.0  # every 3 of 4 holds one of 2 correct
    assert evaluation.pass_at_k(3, 3, 0) == 0.0  # no sample drawn, none correct
    # large n: the product form stays finite where the binomials would overflow a float
    assert evaluation.pass_at_k(2000, 1, 1000) == pytest.approx(0.5)


def test_pass_at_k_equals_enumerating_every_subset():
    for n in range(1, 7):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(outcomes, k))
                by_hand = sum(any(s) for s in subsets) / len(subsets)
                assert evaluation.pass_at_k(n, c, k) == pytest.approx(by_hand, abs=1e-12)


@pytest.mark.parametrize("n, c, k, field", [(4, 1, 5, "k = 5"), (4, 5, 1, "c = 5"),
                                            (-1, 0, 0, "n must"), (4, -1, 1, "c must"),
                                            (4, 1, -2, "k must"), (4.0, 1, 1, "n must")])
def test_pass_at_k_rejects_bad_counts(n, c, k, field):
    with pytest.raises(ValueError, match=field):
        evaluation.pass_at_k(n, c, k)
