"""Judging sampled answers: gold tables, win rates with confidence intervals, KL to a reference.

Every stage is evaluated the same way: sample answers to the held-out prompts
(`generation.complete`), score each with `labeler.judge`, and compare two models pair by pair
with a noisy labeler: InstructGPT's headline metric, the win rate against a reference policy
(sec 4.1). The world-specific parts (the few-shot prefix of the prompted base model, the
behaviour metrics) live beside the judge in `rlhf_lite.labeler`.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch

from .batching import IGNORE_INDEX, encode_responses
from .generation import Completion, sequence_logprobs
from .kl import kl_estimate
from .labeler import MAX_GOLD, GoldLabeler, gold_score, judge
from .tokenizer import never_generated


def judge_all(prompts: list[dict], completions: list[Completion]):
    """A pandas table: one row per prompt with its response and the gold components."""
    import pandas as pd  # in the function: importing rlhf_lite stays light

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    rows = [{"category": p["category"], "prompt": p["prompt"], "response": text,
             **judge(p, text, ended).as_dict()} for p, (text, ended) in zip(prompts, completions)]
    return pd.DataFrame(rows)


def reward_exploits(table, rm_scores, top_share: float = 0.25, gold_share: float = 0.75):
    """The rows of a `judge_all` table that the reward model likes and the labeler does not:
    in the top `top_share` of the table by `rm_scores` (one per row), with a gold total below
    `gold_share` of a perfect answer's. Sorted by reward-model score, highest first, with the
    columns "RM score" and "RM rank" (the percentile) added."""
    if len(rm_scores) != len(table):
        raise ValueError(f"reward_exploits: {len(rm_scores)} scores for {len(table)} rows")
    table = table.assign(**{"RM score": [float(s) for s in rm_scores]})
    table["RM rank"] = table["RM score"].rank(pct=True)
    chosen = (table["RM rank"] > 1 - top_share) & (table.total < gold_share * MAX_GOLD)
    return table[chosen].sort_values("RM score", ascending=False)


def preferences(prompts: list[dict], ours: list[Completion],
                theirs: list[Completion], seed: int = 0) -> list[bool]:
    """For each prompt, whether a noisy gold labeler prefers `ours` to `theirs` (paper sec 4.1).

    Each pair is ranked by one noisy labeler judgement, as a person would choose between them;
    identical responses therefore split about 50/50.
    """
    if not len(prompts) == len(ours) == len(theirs):
        raise ValueError(f"lengths differ: {len(prompts)} prompts, {len(ours)} vs {len(theirs)}")
    labeler = GoldLabeler(seed=seed)
    return [labeler.rank(p, [a.text, b.text], [a.terminated, b.terminated])[0] == 0
            for p, a, b in zip(prompts, ours, theirs)]


def win_rate(prompts: list[dict], ours: list[Completion], theirs: list[Completion],
             seed: int = 0) -> dict:
    """How often a gold labeler prefers `ours` to `theirs` (`preferences`): the rate, the
    number of comparisons and a 95% confidence interval from a prompt-level bootstrap
    (`bootstrap_interval`: several samples of one prompt are not independent comparisons)."""
    wins = preferences(prompts, ours, theirs, seed)
    low, high = bootstrap_interval(wins, [p["id"] for p in prompts], seed)
    return {"win_rate": sum(wins) / len(wins), "n": len(wins), "low": low, "high": high}


def bootstrap_interval(outcomes: list[float], groups: list, seed: int = 0,
                       resamples: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval (95% by default: `level`) of the mean of `outcomes`, resampling whole
    groups.

    The 3 samples of one prompt share its difficulty, so they are not 3 independent
    comparisons; treating them as such (a binomial interval over all of them) makes the
    interval too narrow. Resampling prompts with replacement keeps each prompt's samples
    together. Seeded: the same call gives the same interval.
    """
    return percentile_interval(resampled_means(outcomes, groups, seed, resamples), level,
                               "bootstrap_interval")


def resampled_means(outcomes: list[float], groups: list, seed: int = 0,
                    resamples: int = 2000) -> torch.Tensor:
    """(resamples,) means of `outcomes`, each over whole groups drawn with replacement."""
    if len(outcomes) != len(groups) or not outcomes:
        raise ValueError(f"need one group per outcome: {len(outcomes)} outcomes, "
                         f"{len(groups)} groups")
    index = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    sums, counts = torch.zeros(len(index), dtype=torch.float64), torch.zeros(len(index))
    for value, group in zip(outcomes, groups):
        sums[index[group]] += float(value)
        counts[index[group]] += 1
    draw = torch.randint(len(index), (resamples, len(index)),
                         generator=torch.Generator().manual_seed(seed))  # (resamples, groups)
    return sums[draw].sum(1) / counts[draw].sum(1).double()


def percentile_interval(draws: torch.Tensor, level: float, caller: str) -> tuple[float, float]:
    """The central `level` interval of bootstrap `draws` (its two percentiles)."""
    if not 0 < level < 1:
        raise ValueError(f"{caller}: level must lie in (0, 1), got {level}")
    tail = (1 - level) / 2
    low, high = torch.quantile(draws, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return low.item(), high.item()


@dataclass(frozen=True)
class Difference:
    """The mean of paired differences (ours - theirs, item by item) and its interval (95%, or
    `level`): one way for every notebook to state a comparison and the verdict it earns. Where a
    notebook reads several comparisons at once, a wider `level` per comparison (Bonferroni: 1 -
    0.05 / m for m of them) keeps the chance that any interval excludes 0 by luck at 5%."""
    mean: float
    low: float
    high: float
    level: float = 0.95

    @property
    def verdict(self) -> str:
        """ "no difference measured" when the interval contains 0, else "higher" or "lower"."""
        if self.low <= 0 <= self.high:
            return "no difference measured"
        return "higher" if self.low > 0 else "lower"

    @property
    def resolved(self) -> bool:
        return not self.low <= 0 <= self.high

    def text(self, digits: int = 2, unit: str = "") -> str:
        """'+0.12 (95% CI -0.05 to +0.30): no difference measured'; `unit` follows each number."""
        def number(x):
            return f"{x:+.{digits}f}{unit}"
        return (f"{number(self.mean)} ({self.level * 100:.3g}% CI {number(self.low)} to "
                f"{number(self.high)}): {self.verdict}")

    def __str__(self) -> str:
        return self.text()

    def __neg__(self) -> "Difference":
        """theirs - ours: the same comparison the other way round."""
        return Difference(-self.mean, -self.high, -self.low, self.level)


def paired_difference(ours, theirs, groups: list, seed: int = 0,
                      resamples: int = 2000, level: float = 0.95) -> Difference:
    """`Difference` of two sequences of per-item values measured on the same items (lists,
    tensors or Series, in the same order), its interval resampling whole `groups` (the prompt
    of each answer, or each held-out window), as `bootstrap_interval`."""
    ours, theirs = [float(x) for x in ours], [float(x) for x in theirs]
    if len(ours) != len(theirs):
        raise ValueError(f"paired_difference: {len(ours)} values vs {len(theirs)}: a paired "
                         "comparison needs one value of each side per item")
    differences = [a - b for a, b in zip(ours, theirs)]
    low, high = bootstrap_interval(differences, groups, seed, resamples, level)
    return Difference(sum(differences) / len(differences), low, high, level)


def unpaired_difference(ours, our_groups: list, theirs, their_groups: list, seed: int = 0,
                        resamples: int = 2000, level: float = 0.95) -> Difference:
    """`Difference` of the means of two independent samples, ours - theirs: each side's whole
    groups (e.g. its prompts) resampled on their own, the interval the percentiles of the
    resampled differences. For two sides that nothing pairs (another set of prompts, as the
    training demonstrations against the policy's held-out answers); where both answered the
    same prompts, `paired_difference` is narrower."""
    ours, theirs = [float(x) for x in ours], [float(x) for x in theirs]
    draws = (resampled_means(ours, our_groups, seed, resamples)
             - resampled_means(theirs, their_groups, seed + 1, resamples))  # (resamples,)
    low, high = percentile_interval(draws, level, "unpaired_difference")
    return Difference(sum(ours) / len(ours) - sum(theirs) / len(theirs), low, high, level)


def student_t_quantile(q: float, df: int) -> float:
    """The q-quantile (q > 1/2) of Student's t distribution with `df` degrees of freedom: the
    x where the density's integral from 0 reaches q - 1/2 (Simpson's rule, then bisection)."""
    if not 0.5 < q < 1 or df < 1:
        raise ValueError(f"student_t_quantile needs 1/2 < q < 1 and df >= 1, got q={q}, df={df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def mass(x: float, steps: int = 2000) -> float:  # integral of the density over [0, x]
        t = torch.linspace(0, x, steps + 1, dtype=torch.float64)
        density = torch.exp(log_norm - (df + 1) / 2 * torch.log1p(t * t / df))
        weights = torch.ones(steps + 1, dtype=torch.float64)
        weights[1:-1:2], weights[2:-1:2] = 4, 2
        return (weights * density).sum().item() * x / (3 * steps)

    low, high = 0.0, 1.0
    while mass(high) < q - 0.5:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if mass(mid) < q - 0.5 else (low, mid)
    return (low + high) / 2


def seeds_and_prompts_difference(differences, level: float = 0.95) -> Difference:
    """`Difference` of a comparison repeated over training seeds and prompts: `differences`
    (S seeds, P prompts), ours - theirs per prompt (its samples' mean) for the runs of each
    seed, both sides answering the same prompts. Its mean, and an interval for it (95%, or
    `level`) when the seeds and the prompts are both draws (another seed, other prompts):

        var = s2(seed means) / S + s2(prompt means) / P

    The seed means share the prompts, so their spread misses the prompts' part; the prompt
    means share the seeds, so theirs misses the seeds'; the sum has both, and the answers' own
    noise twice (wide on purpose). The half-width uses Student's t with the Welch-Satterthwaite
    degrees of freedom of the sum (rounded down): about S - 1 when the seeds' spread
    dominates, more when the prompts' does. Simulated with 5 seeds and 100 prompts
    (tests/test_evaluation.py) it covered the true mean in 95-99% of data sets. Where another
    training seed moves a verdict more than the evaluation's noise does, this is the interval
    that says whether two recipes differ."""
    d = torch.tensor([[float(x) for x in row] for row in differences], dtype=torch.float64)
    if d.shape[0] < 2 or d.shape[1] < 2:
        raise ValueError("seeds_and_prompts_difference needs a (seeds, prompts) table with two "
                         f"seeds and two prompts or more, got shape {tuple(d.shape)}")
    S, P = d.shape
    by_seed, by_prompt = (d.mean(1).var() / S).item(), (d.mean(0).var() / P).item()
    if by_seed + by_prompt == 0:  # every value equal
        return Difference(d.mean().item(), d.mean().item(), d.mean().item(), level)
    df = (by_seed + by_prompt) ** 2 / (by_seed ** 2 / (S - 1) + by_prompt ** 2 / (P - 1))
    t = student_t_quantile(1 - (1 - level) / 2, max(1, math.floor(df)))
    half = t * math.sqrt(by_seed + by_prompt)
    return Difference(d.mean().item(), d.mean().item() - half, d.mean().item() + half, level)


def over_seeds(table, ours: str, theirs: str | None = None, column: str = "gold",
               level: float = 0.95) -> Difference:
    """`seeds_and_prompts_difference` of run `ours` minus run `theirs` in `column`, from a
    table of several training seeds of each run (a pandas DataFrame with one row per run, seed
    and prompt: columns "run", "seed", "prompt" and `column`, as `python -m bench.seeds`
    writes it): each seed's two runs paired prompt by prompt. `theirs` None: `column` itself is
    the difference (e.g. "gold - SFT"). `level`: as `seeds_and_prompts_difference`."""
    values = table.set_index(["run", "seed", "prompt"])[column]
    gap = values.loc[ours] if theirs is None else values.loc[ours] - values.loc[theirs]
    return seeds_and_prompts_difference(gap.unstack("prompt").to_numpy(), level)  # (S, P)


def gold_difference(paired: dict) -> Difference:
    """The gold comparison of a `paired_bootstrap` result as a `Difference` (its verdict and
    its sentence)."""
    return Difference(paired["gold_difference"], *paired["gold_ci"], paired["level"])


def paired_bootstrap(prompts: list[dict], ours: list[Completion], their_prompts: list[dict],
                     theirs: list[Completion], seed: int = 0, resamples: int = 2000,
                     level: float = 0.95) -> dict:
    """Two models compared on the same comparisons: `ours[i]` and `theirs[i]` answer the same
    prompt with the same sample index (as `judges.sample` lists them).

    Judged on the same prompts, two models share each prompt's difficulty: an easy prompt
    scores high for both. Comparing each model's own interval (or win rate against SFT) keeps
    that shared variation in both and cannot rank them; the difference per comparison cancels
    it. So both numbers are means over comparisons, with an interval (95%, or `level`) from one
    prompt-level bootstrap (`bootstrap_interval`, the same resampled prompts for both models):

    - "gold_difference": the mean of gold(ours) - gold(theirs), resolved when its interval
      "gold_ci" excludes 0 (`gold_difference` makes the two a `Difference`);
    - "win_rate": how often a noisy gold labeler prefers ours to theirs, head to head
      (`preferences`), resolved when "win_rate_ci" excludes 1/2.
    """
    if not len(prompts) == len(ours) == len(their_prompts) == len(theirs):
        raise ValueError(f"paired_bootstrap: lengths differ: {len(prompts)} prompts and "
                         f"{len(ours)} completions vs {len(their_prompts)} and {len(theirs)}")
    ids = [p["id"] for p in prompts]
    if ids != [p["id"] for p in their_prompts]:
        raise ValueError("paired_bootstrap: the two models answered different prompts (or in "
                         "another order): comparison i of both must share its prompt")
    gold = paired_difference([gold_score(p, a.text, a.terminated) for p, a in zip(prompts, ours)],
                             [gold_score(p, b.text, b.terminated) for p, b in zip(prompts, theirs)],
                             ids, seed, resamples, level)
    wins = preferences(prompts, ours, theirs, seed)
    win_ci = bootstrap_interval(wins, ids, seed, resamples, level)
    return {"gold_difference": gold.mean, "gold_ci": [gold.low, gold.high],
            "gold_resolved": gold.resolved,
            "win_rate": sum(wins) / len(wins), "win_rate_ci": list(win_ci),
            "win_rate_resolved": not win_ci[0] <= 0.5 <= win_ci[1], "n": len(wins),
            "level": level}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (better than p +- 2se near 0 or 1)."""
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return center - half, center + half


@torch.no_grad()
def kl_per_response(policy, reference, tokenizer, prompts: list[dict],
                    completions: list[Completion], batch_size: int = 64) -> torch.Tensor:
    """KL(policy || reference) of each response, in nats (N,), estimated on the policy's own
    samples: the sum over response tokens (eos included) of log pi(y_t) - log pi_ref(y_t) (k1),
    computed as PPO logs its KL: `generation.sequence_logprobs` (the never-generated tokens
    suppressed, as when sampling) and `kl.kl_estimate`. Per response, so that two policies'
    KLs can be compared paired over prompts (`bootstrap_interval` of the differences). Scored
    `batch_size` responses at a time: the logits of a batch take batch_size x T x vocabulary
    floats."""
    texts, ended = [c.text for c in completions], [c.terminated for c in completions]
    enc = encode_responses(tokenizer, [p["prompt"] for p in prompts], texts, ended)  # right-padded
    mask = enc["labels"][:, 1:] != IGNORE_INDEX  # (N, T-1) position t scores token t+1
    suppressed, per_response = never_generated(tokenizer), []
    for i in range(0, len(prompts), batch_size):
        rows = slice(i, i + batch_size)
        logp = [sequence_logprobs(model, enc["input_ids"][rows], enc["attention_mask"][rows],
                                  suppress_token_ids=suppressed)[0]  # (b, T-1)
                for model in (policy, reference)]
        per_response.append((kl_estimate(*logp, "k1") * mask[rows]).sum(1))  # (b,)
    return torch.cat(per_response)


def kl_to_reference(policy, reference, tokenizer, prompts: list[dict],
                    completions: list[Completion], batch_size: int = 64) -> float:
    """Mean KL(policy || reference) per response, in nats: the mean of `kl_per_response`."""
    return kl_per_response(policy, reference, tokenizer, prompts, completions,
                           batch_size).mean().item()


# ----------------------------------------------------------------------------- best-of-n
def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k: the chance that at least one of k samples is correct, estimated without bias
    from n >= k samples of which c are correct (Chen et al. 2021, "Evaluating Large Language
    Models Trained on Code", eq. 1): 1 - C(n - c, k) / C(n, k), the share of the k-subsets of
    the n samples that hold a correct one. The ratio is taken as the product
    prod_{i = n - c + 1}^{n} (1 - k / i), which never forms the huge binomials."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"pass_at_k: {name} must be an integer >= 0, got {value!r}")
    if k > n:
        raise ValueError(f"pass_at_k: k = {k} exceeds the n = {n} samples drawn")
    if c > n:
        raise ValueError(f"pass_at_k: c = {c} correct exceeds the n = {n} samples drawn")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def best_of_n(candidates: list[list[Completion]], scores: list[list[float]]) -> list[Completion]:
    """For each prompt, the candidate with the highest score (the first of equal ones): best-of-n
    sampling against a reward model, or against the gold score (the oracle)."""
    if [len(c) for c in candidates] != [len(s) for s in scores]:
        raise ValueError("best_of_n: every prompt needs one score per candidate")
    return [cands[max(range(len(s)), key=s.__getitem__)] for cands, s in zip(candidates, scores)]


def best_of_n_kl_bound(n: int) -> float:
    """KL(best-of-n || policy) = log n - (n - 1) / n in nats when no two samples tie (the usual
    formula; an upper bound otherwise, Beirami et al. 2024)."""
    return math.log(n) - (n - 1) / n


def best_of_n_kl(pool_scores: list[float], n: int) -> float:
    """KL(best-of-n || policy) of one prompt, with the policy's distribution estimated by a
    pool of its samples' scores: responses of equal score are one outcome (identical texts
    score alike). Over the pool's distinct scores s (probability p(s), cumulative F(s) and
    F-(s) = F(s) - p(s)), best-of-n picks s with probability q(s) = F(s)^n - F-(s)^n, and
    KL = sum q(s) log(q(s) / p(s)). With all scores distinct and a large pool it approaches
    `best_of_n_kl_bound`; repeated samples make it smaller, one repeated answer makes it 0."""
    counts = Counter(pool_scores)
    total, below, kl = len(pool_scores), 0, 0.0
    for count in (counts[level] for level in sorted(counts)):
        p = count / total
        q = ((below + count) / total) ** n - (below / total) ** n
        kl += q * math.log(q / p) if q > 0 else 0.0
        below += count
    return kl


def best_of_n_expected(selector: list[float], values: list[float], n: int) -> float:
    """The expected `values` entry of best-of-n from a pool of N samples of one prompt, picking
    by `selector` (the reward model's score; the gold score for the oracle): the mean over all
    C(N, n) subsets of n samples of the value of each subset's top sample, exact, with no
    resampling noise (the estimator of Nakano et al. 2021 and Gao et al. 2022).

    Sorted by selector, the samples below rank k are k - 1, so a level of equal selector scores
    holding ranks lo+1..hi is a subset's top with probability (C(hi, n) - C(lo, n)) / C(N, n);
    a tie picks any of its samples, so the level contributes the mean of its values.
    """
    if len(selector) != len(values) or not 1 <= n <= len(values):
        raise ValueError(f"best_of_n_expected: {len(selector)} scores and {len(values)} values "
                         f"for n = {n} (need equal lengths and 1 <= n <= pool size)")
    levels: dict[float, list[float]] = {}
    for s, v in zip(selector, values):
        levels.setdefault(s, []).append(v)
    total, below, expected = math.comb(len(values), n), 0, 0.0
    for level in sorted(levels):
        members = levels[level]
        top = math.comb(below + len(members), n) - math.comb(below, n)
        expected += top / total * sum(members) / len(members)
        below += len(members)
    return expected


def best_of_n_curve(pools: list[dict], ns: list[int]) -> list[dict]:
    """Best-of-n against the reward model and against the gold score, for each n in `ns`.

    `pools` holds one record per prompt: {"rm": [N reward-model scores], "gold": [N gold scores]}
    of N samples of the policy. Per n, the means over prompts of: the gold and RM scores of the
    RM's pick ("gold", "rm"), the gold score of the oracle's pick ("oracle gold"), and each
    pick's KL to the policy: `best_of_n_kl_bound` and the estimates from the scores that pick
    ("kl estimate" from the RM's, "oracle kl estimate" from the gold scores: `best_of_n_kl`,
    smaller when samples repeat, and the gold score has fewer distinct values).
    """
    def mean(per_prompt) -> float:
        return sum(per_prompt(p) for p in pools) / len(pools)

    return [{"n": n,
             "gold": mean(lambda p: best_of_n_expected(p["rm"], p["gold"], n)),
             "rm": mean(lambda p: best_of_n_expected(p["rm"], p["rm"], n)),
             "oracle gold": mean(lambda p: best_of_n_expected(p["gold"], p["gold"], n)),
             "kl bound": best_of_n_kl_bound(n),
             "kl estimate": mean(lambda p: best_of_n_kl(p["rm"], n)),
             "oracle kl estimate": mean(lambda p: best_of_n_kl(p["gold"], n))} for n in ns]


# Gao et al. (2022), "Scaling laws for reward model overoptimization": the gold reward gained
# over the initial policy as a function of d = sqrt(KL to it), R(d) = d (alpha - beta g(d)).
GAO_FORMS = {"best-of-n": lambda d: d,  # R = d (alpha - beta d)
             "rl": lambda d: math.log(d) if d > 0 else 0.0}  # R = d (alpha - beta log d)


def fit_gao(kl: list[float], gain: list[float], form: str) -> dict:
    """Least-squares fit of Gao et al.'s functional form `form` ("best-of-n" or "rl") to gold
    gains `gain` measured at KLs `kl` (nats). Both forms are linear in alpha and beta,
    R = alpha d - beta d g(d), so the fit is exact linear regression without intercept (R = 0
    at d = 0). Returns alpha, beta, their standard errors and the residual RMS."""
    if form not in GAO_FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {sorted(GAO_FORMS)}")
    if len(kl) != len(gain) or len(kl) < 3 or min(kl) < 0:
        raise ValueError(f"fit_gao needs 3 or more points with KL >= 0, one gain per KL "
                         f"(got {len(kl)} KLs, {len(gain)} gains)")
    d = torch.tensor(kl, dtype=torch.float64).sqrt()
    x = torch.stack([d, -d * torch.tensor([GAO_FORMS[form](v) for v in d.tolist()],
                                           dtype=torch.float64)], dim=1)  # (m, 2)
    y = torch.tensor(gain, dtype=torch.float64)
    coef = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]  # (2,)
    residual = y - x @ coef
    variance = (residual @ residual) / (len(y) - 2)
    se = (variance * torch.linalg.inv(x.T @ x).diagonal()).sqrt()
    return {"alpha": coef[0].item(), "beta": coef[1].item(), "alpha_se": se[0].item(),
            "beta_se": se[1].item(), "rmse": (residual.square().mean().sqrt()).item()}
