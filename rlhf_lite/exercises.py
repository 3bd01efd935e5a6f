"""Checkers for the notebooks' exercises: your function against the package's, on random inputs.

Each `check_*` function takes the function you wrote in an exercise cell, runs it on seeded
random inputs (plus the edge cases that catch the usual mistakes) next to the `rlhf_lite`
function it re-implements, and

- prints "not done yet" and returns None while your function is still the stub (it raises
  NotImplementedError or returns None), so a notebook with open exercises runs to the end;
- raises `ExerciseError` on the first disagreement: which case, what was expected, what your
  function returned, and a hint;
- prints how many cases passed and returns True when all agree.

The worked solutions (notebooks/solutions/) call the same checkers.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable

import torch

from .batching import prompt_response_ids
from .data import load_records
from .dpo import dpo_loss, rank_two
from .evaluation import bootstrap_interval
from .gae import compute_gae, group_advantages, whiten
from .kl import (
    KINDS,
    estimator_gradients,
    kl_estimate,
    penalised_rewards,
)
from .labeler import ranking_to_pairs
from .model import GPT, GPTConfig
from .ppo import clipped_policy_loss, clipped_value_loss
from .pretrain import lm_loss, unigram_loss
from .reward import bradley_terry_loss, combine_member_scores
from .sft import tokenize_demonstrations
from .tokenizer import load_tokenizer


class ExerciseError(AssertionError):
    """Your function disagrees with the package's; the message says on what, and gives a hint."""


@dataclass
class Case:
    label: str  # what is special about this input, shown when it fails
    args: tuple  # positional arguments of the function under test
    expected: object  # the package's answer: a tensor, a number, or a list/tuple of them
    atol: float = 1e-5  # absolute tolerance of numbers
    rtol: float = 1e-4  # relative tolerance of numbers
    kwargs: dict = field(default_factory=dict)  # keyword arguments of the function under test


def _difference(got, expected, atol: float, rtol: float) -> str | None:
    """None if `got` equals `expected` within tolerance, else what differs (one sentence)."""
    if isinstance(expected, torch.Tensor) and expected.dim() > 0:
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor of shape {tuple(expected.shape)}, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        got, expected = got.detach().double(), expected.detach().double()
        if not torch.isfinite(got).all() and torch.isfinite(expected).all():
            where = tuple(torch.nonzero(~torch.isfinite(got))[0].tolist())
            return (f"got {got[where].item()} at index {where}, "
                    f"expected {expected[where].item():.6g}")
        close = torch.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)
        if close.all():
            return None
        where = tuple(torch.nonzero(~close)[0].tolist())
        return (f"{int((~close).sum())} of {close.numel()} values differ; first at index {where}: "
                f"expected {expected[where].item():.6g}, got {got[where].item():.6g}")
    if isinstance(expected, (str, bool)):  # text, flags: equal or not
        return None if got == expected else f"expected {expected!r}, got {got!r}"
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            return f"expected {len(expected)} items, got {got!r}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = _difference(g, e, atol, rtol)
            if problem:
                return f"item {i}: {problem}"
        return None
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            return f"expected a single number, got a tensor of shape {tuple(got.shape)}"
        got = got.item()
    elif hasattr(got, "item"):  # a numpy number
        got = got.item()
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        return f"expected a number, got {got!r} ({type(got).__name__})"
    expected = float(expected.item() if isinstance(expected, torch.Tensor) else expected)
    if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
        return None
    return f"expected {expected:.6g}, got {got:.6g}"


def run_cases(name: str, student: Callable, cases: list[Case], hint: str,
              normalize: Callable = lambda x: x) -> bool | None:
    """Run `student` on every case against its expected answer (see the module docstring).

    `normalize` maps an answer to a canonical form before comparing (e.g. sorts a list whose
    order does not matter).
    """
    for i, case in enumerate(cases, start=1):
        try:
            got = student(*case.args, **case.kwargs)
        except NotImplementedError:
            print(f"{name}: not done yet (the stub raises NotImplementedError). "
                  "Write your version above and run the cell again.")
            return None
        except Exception as e:
            raise ExerciseError(f"{name}: your function raised {type(e).__name__}: {e}\n"
                                f"  on case {i} of {len(cases)} ({case.label}).\n"
                                f"  Hint: {hint}") from e
        if got is None or got is Ellipsis:
            print(f"{name}: not done yet (your function returns {got!r}). "
                  "Write your version above and run the cell again.")
            return None
        problem = _difference(normalize(got), normalize(case.expected), case.atol, case.rtol)
        if problem:
            raise ExerciseError(f"{name}: wrong on case {i} of {len(cases)} ({case.label}):\n"
                                f"  {problem}.\n  Hint: {hint}")
    print(f"{name}: correct on all {len(cases)} cases. Well done!")
    return True


def _check_gradient(name: str, student: Callable, reference: Callable, args: tuple, hint: str
                   ) -> bool:
    """The gradient of the student's loss with respect to args[0] equals the package's: a loss
    can have the right value and no gradient (a detached ratio, `.item()`), and then PPO does
    not learn. Raises ExerciseError naming what differs."""
    grads = []
    for fn in (student, reference):
        x = args[0].clone().requires_grad_(True)
        loss = fn(x, *args[1:])
        loss = loss[0] if isinstance(loss, tuple) else loss
        if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
            raise ExerciseError(f"{name}: the value is right, but it carries no gradient to "
                                f"the log-probs.\n  Hint: {hint}")
        loss.backward()
        grads.append(x.grad)
    problem = _difference(grads[0], grads[1], 1e-5, 1e-4)
    if problem:
        raise ExerciseError(f"{name}: the value is right, but its gradient is not: {problem}."
                            f"\n  Hint: {hint}")
    print(f"{name}: its gradient equals the package's too.")
    return True


def _tiny_gpt(vocab_size: int, seed: int):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=16, n_layer=1, n_head=2,
                         n_embd=16)).eval()


def _ragged_mask(batch: int, length: int, g: torch.Generator) -> torch.Tensor:
    """(B, T) float mask: each row 1 on a random prefix of length 1..T, then 0."""
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    return (torch.arange(length)[None] < lengths[:, None]).float()


def _garbage_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x with nan where mask is 0: padded positions must not matter at all."""
    return torch.where(mask.bool(), x, float("nan"))


# ----------------------------------------------------------------------------- notebook 1
def check_next_token_loss(student: Callable) -> bool | None:
    """student(logits (B, T, V), targets (B, T)) -> mean next-token cross-entropy (a number).

    Against `rlhf_lite.pretrain.lm_loss` on tiny random GPTs."""
    cases = []
    for seed, (B, T, V, scale) in enumerate([(2, 5, 11, 1.0), (3, 8, 30, 1.0), (1, 1, 7, 1.0),
                                             (2, 6, 13, 300.0)]):
        model = _tiny_gpt(V, seed)
        with torch.no_grad():
            model.lm_head.weight.mul_(scale)  # 300: logits in the thousands
            g = torch.Generator().manual_seed(seed)
            x, y = torch.randint(V, (B, T), generator=g), torch.randint(V, (B, T), generator=g)
            cases.append(Case(f"B={B}, T={T}, V={V}" + (", huge logits" if scale > 1 else ""),
                              (model(x), y), lm_loss(model, (x, y)), rtol=1e-4))
    cases.append(Case("all logits 0: the loss of a uniform model is ln V = ln 5",
                      (torch.zeros(2, 3, 5), torch.tensor([[0, 1, 2], [3, 4, 0]])), math.log(5)))
    return run_cases("next_token_loss", student, cases,
                     "the mean over all B*T positions of -log_softmax(logits)[target]; use "
                     "log_softmax (softmax(...).log() gives -inf for huge logits) and gather the "
                     "targets' entries, or F.cross_entropy on (B*T, V) logits.")


def check_unigram_loss(student: Callable) -> bool | None:
    """student(train_stream (N,), val_stream (M,), vocab_size) -> float, like
    `rlhf_lite.pretrain.unigram_loss`."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for label, V, n_train, n_val, train_vocab in [("small vocabulary", 5, 50, 20, 5),
                                                  ("a larger one", 40, 500, 100, 40),
                                                  ("val words never seen in training",
                                                   12, 30, 30, 4)]:
        train = torch.randint(train_vocab, (n_train,), generator=g)
        val = torch.randint(V, (n_val,), generator=g)
        cases.append(Case(label, (train, val, V), unigram_loss(train, val, V)))
    return run_cases("unigram_loss", student, cases,
                     "count each word of the training stream (torch.bincount with minlength="
                     "vocab_size), add 1 to every count (add-one smoothing: an unseen word must "
                     "not cost infinity), normalise to probabilities, and average -log p over "
                     "val_stream[1:] (the first token has nothing before it to predict it).")


# ----------------------------------------------------------------------------- notebook 2
def check_sft_labels(student: Callable) -> bool | None:
    """student(input_ids (N, T), attention_mask (N, T), prompt_lengths (N,)) -> labels (N, T),
    as `rlhf_lite.sft.tokenize_demonstrations` builds them, on random demonstrations."""
    tokenizer, demos = load_tokenizer(), load_records("demonstrations")
    rng, cases = random.Random(0), []
    for n in (1, 4, 16):
        records = rng.sample(demos, n)
        batch = tokenize_demonstrations(records, tokenizer, block_size=64)
        prompt_lengths = torch.tensor([len(p) for p, _ in prompt_response_ids(
            tokenizer, [r["prompt"] for r in records], [r["response"] for r in records])])
        cases.append(Case(f"{n} random demonstration(s)",
                          (batch["input_ids"], batch["attention_mask"], prompt_lengths),
                          batch["labels"], atol=0, rtol=0))
    return run_cases("sft_labels", student, cases,
                     "start from a copy of input_ids; put -100 on the first prompt_lengths[i] "
                     "positions of row i (the prompt is read, not learned) and wherever "
                     "attention_mask is 0 (padding); the response and its eos keep their ids.")


# ----------------------------------------------------------------------------- notebook 3
def check_ranking_to_pairs(student: Callable) -> bool | None:
    """student(ranking: list[int], best first) -> the C(K, 2) (chosen, rejected) pairs it implies.
    Against `rlhf_lite.labeler.ranking_to_pairs`; the order of the pairs does not matter."""
    rng = random.Random(0)
    rankings = [[0, 1], [1, 0], [2, 0, 1]] + [rng.sample(range(k), k) for k in (4, 4, 6, 9)]
    cases = [Case(f"K = {len(r)}, ranking {r}", (r,), ranking_to_pairs(r)) for r in rankings]
    return run_cases("ranking_to_pairs", student, cases,
                     "which responses does the first-ranked one beat? and the second? Count "
                     "your pairs: K responses should give K (K - 1) / 2.",
                     normalize=lambda pairs: sorted(tuple(p) for p in pairs))


def check_bradley_terry_loss(student: Callable) -> bool | None:
    """student(r_chosen (P,), r_rejected (P,)) -> mean of -log sigmoid(r_chosen - r_rejected).
    Against `rlhf_lite.reward.bradley_terry_loss`, huge score differences included."""
    g = torch.Generator().manual_seed(0)
    pairs = [("equal scores: log 2", torch.zeros(3), torch.zeros(3)),
             ("random scores", torch.randn(8, generator=g), torch.randn(8, generator=g)),
             ("one pair", torch.tensor([2.0]), torch.tensor([0.0])),
             ("a difference of -200 (the RM badly wrong)", torch.tensor([-200.0, 1.0]),
              torch.tensor([0.0, 0.0])),
             ("a difference of +200", torch.tensor([200.0]), torch.tensor([0.0]))]
    cases = [Case(label, (c, r), bradley_terry_loss(c, r)) for label, c, r in pairs]
    return run_cases("bradley_terry_loss", student, cases,
                     "-log sigmoid(d) with d = r_chosen - r_rejected, averaged over pairs. "
                     "If a case with d = -200 fails: what is sigmoid(-200) in float32, and its "
                     "log? Look for a torch function that never forms sigmoid(d) itself.")


# ----------------------------------------------------------------------------- notebook 4
def check_td_errors(student: Callable) -> bool | None:
    """student(rewards, values, mask (B, T), gamma) -> one-step TD errors (B, T), 0 where mask
    is 0. Against `rlhf_lite.gae.compute_gae` with lam = 0; padding holds nan."""
    g = torch.Generator().manual_seed(0)
    cases = [Case("the worked example (gamma 1)", (torch.tensor([[0.0, -0.5, 0.0, 2.0]]),
                  torch.tensor([[1.0, 1.5, 1.0, 2.0]]), torch.ones(1, 4), 1.0),
                  torch.tensor([[0.5, -1.0, 1.0, 0.0]]))]
    for gamma, (B, T) in [(1.0, (4, 6)), (0.9, (8, 10)), (0.5, (3, 1))]:
        mask = _ragged_mask(B, T, g)
        rewards, values = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
        expected, _ = compute_gae(rewards, values, mask, gamma=gamma, lam=0.0)
        cases.append(Case(f"ragged batch {B}x{T}, gamma {gamma}, nan in the padding",
                          (_garbage_padding(rewards, mask), _garbage_padding(values, mask), mask,
                           gamma), expected))
    return run_cases("td_errors", student, cases,
                     "delta_t = r_t + gamma * V_{t+1} - V_t, where V_{t+1} = 0 after a row's last "
                     "valid token, and delta_t = 0 on padding. Whatever sits in the padding "
                     "must not reach a valid token: what is nan * 0?")


def check_whiten(student: Callable) -> bool | None:
    """student(x, mask (B, T)) -> (x - mean) / sqrt(var + 1e-8) over valid tokens, 0 elsewhere.
    Against `rlhf_lite.gae.whiten`; padding holds nan."""
    g = torch.Generator().manual_seed(1)
    cases = []
    for B, T in [(1, 5), (4, 7), (16, 20)]:
        mask = torch.ones(B, T) if B == 1 else _ragged_mask(B, T, g)
        x = 3 * torch.randn(B, T, generator=g) + 2
        cases.append(Case(f"{B}x{T}"
                          + (", ragged, nan in the padding" if B > 1 else ", no padding"),
                          (_garbage_padding(x, mask), mask), whiten(x, mask)))
    return run_cases("whiten", student, cases,
                     "mean and POPULATION variance (divide by the number of valid tokens, "
                     "not n - 1) over valid tokens only; add 1e-8 to the variance before the "
                     "square root; set padded positions to 0 with torch.where (nan * 0 is nan).")


# ----------------------------------------------------------------------------- notebook 5
def _ppo_batch(g: torch.Generator, B: int, T: int, spread: float):
    mask = _ragged_mask(B, T, g)
    old = -torch.rand(B, T, generator=g) * 3  # log-probs are <= 0
    new = old + spread * torch.randn(B, T, generator=g)  # ratios exp(spread * z), some clipped
    return new, old, mask


def check_clipped_policy_loss(student: Callable) -> bool | None:
    """student(logprobs, old_logprobs, advantages, mask (B, T), clip_eps) -> PPO's clipped loss.
    Against the loss (first output) of `rlhf_lite.ppo.clipped_policy_loss`."""
    g = torch.Generator().manual_seed(0)
    cases = [Case("the worked example: -(2 * 1.105 + 2 * 1.2) / 2",
                  (torch.tensor([[-1.0, -0.5]]), torch.tensor([[-1.1, -1.0]]),
                   torch.tensor([[2.0, 2.0]]), torch.ones(1, 2), 0.2),
                  -(2 * math.exp(0.1) + 2 * 1.2) / 2)]
    for eps, spread, (B, T) in [(0.2, 0.05, (4, 5)), (0.2, 0.5, (8, 12)), (0.1, 1.0, (6, 9))]:
        new, old, mask = _ppo_batch(g, B, T, spread)
        adv = torch.randn(B, T, generator=g)  # both signs
        cases.append(Case(f"{B}x{T} ragged, eps {eps}, log-ratios ~ {spread} * N(0, 1), "
                          "nan in the padding",
                          (_garbage_padding(new, mask), _garbage_padding(old, mask),
                           _garbage_padding(adv, mask), mask, eps),
                          clipped_policy_loss(new, old, adv, mask, eps)[0]))
    done = run_cases("clipped_policy_loss", student, cases,
                     "ratio = exp(logprobs - old_logprobs); per token take the max of "
                     "-A * ratio and -A * clamp(ratio, 1 - eps, 1 + eps) (the negated min of the "
                     "paper's objective), then average over valid tokens only; the padding "
                     "holds nan, and nan * 0 is nan.")
    if not done:
        return done
    new, old, mask = _ppo_batch(g, 6, 9, 0.5)  # log-ratios wide enough to clip some tokens
    return _check_gradient("clipped_policy_loss", student, clipped_policy_loss,
                          (new, old, torch.randn(6, 9, generator=g), mask, 0.2),
                          "keep the ratio a tensor of the graph: no .item(), .detach() or "
                          "torch.no_grad() on the way from logprobs to the loss; only the old "
                          "log-probs are constants.")


def check_penalised_rewards(student: Callable) -> bool | None:
    """student(logprobs, ref_logprobs, mask (B, N), scores (B,), beta) -> PPO's per-token
    rewards (B, N): -beta * (logprobs - ref_logprobs) on every response token, plus the RM
    score on each row's last real token. Against the rewards of `rlhf_lite.kl.penalised_rewards`
    (k1); the padding holds nan log-probs, which must earn nothing."""
    g = torch.Generator().manual_seed(4)
    cases = [Case("one response of 3 tokens, beta 0.5, score 2",
                  (torch.tensor([[-1.0, -0.2, -0.1]]), torch.tensor([[-1.5, -0.2, -0.3]]),
                   torch.ones(1, 3), torch.tensor([2.0]), 0.5),
                  torch.tensor([[-0.25, 0.0, -0.1 + 2.0]]))]
    for beta, (B, N) in [(0.1, (4, 6)), (0.0, (5, 7)), (0.05, (8, 1)), (0.3, (16, 12))]:
        mask = _ragged_mask(B, N, g)
        logp = -torch.rand(B, N, generator=g) * 3  # log-probs are <= 0
        ref = logp + 0.3 * torch.randn(B, N, generator=g)
        scores = torch.randn(B, generator=g)
        label = (f"ragged batch {B}x{N}, beta {beta}, nan in the padding"
                 + (" (only the scores)" if beta == 0 else ""))
        cases.append(Case(label, (_garbage_padding(logp, mask), _garbage_padding(ref, mask), mask,
                                  scores, beta),
                          penalised_rewards(logp, ref, mask, scores, beta)[0]))
    return run_cases("penalised_rewards", student, cases,
                     "KL_t = logprobs - ref_logprobs (k1), and 0 on padding, which holds nan "
                     "(nan * 0 is nan); rewards = -beta * KL_t; then add each row's score at its "
                     "LAST real token, index mask.sum(1) - 1, not at column -1 (rows are ragged).")


def check_clipped_value_loss(student: Callable) -> bool | None:
    """student(values, old_values, returns, mask (B, T), clip_eps) -> PPO's clipped value loss.
    Against `rlhf_lite.ppo.clipped_value_loss`."""
    g = torch.Generator().manual_seed(1)
    cases = [Case("one token moved beyond the clip: V 2, V_old 1, R 3, eps 0.2",
                  (torch.tensor([[2.0]]), torch.tensor([[1.0]]), torch.tensor([[3.0]]),
                   torch.ones(1, 1), 0.2), 0.5 * max((2 - 3) ** 2, (1.2 - 3) ** 2))]
    for eps, (B, T) in [(0.2, (4, 5)), (0.5, (8, 12)), (0.1, (3, 2))]:
        mask = _ragged_mask(B, T, g)
        old = torch.randn(B, T, generator=g)
        values = old + 0.5 * torch.randn(B, T, generator=g)
        returns = old + torch.randn(B, T, generator=g)
        cases.append(Case(f"{B}x{T} ragged, eps {eps}", (values, old, returns, mask, eps),
                          clipped_value_loss(values, old, returns, mask, eps)))
    return run_cases("clipped_value_loss", student, cases,
                     "clip the new value to [V_old - eps, V_old + eps]; per token take the max of "
                     "(V - R)^2 and (V_clipped - R)^2; average over valid tokens and multiply by "
                     "0.5.")


# ----------------------------------------------------------------------------- notebook 6
def check_kl_estimate(student: Callable) -> bool | None:
    """student(logp, ref_logp, kind) -> per-token k1, k2 or k3 estimate of KL(p || p_ref).
    Against `rlhf_lite.kl.kl_estimate`, tiny log-ratios included (where k3 needs expm1)."""
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 6, generator=g) * 4
    ref = logp + torch.randn(4, 6, generator=g)
    tiny_logp = torch.full((3,), -1.0)
    tiny_ref = tiny_logp + torch.tensor([1e-3, -2e-3, 5e-4])
    cases = [Case(f"{kind}, random log-probs", (logp, ref, kind), kl_estimate(logp, ref, kind))
             for kind in KINDS]
    cases += [Case(f"{kind}, tiny log-ratios (|log r| ~ 1e-3, so k3 ~ 5e-7)",
                   (tiny_logp, tiny_ref, kind), kl_estimate(tiny_logp, tiny_ref, kind),
                   atol=1e-9, rtol=1e-2) for kind in KINDS]
    return run_cases("kl_estimate", student, cases,
                     "with log r = ref_logp - logp: k1 = -log r, k2 = (log r)^2 / 2, "
                     "k3 = (r - 1) - log r. Compute r - 1 as torch.expm1(log r): exp(log r) - 1 "
                     "in float32 loses every digit of a tiny log r.")


def check_kl_horizon(student: Callable) -> bool | None:
    """student(growth, iterations, n_steps) -> the horizon H of Ziegler et al.'s controller at
    which beta changes by the factor `growth` over `iterations` batches of n_steps responses,
    every batch's error clipped (+0.2 if growth > 1, -0.2 if below): the closed form of
    `rlhf_lite.kl.AdaptiveKLController`'s compounded updates (tests/test_exercises.py runs the
    controller with it)."""
    def horizon(growth, iterations, n):
        return 0.2 * n / abs(growth ** (1 / iterations) - 1)

    settings = [("x10 in 40 iterations of 64 responses", (10.0, 40, 64)),
                ("x1.29 in 40 iterations of 64: about the preset's horizon", (1.29, 40, 64)),
                ("x2 in 10 iterations of 512 responses", (2.0, 10, 512)),
                ("one iteration of 64, x1.1: no compounding to undo", (1.1, 1, 64)),
                ("beta halves in 20 iterations of 64: the error clipped at -0.2", (0.5, 20, 64))]
    cases = [Case(label, args, horizon(*args), atol=1e-9, rtol=1e-6) for label, args in settings]
    return run_cases("kl_horizon", student, cases,
                     "with the error clipped, what does one update multiply beta by (e = +0.2 "
                     "or -0.2)? and `iterations` updates in a row?")


# ----------------------------------------------------------------------------- notebook 7
def check_ptx_coef_for(student: Callable) -> bool | None:
    """student(ppo_loss, lm_loss, params, share) -> the gamma at which gamma * lm_loss's gradient
    has `share` times the norm of ppo_loss's gradient, both with respect to `params`: PPO-ptx's
    coefficient chosen by what each term does to an update, not by the losses' values."""
    def norm(loss, params):
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        return torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()

    cases = []
    for seed, (share, offset) in enumerate([(0.1, 0.0), (1.0, 0.0), (0.5, 100.0)]):
        policy = _tiny_gpt(17, seed)
        params = list(policy.parameters())
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(17, (3, 8), generator=g)
        # a stand-in for the PPO loss: the log-probs of sampled tokens times random advantages
        logp = policy(x).log_softmax(-1).gather(-1, torch.randint(17, (3, 8, 1), generator=g))
        ppo_loss = -(logp.squeeze(-1) * torch.randn(3, 8, generator=g)).mean() + offset
        batch = (torch.randint(17, (3, 8), generator=g), torch.randint(17, (3, 8), generator=g))
        lm = lm_loss(policy, batch)
        label = f"share {share:g}" + (f", the PPO loss shifted by {offset:g} (same gradient)"
                                      if offset else "")
        cases.append(Case(label, (ppo_loss, lm, params, share),
                          share * norm(ppo_loss, params) / norm(lm, params), rtol=1e-4))
    return run_cases("ptx_coef_for", student, cases,
                     "what moves the weights is each term's gradient, not its value. Take each "
                     "loss's gradient with respect to params on its own (torch.autograd.grad "
                     "with retain_graph=True, or .grad cleared between two backward calls) and "
                     "its norm over all the parameters together.")


# ----------------------------------------------------------------------------- notebook 8
# ----------------------------------------------------------------------------- notebook 9
def check_dpo_loss(student: Callable) -> bool | None:
    """student(policy_chosen, policy_rejected, ref_chosen, ref_rejected (P,), beta) -> the mean
    DPO loss (a number). Against the loss of `rlhf_lite.dpo.dpo_loss`."""
    g = torch.Generator().manual_seed(9)
    zero = torch.zeros(3)
    cases = [Case("policy = reference: every implicit reward is 0, the loss is log 2",
                  (zero, zero, zero, zero, 0.1), math.log(2)),
             Case("one pair, margin beta * ((-1 - -2) - (-3 - -2)) = 0.5 * 2 = 1",
                  (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                   torch.tensor([-2.0]), 0.5), math.log(1 + math.exp(-1))),
             Case("a pair wrong by 400 nats at beta 1: log sigmoid must not be -inf",
                  (torch.tensor([-400.0]), torch.tensor([0.0]), torch.tensor([0.0]),
                   torch.tensor([0.0]), 1.0), 400.0)]
    for beta, P in [(0.1, 8), (1.0, 32)]:
        logp = [-20 * torch.rand(P, generator=g) for _ in range(4)]
        cases.append(Case(f"{P} random pairs, beta {beta}", (*logp, beta),
                          dpo_loss(*logp, beta)[0]))
    return run_cases("dpo_loss", student, cases,
                     "implicit reward r = beta * (log pi - log pi_ref) of each response; the loss "
                     "is the mean of -log sigmoid(r_chosen - r_rejected), with F.logsigmoid "
                     "(log(sigmoid(x)) is -inf for x = -400).")


def check_bootstrap_interval(student: Callable) -> bool | None:
    """student(outcomes, groups, seed=0, resamples=2000) -> (low, high): the 95% percentile
    interval of the mean of `outcomes`, resampling whole groups (prompts) with replacement.
    Against `rlhf_lite.evaluation.bootstrap_interval`, both with 20000 resamples: their own
    random draws differ, so the bounds are compared to 0.01 (the Monte Carlo noise of a bound
    is a few thousandths here; resampling samples instead of prompts moves them by 0.05-0.1)."""
    g = random.Random(0)
    agree = [float(g.random() < 0.5) for _ in range(30)]  # a prompt's 3 samples agree
    # the notebook's order: sample s of prompt j at s * 30 + j, so a prompt's samples are apart
    interleaved = ([agree[j] for _ in range(3) for j in range(30)],
                   [f"prompt-{j}" for _ in range(3) for j in range(30)])
    sizes = [1] * 12 + [8] * 4  # small prompts all lost, large ones all won
    unequal = ([float(size == 8) for size in sizes for _ in range(size)],
               [i for i, size in enumerate(sizes) for _ in range(size)])
    settings = [("30 prompts x 3 samples that agree within a prompt, listed as the notebook's "
                 "tables list them (sample s of prompt j at s * 30 + j)", interleaved),
                ("16 prompts of unequal size: the mean is over the outcomes of the drawn prompts, "
                 "not over prompt means", unequal),
                ("one prompt: every resample is the same, so low = high = the mean",
                 ([1.0, 0.0, 1.0], ["only"] * 3))]
    cases = [Case(label, args, bootstrap_interval(*args, resamples=20000), atol=0.01, rtol=0,
                  kwargs={"resamples": 20000}) for label, args in settings]
    return run_cases("bootstrap_interval", student, cases,
                     "draw as many prompts as there are, with replacement (a prompt drawn twice "
                     "counts twice), pool the outcomes of the drawn prompts and take their mean; "
                     "repeat `resamples` times; the 2.5% and 97.5% quantiles of those means are "
                     "the interval. Group by the `groups` labels, not by position.")


# ----------------------------------------------------------------------------- notebook 10
def check_rloo_advantages(student: Callable) -> bool | None:
    """student(returns (B,), group_size) -> (B,) RLOO's advantages: each return minus the mean
    of the other returns of its group (`group_size` consecutive returns), the sample itself left
    out (Ahmadian et al. 2024). Against `rlhf_lite.gae.group_advantages(..., "rloo")`."""
    g = torch.Generator().manual_seed(10)
    settings = [("worked example: one right answer of four, then a group all right",
                 torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]), 4),
                ("groups of 2: each sample's baseline is the other one",
                 torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0]), 2),
                ("a group whose returns nearly tie: GRPO's std would blow them up",
                 torch.tensor([0.5, 0.5001, 0.5, 0.5001, 2.0, -1.0, 0.0, 3.0]), 4),
                ("two groups with different means (the baseline is each group's own)",
                 torch.tensor([10.0, 12.0, 11.0, -3.0, -1.0, -2.0]), 3),
                ("random returns, 6 groups of 8", torch.randn(48, generator=g), 8)]
    cases = [Case(label, (returns, k), group_advantages(returns, k, "rloo"), atol=1e-6)
             for label, returns, k in settings]
    return run_cases("rloo_advantages", student, cases,
                     "view the returns as (number of groups, group_size); a sample's baseline is "
                     "the mean of the other group_size - 1 returns of its row, so the sample "
                     "itself is not in it (Dr. GRPO's mean includes it); no division by the std.")


def check_k3_loss_gradient(student: Callable) -> bool | None:
    """student(logits, ref_logits (..., V)) -> E_{y ~ p}[d k3(y) / d logits], the expected
    gradient of k3 placed in the loss (the sampled y held fixed, the gradient through log p(y)
    only, as GRPO's loss term), in closed form. Against `kl.estimator_gradients(...)["k3"]`."""
    g = torch.Generator().manual_seed(10)
    half, quarter = torch.zeros(2), torch.log(torch.tensor([0.25, 0.75]))
    settings = [("policy = reference: the gradient is 0", torch.randn(3, 5, generator=g), None),
                ("by hand: p = (1/2, 1/2), p_ref = (1/4, 3/4)", half, quarter),
                ("random logits, a batch of 4 positions over 7 tokens",
                 torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)),
                ("sharply peaked distributions (logits x 8)",
                 8 * torch.randn(2, 6, generator=g), 8 * torch.randn(2, 6, generator=g))]
    cases = []
    for label, logits, ref in settings:
        ref = logits.clone() if ref is None else ref
        cases.append(Case(label, (logits, ref), estimator_gradients(logits, ref)["k3"],
                          atol=1e-6))
    return run_cases("k3_loss_gradient", student, cases,
                     "the loss term is k3(y) = r - 1 - log r with log r = log p_ref(y) - log p(y). "
                     "With y fixed, d log p(y) / d logits = e_y - p; by the chain rule "
                     "d k3 / d logits = -(dk3 / dlog r) (e_y - p). Average over y with weights "
                     "p(y): the p(y) in the weight and the 1 / p(y) inside r cancel.")

# ----------------------------------------------------------------------------- notebook 11
def check_ensemble_combine(student: Callable) -> bool | None:
    """student(scores (M, B), combine, penalty=None) -> the combined scores (B,): "mean",
    "min" (the worst case) or "uwo" (mean - penalty * variance over the members). Against
    `rlhf_lite.reward.combine_member_scores`, which `RewardEnsemble` uses."""
    g = torch.Generator().manual_seed(11)
    worked = torch.tensor([[1.0, 1.5], [2.0, 1.5], [3.0, 1.5]])
    settings = [
        ("the worked example, mean", worked, "mean", None),
        ("the worked example, min", worked, "min", None),
        ("the worked example, uwo with penalty 1", worked, "uwo", 1.0),
        ("one member: every combination is its own score", torch.randn(1, 5, generator=g),
         "uwo", 2.0),
        ("one member, min", torch.randn(1, 5, generator=g), "min", None),
        ("uwo with penalty 0 is the mean", torch.randn(4, 6, generator=g), "uwo", 0.0),
        ("5 members, 7 answers, min", 2 * torch.randn(5, 7, generator=g), "min", None),
        ("5 members, 7 answers, uwo with penalty 0.5", 2 * torch.randn(5, 7, generator=g),
         "uwo", 0.5),
        ("2 members, 3 answers, mean", torch.randn(2, 3, generator=g), "mean", None)]
    cases = [Case(label, (scores, combine), combine_member_scores(scores, combine, penalty),
                  kwargs={} if penalty is None else {"penalty": penalty})
             for label, scores, combine, penalty in settings]
    return run_cases("ensemble_combine", student, cases,
                     "each combination reduces over the members' dimension of the (M, B) "
                     "scores; for uwo, which variance did Coste et al. use, and is it the "
                     "one torch.var computes by default?")


def check_online_pairs(student: Callable) -> bool | None:
    """student(prompts (B records), texts, terminated, scores (2 B each, a prompt's two samples
    in rows 2i, 2i + 1)) -> (rankings, tied share): online DPO's pairs. Against
    `rlhf_lite.dpo.rank_two`; a ranking is compared by its "prompt", "responses",
    "terminated" and "ranking"."""
    prompts = [{"id": f"p{i}", "prompt": f"question {i} ?"} for i in range(4)]
    texts = ["yes .", "no .", "a .", "a .", "b .", "c", "d .", "e ."]
    ended = [True, True, True, True, True, False, True, True]
    rng = random.Random(11)
    settings = [
        ("every pair differs, the first sample wins twice", prompts,
         [2.0, 1.0, 0.5, -0.5, -1.0, 1.0, 0.0, 3.0]),
        ("prompt 1's two samples are identical and tie exactly: left out", prompts,
         [2.0, 1.0, 0.7, 0.7, -1.0, 1.0, 0.0, 3.0]),
        ("every prompt ties: no rankings, tied share 1", prompts, [0.25] * 8),
        ("scores that differ by 1e-7 are not a tie: an exact comparison", prompts,
         [1.0, 1.0 + 1e-7, 0.0, 0.0, 2.0, 1.0, -1.0, -1.0]),
        ("one prompt", prompts[:1], [-1.0, 1.0]),
        ("random scores with ties", prompts, [float(rng.choice([0, 1, 2])) for _ in range(8)])]
    cases = [Case(label, (batch, texts[: 2 * len(batch)], ended[: 2 * len(batch)], scores),
                  rank_two(batch, texts[: 2 * len(batch)], ended[: 2 * len(batch)], scores))
             for label, batch, scores in settings]

    def comparable(answer):
        rankings, tied = answer
        return ([[r.get(key) for key in ("prompt", "responses", "terminated", "ranking")]
                 if isinstance(r, dict) else r for r in rankings], tied)

    return run_cases("online_pairs", student, cases,
                     "prompt i's samples are texts[2 * i] and texts[2 * i + 1]; keep the prompt "
                     "only if its two scores differ (a != b, no tolerance), with ranking [0, 1] "
                     "if the first scored higher, else [1, 0]; the tied share is over the B "
                     "prompts, not the 2 B samples.",
                     normalize=lambda answer: comparable(answer) if isinstance(answer, tuple)
                     and len(answer) == 2 else answer)
