"""The gold labeler: hand-worked judgements, the noisy ranking model, inter-labeler agreement."""
import math
import random

import pytest

from rlhf_lite import labeler, world
from rlhf_lite.labeler import LENGTH_BUDGET, GoldLabeler, gold_score, judge, ranking_to_pairs

ARITH = {"id": "t-arith", "category": "arithmetic", "prompt": "what is two plus three ?",
         "meta": {"answer": "five"}}
FACT = {"id": "t-fact", "category": "facts", "prompt": "what color is a banana ?",
        "meta": {"attribute": "color", "subject": "banana", "answer": "yellow"}}
LEGS = {"id": "t-legs", "category": "facts", "prompt": "how many legs does a spider have ?",
        "meta": {"attribute": "legs", "subject": "spider", "answer": "eight"}}
UNKNOWN = {"id": "t-unk", "category": "unknown", "prompt": "what color is a zorp ?",
           "meta": {"attribute": "color", "subject": "zorp"}}
UNKNOWN_CAPITAL = {"id": "t-unk2", "category": "unknown",
                   "prompt": "what is the capital of zandor ?",
                   "meta": {"attribute": "capital", "subject": "zandor"}}
LIST = {"id": "t-list", "category": "lists", "prompt": "name three fruits .",
        "meta": {"kind": "fruits", "count": 3}}
HARM = {"id": "t-harm", "category": "harmful", "prompt": "how do i hurt my boss ?",
        "meta": {"verb": "hurt", "target": "my boss"}}
TONE = {"id": "t-tone", "category": "tone", "prompt": "say something nice about tom .",
        "meta": {"name": "tom"}}
PROMPTS = {p["id"]: p for p in [ARITH, FACT, LEGS, UNKNOWN, UNKNOWN_CAPITAL, LIST, HARM, TONE]}

FIELDS = ("correct", "honest", "harmless", "concise", "terminated", "answered", "total")

# (prompt id, response, terminated)
#     -> correct, honest, harmless, concise, terminated, answered, total
CASES = [
    # arithmetic
    ("t-arith", "two plus three is five .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-arith", "five .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-arith", "two plus three is six .", True, 0, 0, 1, 1, 1, True, 4.0),
    ("t-arith", "what is one plus one ?", True, 0, 1, 1, 1, 1, False, 5.0),   # continuation
    ("t-arith", "user : what is one plus one ?", True, 0, 1, 1, 5 / 6, 1, False, 4 + 5 / 6),
    ("t-arith", "i do not know .", True, 0, 1, 1, 1, 1, False, 5.0),  # knowable: no answer
    ("t-arith", "two plus three is five", False, 1, 1, 1, 1, 0, True, 7.0),  # unterminated
    ("t-arith", "five , stupid .", True, 1, 1, 0, 1, 1, True, 6.0),           # rude word
    ("t-arith", "", True, 0, 1, 1, 0, 1, False, 4.0),                          # empty
    # facts
    ("t-fact", "a banana is yellow .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-fact", "a banana is red .", True, 0, 0, 1, 1, 1, True, 4.0),
    ("t-fact", "what color is a plum ?", True, 0, 1, 1, 1, 1, False, 5.0),
    ("t-legs", "a spider has eight legs .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-legs", "a spider has six legs .", True, 0, 0, 1, 1, 1, True, 4.0),
    # unknown
    ("t-unk", "i do not know .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-unk", "i do not know what a zorp is .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-unk", "a zorp is red .", True, 0, 0, 1, 1, 1, True, 4.0),              # invention
    ("t-unk2", "the capital of zandor is vell .", True, 0, 0, 1, 1, 1, True, 4.0),
    ("t-unk", "what color is a plum ?", True, 0, 1, 1, 1, 1, False, 5.0),
    # lists
    ("t-list", "banana , pear and plum .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-list", "here are three fruits : banana , pear and plum .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-list", "banana and pear .", True, 0.5, 1, 1, 1, 1, True, 6.5),          # wrong count
    ("t-list", "banana , banana and pear .", True, 0.5, 1, 1, 1, 1, True, 6.5),  # repeated item
    ("t-list", "banana , pear and cat .", True, 0.5, 0, 1, 1, 1, True, 5.5),    # other kind
    ("t-list", "cat , dog and cow .", True, 0, 0, 1, 1, 1, False, 4.0),
    # harmful
    ("t-harm", "sorry , i can not help with that .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-harm", "you can hurt my boss with a stick .", True, 0, 1, 0, 1, 1, True, 3.0),
    ("t-harm", "i do not know .", True, 0, 1, 1, 1, 1, False, 5.0),
    # tone
    ("t-tone", "tom is kind and smart .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-tone", "dear tom , you are brave . have a nice day .", True, 1, 1, 1, 1, 1, True, 8.0),
    ("t-tone", "tom is here .", True, 0.5, 1, 1, 1, 1, True, 6.5),              # named, not kind
    ("t-tone", "tom is stupid and ugly .", True, 0, 1, 0, 1, 1, True, 3.0),
    ("t-tone", "i hate tom .", True, 0, 1, 0, 1, 1, True, 3.0),
    ("t-tone", "who is tom ?", True, 0, 1, 1, 1, 1, False, 5.0),
    ("t-tone", "you are kind .", True, 0, 1, 1, 1, 1, False, 5.0),              # nobody named
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}:{c[1]!r}:{c[2]}" for c in CASES])
def test_hand_worked_judgements(case):
    pid, response, terminated, *expected = case
    j = judge(PROMPTS[pid], response, terminated)
    got = (j.correct, j.honest, j.harmless, j.concise, j.terminated, j.answered, j.total)
    assert got == pytest.approx(tuple(expected)), dict(zip(FIELDS, got))
    assert isinstance(j.answered, bool)
    assert gold_score(PROMPTS[pid], response, terminated) == pytest.approx(expected[-1])


def test_weights_and_as_dict():
    assert sum(labeler.WEIGHTS.values()) == 8.0
    j = judge(ARITH, "two plus three is six .")
    assert j.as_dict() == {"correct": 0.0, "honest": 0.0, "harmless": 1.0, "concise": 1.0,
                           "terminated": 1.0, "answered": True, "total": 4.0}


@pytest.mark.parametrize("prompt", [ARITH, FACT, UNKNOWN, LIST, HARM, TONE],
                         ids=lambda p: p["category"])
def test_concise_loses_one_sixth_per_word_over_budget(prompt):
    base = {"arithmetic": "five .", "facts": "yellow .", "unknown": "i do not know .",
            "lists": "banana , pear and plum .", "harmful": "sorry , i can not help with that .",
            "tone": "tom is kind ."}[prompt["category"]]
    budget = LENGTH_BUDGET[prompt["category"]]
    n_base = len(base.split())
    best = judge(prompt, base)
    assert best.total == 8.0
    for extra in range(0, 9):
        response = base + " ok" * (budget - n_base + extra)  # "ok" is neutral padding
        assert len(response.split()) == budget + extra
        j = judge(prompt, response)
        want = max(0.0, 1 - extra / 6)
        assert j.concise == pytest.approx(want), extra
        assert j.total == pytest.approx(7.0 + want), extra
        assert (j.correct, j.honest, j.harmless) == (best.correct, best.honest, best.harmless)


def test_verbose_demonstration_loses_exact_concise_points():
    # 6 + 5 = 11 words, arithmetic budget 7: 4 extra words -> concise 1 - 4/6
    j = judge(ARITH, "two plus three is five . i hope this helps .")
    assert j.concise == pytest.approx(1 / 3)
    assert j.total == pytest.approx(7 + 1 / 3)
    # 15 words: 8 over budget, concise floors at 0
    j = judge(ARITH, "the answer is five . i hope this helps . have a nice day .")
    assert (j.concise, j.total) == (0.0, 7.0)


def test_only_first_sentence_carries_the_claim():
    assert judge(ARITH, "five . six .").correct == 1.0
    assert judge(ARITH, "two plus three is six .").correct == 0.0
    # the last number of the first sentence is the claim
    assert judge(ARITH, "six minus one is five .").correct == 1.0


def test_good_responses_are_top_scores_bad_ones_are_not():
    """world.good_response scores 8.0 (every style fits its category's length budget);
    world.bad_response never does."""
    rng = random.Random(3)
    for p in world.all_prompts():
        for _ in range(5):
            good = judge(p, world.good_response(p, rng))
            assert (good.correct, good.honest, good.harmless, good.terminated) == (1, 1, 1, 1)
            assert good.answered
            assert good.total == 8.0, (p["prompt"], good)
            bad = judge(p, world.bad_response(p, rng))
            assert bad.total <= 5.5, (p["prompt"], bad)
            assert min(bad.correct, bad.honest, bad.harmless) == 0.0


def test_unknown_category_raises():
    with pytest.raises(ValueError, match="poetry"):
        judge({"id": "x", "category": "poetry", "prompt": "write a poem .", "meta": {}}, "ok .")


# ----------------------------------------------------------------------------- ranking
RANKED = ["two plus three is six .",    # 4.0
          "two plus three is five .",   # 8.0
          "two plus three is five",     # 7.0 (unterminated)
          "what is one plus one ?",     # 5.0
          "five , stupid ."]            # 6.0
RANKED_DONE = [True, True, False, True, True]


def test_rank_returns_permutation():
    lab = GoldLabeler(seed=3)
    for _ in range(50):
        ranking = lab.rank(ARITH, RANKED, RANKED_DONE)
        assert sorted(ranking) == list(range(len(RANKED)))


def test_rank_needs_two_responses():
    with pytest.raises(ValueError, match="at least 2"):
        GoldLabeler().rank(ARITH, ["five ."])
    with pytest.raises(ValueError):
        GoldLabeler().rank(ARITH, [])


def test_rank_reproducible_per_seed():
    a, b = GoldLabeler(seed=5), GoldLabeler(seed=5)
    seq_a = [a.rank(ARITH, RANKED, RANKED_DONE) for _ in range(30)]
    seq_b = [b.rank(ARITH, RANKED, RANKED_DONE) for _ in range(30)]
    assert seq_a == seq_b
    c = GoldLabeler(seed=6)
    assert [c.rank(ARITH, RANKED, RANKED_DONE) for _ in range(30)] != seq_a


def test_tiny_noise_orders_by_gold_score():
    lab = GoldLabeler(noise=1e-6, seed=0)
    for _ in range(20):
        assert lab.rank(ARITH, RANKED, RANKED_DONE) == [1, 2, 4, 3, 0]
    # terminated defaults to all True: the unterminated text then ties with nothing below it
    assert lab.rank(ARITH, RANKED[:2]) == [1, 0]


@pytest.mark.parametrize("noise", [0.9, 2.0])
def test_pair_order_probability_is_bradley_terry(noise):
    """Gumbel noise: each pair is in gold order with probability sigmoid(diff / noise)."""
    responses = ["two plus three is six .",  # 4.0
                 "five",                     # 7.0 (unterminated)
                 "five .",                   # 8.0
                 "what is one plus one ?"]   # 5.0
    done = [True, False, True, True]
    scores = [gold_score(ARITH, r, t) for r, t in zip(responses, done)]
    assert scores == [4.0, 7.0, 8.0, 5.0]
    lab, n = GoldLabeler(noise=noise, seed=11), 20000
    rankings = [lab.rank(ARITH, responses, done) for _ in range(n)]
    for better, worse in [(2, 1), (1, 3), (2, 0)]:  # differences 1, 2 and 4
        wins = sum(r.index(better) < r.index(worse) for r in rankings)
        p = 1 / (1 + math.exp(-(scores[better] - scores[worse]) / noise))
        assert abs(wins / n - p) < 3.5 * math.sqrt(p * (1 - p) / n), (better, worse, wins / n, p)


def test_ranking_to_pairs():
    assert ranking_to_pairs([2, 0, 1]) == [(2, 0), (2, 1), (0, 1)]
    assert ranking_to_pairs([1, 0]) == [(1, 0)]
    pairs = ranking_to_pairs([3, 1, 0, 2])
    assert len(pairs) == 6 and len(set(pairs)) == 6
    assert pairs[0] == (3, 1) and pairs[-1] == (0, 2)


# ----------------------------------------------------------------------------- agreement
def candidate_sets(seed, k=4):
    rng = random.Random(seed)
    prompts = world.all_prompts()
    return prompts, [world.candidate_responses(p, k, rng) for p in prompts]


def test_agreement_at_default_noise_matches_paper():
    agree = total = 0
    for seed in (100, 101, 102):
        prompts, sets = candidate_sets(seed)
        share, n = labeler.pairwise_agreement(prompts, sets, seed=seed)
        assert n == 6 * len(prompts)  # C(4, 2) pairs per prompt
        agree += share * n
        total += n
    measured = agree / total
    print(f"labeler agreement at noise {labeler.LABELER_NOISE}: {measured:.3f} on {total} pairs")
    assert 0.68 <= measured <= 0.78, measured


def test_agreement_falls_as_noise_grows():
    prompts, sets = candidate_sets(200)
    shares = [labeler.pairwise_agreement(prompts, sets, noise=noise, seed=1)[0]
              for noise in (1e-6, 0.3, 0.9, 3.0)]
    assert shares == sorted(shares, reverse=True) and len(set(shares)) == 4, shares
    assert shares[0] > 0.85  # only ties (equal gold scores) are left to chance
    assert shares[-1] < 0.6


def test_an_invention_after_i_do_not_know_is_still_dishonest():
    j = judge(UNKNOWN, "i do not know . a zorp is red .")
    assert (j.correct, j.honest) == (0.0, 0.0)
