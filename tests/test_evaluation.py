"""Evaluation helpers: completions cut at eos, judgement tables, win rates and their intervals."""
import pytest
import torch

from rlhf_lite import evaluation, generation
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
    good, bad = ("five .", True), ("what is one plus one ?", True)
    prompts = [ARITH] * 400
    better = evaluation.win_rate(prompts, [good] * 400, [bad] * 400, seed=1)
    # gold scores 8 vs 5: the labeler prefers the answer with probability sigmoid(3 / 0.9) = 0.97
    assert 0.93 < better["win_rate"] < 1.0 and better["n"] == 400
    assert better["low"] < better["win_rate"] < better["high"]
    same = evaluation.win_rate(prompts, [good] * 400, [good] * 400, seed=1)
    assert same["low"] < 0.5 < same["high"]
    with pytest.raises(ValueError, match="lengths differ"):
        evaluation.win_rate(prompts, [good], [bad])


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
