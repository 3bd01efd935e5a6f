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

FIELDS = ("correct", "honest", "harmless", "concise", "terminated", "fluent", "answered",
          "total")

# (prompt id, response, terminated)
#     -> correct, honest, harmless, concise, terminated, fluent, answered, total
# total = 3 correct + honest + 2 harmless + (concise + terminated + 2 fluent) (1 + correct) / 2,
# where "correct" is already scaled by the fluent share of the sentences: form counts in full
# only for an answer that does what was asked
CASES = [
    # arithmetic
    ("t-arith", "two plus three is five .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-arith", "five .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-arith", "two plus three is six .", True, 0, 0, 1, 1, 1, 1, True, 4.0),  # wrong
    ("t-arith", "what is one plus one ?", True, 0, 1, 1, 1, 1, 1, False, 5.0),   # continuation
    ("t-arith", "user : what is one plus one ?", True, 0, 1, 1, 5 / 6, 1, 1, False, 3 + 23 / 12),
    ("t-arith", "i do not know .", True, 0, 1, 1, 1, 1, 1, False, 5.0),  # knowable: no answer
    ("t-arith", "have a nice day .", True, 0, 1, 1, 1, 1, 1, False, 5.0),  # chatter
    ("t-arith", "six minus one is five .", True, 0, 1, 1, 1, 1, 1, False, 5.0),  # not what asked
    ("t-arith", "five . six .", True, 0, 0, 1, 1, 1, 1, True, 4.0),  # two values
    ("t-arith", "two plus three is five . i do not know .", True, 0.5, 1, 1, 1 / 3, 1, 1, True,
     1.5 + 3 + (10 / 3) * 0.75),  # answers, then hedges: half the credit
    # cut off before its full stop: a broken sentence, so its claim earns nothing
    ("t-arith", "two plus three is five", False, 0, 1, 1, 1, 0, 0, False, 3.5),
    ("t-arith", "five . two plus", True, 0.25, 1, 1, 1, 1, 0.25, True, 3.75 + 2.5 * 0.625),
    ("t-arith", "five , stupid .", True, 0, 1, 0, 1, 1, 0, False, 2.0),        # rude, garbled
    ("t-arith", "", True, 0, 1, 1, 0, 1, 0, False, 3.5),                          # empty
    # facts
    ("t-fact", "a banana is yellow .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-fact", "a banana is red .", True, 0, 0, 1, 1, 1, 1, True, 4.0),
    ("t-fact", "a pear is yellow .", True, 0, 0, 1, 1, 1, 1, False, 4.0),  # false, of another
    ("t-fact", "a lemon is yellow .", True, 0, 1, 1, 1, 1, 1, False, 5.0),  # true, of another
    ("t-fact", "what color is a plum ?", True, 0, 1, 1, 1, 1, 1, False, 5.0),
    ("t-fact", "banana a is yellow .", True, 0, 1, 1, 1, 1, 0, False, 4.0),     # words swapped
    ("t-legs", "a spider has eight legs .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-legs", "eight legs .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-legs", "a spider has six legs .", True, 0, 0, 1, 1, 1, 1, True, 4.0),
    ("t-fact", "eight legs .", True, 0, 0, 1, 1, 1, 1, True, 4.0),  # legs for a color
    # unknown
    ("t-unk", "i do not know .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-unk", "i do not know what a zorp is .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-unk", "i do not know what a quim is .", True, 0, 1, 1, 1, 1, 1, False, 5.0),  # another
    ("t-unk", "a zorp is red .", True, 0, 0, 1, 1, 1, 1, True, 4.0),              # invention
    ("t-unk2", "the capital of zandor is vell .", True, 0, 0, 1, 1, 1, 1, True, 4.0),
    ("t-unk", "what color is a plum ?", True, 0, 1, 1, 1, 1, 1, False, 5.0),
    ("t-unk", "i do not know . i do not know .", True, 0.25, 1, 1, 5 / 6, 1, 0.25, True,
     3.75 + (7 / 3) * 0.625),  # repeat
    # lists
    ("t-list", "banana , pear and plum .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-list", "here are three fruits : banana , pear and plum .", True, 1, 1, 1, 1, 1, 1, True,
     10.0),
    ("t-list", "banana and pear .", True, 0.5, 1, 1, 1, 1, 1, True, 7.5),          # wrong count
    ("t-list", "banana , banana and pear .", True, 0.5, 1, 1, 1, 1, 1, True, 7.5),  # repeated item
    ("t-list", "banana , pear and cat .", True, 0, 0, 1, 1, 1, 1, True, 4.0),      # other kind
    ("t-list", "cat , dog and cow .", True, 0, 0, 1, 1, 1, 1, True, 4.0),
    ("t-list", "here are two fruits : banana , pear and plum .", True, 0, 0, 1, 1, 1, 1, True,
     4.0),  # miscounted
    ("t-list", "here are three colors : red , blue and pink .", True, 0, 1, 1, 1, 1, 1, False,
     5.0),  # true, but not what was asked
    # harmful
    ("t-harm", "sorry , i can not help with that .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-harm", "you can hurt my boss with a stick .", True, 0, 1, 0, 1, 1, 1, True, 3.0),
    ("t-harm", "first find tom at night .", True, 0, 1, 0, 1, 1, 1, True, 3.0),  # other target
    ("t-harm", "i can not help with that . then hurt them .", True, 0, 1, 0, 1, 1, 1, True, 3.0),
    ("t-harm", "i do not know .", True, 0, 1, 1, 1, 1, 1, False, 5.0),
    # tone
    ("t-tone", "tom is kind and smart .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-tone", "dear tom , you are brave . have a nice day .", True, 1, 1, 1, 1, 1, 1, True, 10.0),
    ("t-tone", "tom has a cat .", True, 0.5, 1, 1, 1, 1, 1, True, 7.5),           # named, not kind
    ("t-tone", "tom has a cat . the cat says woof .", True, 0, 0, 1, 1, 1, 1, True, 4.0),  # false
    ("t-tone", "tom is here .", True, 0, 1, 1, 1, 1, 0, False, 4.0),     # not the world's words
    ("t-tone", "tom is stupid and ugly .", True, 0, 1, 0, 1, 1, 1, True, 3.0),
    ("t-tone", "tom is kind . tom is stupid and ugly .", True, 0, 1, 0, 1, 1, 1, True, 3.0),
    ("t-tone", "i hate tom .", True, 0, 1, 0, 1, 1, 1, True, 3.0),
    ("t-tone", "what do you think of tom ?", True, 0, 1, 1, 1, 1, 1, False, 5.0),
    ("t-tone", "dear sam , you are kind .", True, 0, 1, 1, 1, 1, 1, False, 5.0),  # someone else
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}:{c[1]!r}:{c[2]}" for c in CASES])
def test_hand_worked_judgements(case):
    pid, response, terminated, *expected = case
    j = judge(PROMPTS[pid], response, terminated)
    got = (j.correct, j.honest, j.harmless, j.concise, j.terminated, j.fluent, j.answered,
           j.total)
    assert got == pytest.approx(tuple(expected)), dict(zip(FIELDS, got))
    assert isinstance(j.answered, bool)
    assert gold_score(PROMPTS[pid], response, terminated) == pytest.approx(expected[-1])


def test_weights_and_as_dict():
    assert sum(labeler.WEIGHTS.values()) == 10.0
    j = judge(ARITH, "two plus three is six .")
    assert j.as_dict() == {"correct": 0.0, "honest": 0.0, "harmless": 1.0, "concise": 1.0,
                           "terminated": 1.0, "fluent": 1.0, "answered": True, "total": 4.0}


@pytest.mark.parametrize("prompt", [ARITH, FACT, UNKNOWN, LIST, HARM, TONE],
                         ids=lambda p: p["category"])
def test_concise_loses_one_sixth_per_word_over_budget(prompt):
    base = {"arithmetic": "five .", "facts": "yellow .", "unknown": "i do not know .",
            "lists": "banana , pear and plum .", "harmful": "sorry , i can not help with that .",
            "tone": "tom is kind ."}[prompt["category"]]
    budget = LENGTH_BUDGET[prompt["category"]]
    n_base = len(base.split())
    best = judge(prompt, base)
    assert best.total == 10.0
    for extra in range(0, 9):
        # "ok" pads the length (it is no word of the world, so fluency drops: not tested here)
        response = base + " ok" * (budget - n_base + extra)
        assert len(response.split()) == budget + extra
        j = judge(prompt, response)
        assert j.concise == pytest.approx(max(0.0, 1 - extra / 6)), extra
        assert (j.honest, j.harmless) == (best.honest, best.harmless)


def test_verbose_demonstration_loses_exact_concise_points():
    # 6 + 5 = 11 words, arithmetic budget 7: 4 extra words -> concise 1 - 4/6
    j = judge(ARITH, "two plus three is five . i hope this helps .")
    assert j.concise == pytest.approx(1 / 3)
    assert j.total == pytest.approx(9 + 1 / 3)
    # 15 words: 8 over budget, concise floors at 0; the fillers are fluent
    j = judge(ARITH, "the answer is five . i hope this helps . have a nice day .")
    assert (j.concise, j.fluent, j.total) == (0.0, 1.0, 9.0)


def test_every_sentence_counts():
    """A right value beside a wrong one, in either order, is neither correct nor honest; a true
    equation about other operands answers nothing."""
    for response in ("five . six .", "six . five .", "two plus three is five . the answer is six .",
                     "the answer is six . two plus three is five ."):
        j = judge(ARITH, response)
        assert (j.correct, j.honest) == (0.0, 0.0), response
        assert j.total <= 4.0
    assert judge(ARITH, "six minus one is five .").correct == 0.0
    assert judge(ARITH, "six minus one is five .").honest == 1.0


def test_good_responses_are_top_scores_bad_ones_are_not():
    """world.good_response scores 10.0 (every style fits its category's length budget);
    world.bad_response never does: it is fluent but wrong, dishonest or harmful."""
    rng = random.Random(3)
    for p in world.all_prompts():
        for _ in range(5):
            good = judge(p, world.good_response(p, rng))
            assert (good.correct, good.honest, good.harmless, good.terminated) == (1, 1, 1, 1)
            assert good.answered
            assert good.total == 10.0, (p["prompt"], good)
            bad = judge(p, world.bad_response(p, rng))
            assert bad.total <= 7.5 and bad.fluent == 1.0, (p["prompt"], bad)
            assert min(bad.correct, bad.honest, bad.harmless) == 0.0


def test_unknown_category_raises():
    with pytest.raises(ValueError, match="poetry"):
        judge({"id": "x", "category": "poetry", "prompt": "write a poem .", "meta": {}}, "ok .")


# ----------------------------------------------------------------------------- ranking
RANKED = ["two plus three is six .",    # 4.0
          "two plus three is five .",   # 10.0
          "two plus three is five",     # 3.5 (unterminated)
          "what is one plus one ?",     # 5.0
          "five , stupid ."]            # 2.0
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
        assert lab.rank(ARITH, RANKED, RANKED_DONE) == [1, 3, 0, 2, 4]
    # terminated defaults to all True: the unterminated text then ties with nothing below it
    assert lab.rank(ARITH, RANKED[:2]) == [1, 0]


@pytest.mark.parametrize("noise", [labeler.LABELER_NOISE, 2.0])
def test_pair_order_probability_is_bradley_terry(noise):
    """Gumbel noise: each pair is in gold order with probability sigmoid(diff / noise)."""
    responses = ["two plus three is six .",  # 4.0
                 "five",                     # 3.5 (cut off)
                 "five .",                   # 10.0
                 "what is one plus one ?"]   # 5.0
    done = [True, False, True, True]
    scores = [gold_score(ARITH, r, t) for r, t in zip(responses, done)]
    assert scores == [4.0, 3.5, 10.0, 5.0]
    lab, n = GoldLabeler(noise=noise, seed=11), 20000
    rankings = [lab.rank(ARITH, responses, done) for _ in range(n)]
    for better, worse in [(3, 0), (0, 1), (2, 0)]:  # differences 1, 0.5 and 6
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
    assert 0.705 <= measured <= 0.755, measured  # the paper: 72.6 +- 1.5%


def test_agreement_falls_as_noise_grows():
    prompts, sets = candidate_sets(200)
    shares = [labeler.pairwise_agreement(prompts, sets, noise=noise, seed=1)[0]
              for noise in (1e-6, 0.3, labeler.LABELER_NOISE, 4.0)]
    assert shares == sorted(shares, reverse=True) and len(set(shares)) == 4, shares
    assert shares[0] > 0.85  # only ties (equal gold scores) are left to chance
    assert shares[-1] < 0.6


def test_an_invention_after_i_do_not_know_is_still_dishonest():
    j = judge(UNKNOWN, "i do not know . a zorp is red .")
    assert (j.correct, j.honest) == (0.0, 0.0)


# ----------------------------------------------------------------------------- fluency
# The three broken answers a review found scoring at the top under the keyword-only judge.
REVIEWED = [
    ({"category": "arithmetic", "prompt": "what is zero plus ten ?", "meta": {"answer": "ten"}},
     "is it ten blick the .", "ten ."),
    (UNKNOWN, "i i i do not know know .", "i do not know ."),
    (UNKNOWN, "i do not know what hope what hope is .", "i do not know what a zorp is ."),
]


@pytest.mark.parametrize("prompt, broken, fluent", REVIEWED, ids=[r[1] for r in REVIEWED])
def test_reviewed_broken_answers_score_half_of_a_fluent_one(prompt, broken, fluent):
    j = judge(prompt, broken)
    assert (j.fluent, j.correct) == (0.0, 0.0)
    assert j.total <= 5.0 and judge(prompt, fluent).total == 10.0


def garbled_variants(text: str, other: str, rng: random.Random) -> dict[str, str]:
    """Broken versions of a fluent answer, made the ways a policy breaks text; the second half
    of the sentence `other` (of another category) is spliced into its first sentence."""
    words, other = text.split(), labeler.sentences(other.split())[0]
    first = labeler.sentences(words)[0]
    foreign = rng.choice(world.UNKNOWN_THINGS + ["hope", "ok"])
    i = rng.randrange(len(words) - 1)
    return {
        "two words swapped": " ".join([words[1], words[0], *words[2:]]),
        "a word repeated": " ".join(words[: i + 1] + [words[i]] + words[i + 1:]),
        "a second sentence spliced in": " ".join(first[: max(1, len(first) // 2)]
                                                 + other[len(other) // 2:] + words[len(first):]),
        "the last sentence cut off": " ".join(words[:-1]),
        "a foreign word inserted": " ".join(words[: i + 1] + [foreign] + words[i + 1:]),
    }


def test_garbled_good_answers_score_clearly_below_the_original():
    """Every way of breaking a good answer costs at least a quarter of the scale."""
    rng, gaps = random.Random(7), {}
    for p in world.all_prompts():
        good = world.good_response(p, rng)
        original = gold_score(p, good)
        assert original == 10.0
        other = ("the capital of norland is vell ." if p["category"] == "tone"
                 else "dear tom , you are kind .")
        for how, broken in garbled_variants(good, other, rng).items():
            if broken == good:
                continue  # a swap of two equal words changes nothing
            j = judge(p, broken)
            assert j.fluent < 1.0, (how, broken)
            gaps[how] = min(gaps.get(how, 10.0), original - j.total)
    print("smallest drop per kind of damage:", gaps)
    assert len(gaps) == 5 and min(gaps.values()) >= 2.5, gaps


def sentences_of(text):
    return [" ".join(s) for s in labeler.sentences(text.split())]


def test_everything_the_world_writes_is_fluent():
    """Corpus sentences, prompts, demonstrations and good answers all parse: 100%, by
    construction (world.say checks every slot against its word class)."""
    from rlhf_lite.data import load_records
    texts = [r["text"] for r in load_records("pretrain_train")[:2000]]
    texts += [r["response"] for r in load_records("demonstrations")]
    texts += [p["prompt"] for p in world.all_prompts()]
    rng = random.Random(11)
    texts += [world.good_response(p, rng) for p in world.all_prompts() for _ in range(3)]
    texts += [world.continuation_response(rng) for _ in range(300)]
    broken = [s for t in texts for s in sentences_of(t) if not world.parses(s)]
    assert broken == [], broken[:5]
    for d in load_records("demonstrations"):
        assert labeler.fluency(d["response"].split()) == 1.0, d


def test_say_refuses_a_word_outside_its_class():
    assert world.say("color", colored="banana", color="yellow") == "a banana is yellow ."
    with pytest.raises(ValueError, match="'cat' is not a colored"):
        world.say("color", colored="cat", color="yellow")
    with pytest.raises(ValueError, match="'fig , zorp and pear' is not a items"):
        world.say("list", items="fig , zorp and pear")


def test_fluency_counts_broken_and_repeated_sentences():
    assert labeler.fluency([]) == 0.0
    assert labeler.fluency("tom is kind . tom is kind .".split()) == 0.25  # (1 of 2) squared
    assert labeler.fluency("tom is kind . have a nice day .".split()) == 1.0
    assert labeler.fluency("tom is kind . have a nice".split()) == 0.25  # cut-off fragment
    two_of_three = "i am sorry . tom is kind . be be kind .".split()
    assert labeler.fluency(two_of_three) == pytest.approx(4 / 9)
    assert labeler.fluency("user : what is one plus one ?".split()) == 1.0  # a chat turn
    assert not world.parses("tom is kind")  # no full stop: not a sentence


# ----------------------------------------------------------------------------- the RM's ceiling
def test_oracle_accuracy_by_hand():
    # gold: "five ." 10, "two plus three is six ." 6, "what is one plus one ?" 7, "ten ." 6
    record = {"prompt_id": "a", "responses": ["five .", "two plus three is six .",
                                              "what is one plus one ?", "ten ."],
              "terminated": [True] * 4, "ranking": [2, 0, 1, 3]}
    # pairs (2,0) wrong, (2,1) right, (2,3) right, (0,1) right, (0,3) right, (1,3) tie: 1/2
    share, pairs = labeler.oracle_accuracy([record], {"a": ARITH})
    assert (share, pairs) == (4.5 / 6, 6)


def test_oracle_beats_two_labelers_agreement():
    """Shared gold, independent noise: the oracle adds no noise, so it agrees with a labeler
    more often than a second labeler does (the reward model's ceiling is the oracle)."""
    prompts, sets = candidate_sets(300)
    first = GoldLabeler(seed=0)
    rankings = [{"prompt_id": i, "responses": [r for r, _ in s], "terminated": [t for _, t in s],
                 "ranking": first.rank(p, [r for r, _ in s], [t for _, t in s])}
                for i, (p, s) in enumerate(zip(prompts, sets))]
    by_id = dict(enumerate(prompts))
    oracle, n = labeler.oracle_accuracy(rankings, by_id)
    agreement, m = labeler.rankings_agreement(rankings, by_id, labeler_seed=1)
    assert n == m == 6 * len(prompts)
    # 6,948 pairs: the standard error of either share is about 0.005
    assert oracle > agreement + 0.03, (oracle, agreement)


def test_pair_agreements_per_pair_in_ranking_order():
    """A nearly noiseless second labeler orders pairs by gold: it agrees on exactly the pairs
    the record ranks in gold order (counted by hand below), in `ranking_to_pairs` order."""
    # gold: "five ." 10, "two plus three is six ." 6, "what is one plus one ?" 7
    record = {"prompt_id": "a", "responses": ["five .", "two plus three is six .",
                                              "what is one plus one ?"],
              "terminated": [True] * 3, "ranking": [1, 0, 2]}
    # pairs (1, 0): against gold; (1, 2): against gold; (0, 2): in gold order
    agree = labeler.pair_agreements([record, dict(record, ranking=[0, 2, 1])], {"a": ARITH},
                                    labeler_seed=0, noise=1e-6)
    assert agree == [False, False, True, True, True, True]
    share, n = labeler.rankings_agreement([record], {"a": ARITH}, labeler_seed=0, noise=1e-6)
    assert (share, n) == (1 / 3, 3)
