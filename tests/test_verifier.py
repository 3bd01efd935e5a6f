"""The verifiable reward: right answers 1, wrong ones 0, on every checkable prompt of the world;
the same verdict as the judge's "correct" where the judge has nothing else to object to."""
import random

import pytest
import torch

from rlhf_lite import labeler, world
from rlhf_lite.data import load_records
from rlhf_lite.verifier import CHECKABLE, verifier_reward, verifier_scores, verifies
from rlhf_lite.world import ATTRIBUTES, LIST_KINDS, NUMBERS, fact_sentence, join_items, say

PROMPTS = [p for split in ("train", "validation", "heldout")
           for p in load_records(f"prompts_{split}") if verifies(p)]
ARITH = {"id": "t-arith", "category": "arithmetic", "prompt": "what is two plus three ?",
         "meta": {"answer": "five"}}
LIST = {"id": "t-list", "category": "lists", "prompt": "name three fruits .",
        "meta": {"kind": "fruits", "count": 3}}


def short_answer(p: dict, value: str) -> str:
    """'<value> .', or '<value> legs .' for a legs question, as the world's good answers say."""
    if p["meta"].get("attribute") == "legs":
        return say("short_legs", number=value)
    return say("short_answer", answer=value)


def answers(p: dict, value: str) -> list[str]:
    """Every way the world's templates state `value` as the answer to arithmetic or facts `p`."""
    if p["category"] == "arithmetic":
        return [world.arithmetic_statement(p["prompt"], value), say("short_answer", answer=value),
                say("the_answer", number=value)]
    m = p["meta"]
    return [fact_sentence(m["attribute"], m["subject"], value), short_answer(p, value)]


def test_every_checkable_category_of_every_split_is_present():
    assert {p["category"] for p in PROMPTS} == set(CHECKABLE)
    assert all(p["category"] in CHECKABLE for p in PROMPTS)


def test_good_responses_score_one_and_bad_ones_zero_on_every_checkable_prompt():
    rng = random.Random(0)
    for p in PROMPTS:
        for _ in range(5):
            good, bad = world.good_response(p, rng), world.bad_response(p, rng)
            assert verifier_reward(p, good) == 1.0, (p["prompt"], good)
            assert verifier_reward(p, bad) == 0.0, (p["prompt"], bad)


def test_each_stated_value_is_checked_on_every_arithmetic_and_facts_prompt():
    for p in (p for p in PROMPTS if p["category"] != "lists"):
        right = p["meta"]["answer"]
        values = NUMBERS if p["category"] == "arithmetic" else ATTRIBUTES[p["meta"]["attribute"]][1]
        for value in values:
            for text in answers(p, value):
                assert verifier_reward(p, text) == float(value == right), (p["prompt"], text)


def test_list_answers_on_every_list_prompt():
    rng = random.Random(1)
    for p in (p for p in PROMPTS if p["category"] == "lists"):
        kind, count = p["meta"]["kind"], p["meta"]["count"]
        items = rng.sample(LIST_KINDS[kind], count + 1)
        other = next(k for k in LIST_KINDS if k != kind)
        right = join_items(items[:count])
        for text in (say("list", items=right),
                     say("here_are", number=NUMBERS[count], list_kind=kind, items=right),
                     say("favourite", list_kind=kind, items=right)):
            assert verifier_reward(p, text) == 1.0, (p["prompt"], text)
        wrong = [join_items(items[:count - 1]), join_items(items),  # too few, too many
                 join_items(items[:count - 1] + items[:1]),  # a repeated item
                 join_items(items[:count - 1] + LIST_KINDS[other][:1])]  # one of another kind
        for text in [say("list", items=w) for w in wrong] + [
                say("here_are", number=NUMBERS[count + 1], list_kind=kind, items=right),  # miscount
                say("favourite", list_kind=other, items=join_items(LIST_KINDS[other][:count]))]:
            assert verifier_reward(p, text) == 0.0, (p["prompt"], text)


@pytest.mark.parametrize("response, reward", [
    ("two plus three is five . two plus three is six .", 0.0),  # right, then wrong
    ("six . the answer is five .", 0.0),  # wrong, then right
    ("five . two plus three is five .", 1.0),  # right twice
    ("two plus two is four .", 0.0),  # another question's answer
    ("what is two plus three ?", 0.0),  # the question echoed: no answer
    ("what is two plus three ? five .", 1.0),
    ("five five .", 0.0),  # unreadable: says nothing
    ("", 0.0),
])
def test_the_answer_must_be_stated_and_all_its_values_right(response, reward):
    assert verifier_reward(ARITH, response) == reward


def test_a_second_different_list_is_wrong():
    assert verifier_reward(LIST, "fig , pear and plum . fig , pear and plum .") == 1.0
    assert verifier_reward(LIST, "fig , pear and plum . lime , pear and plum .") == 0.0


def test_agrees_with_the_judge_on_the_worlds_candidate_answers():
    """On world.candidate_responses (good, verbose, bad, continuations, "i do not know",
    refusals, cut-off answers) the verifier says 1 exactly where the judge's correct is 1."""
    counts = {True: 0, False: 0}
    for seed in (0, 1):
        rng = random.Random(seed)
        for p in world.all_prompts():
            if not verifies(p):
                continue
            for text, done in world.candidate_responses(p, 8, rng):
                right = labeler.judge(p, text, done).correct == 1
                assert (verifier_reward(p, text, done) == 1.0) == right, (p["prompt"], text, done)
                counts[right] += 1
    assert min(counts.values()) > 1000, counts  # both verdicts well represented


@pytest.mark.parametrize("prompt, response", [
    (ARITH, "five . that is a good it ."),  # an unreadable sentence beside: judge scales by fluency
    (ARITH, "five . i do not know ."),  # a hedge beside the answer: judge halves it
    (ARITH, "five . sorry , i can not help with that ."),  # a refusal beside it: halved
    (ARITH, "five . a dog says moo ."),  # a false claim about something else: judge 0
    (ARITH, "five . tom is stupid and ugly ."),  # rude: judge 0
    (ARITH, "five . first find tom at night ."),  # help with harm: judge 0
    (LIST, "fig , pear and plum . here are two colors : red ."),  # misstates another list
])
def test_what_the_verifier_deliberately_does_not_check(prompt, response):
    """Correctness of the asked answer and nothing else: the judge's other objections do not
    lower the verifier's reward."""
    assert verifier_reward(prompt, response) == 1.0
    assert labeler.judge(prompt, response).correct < 1


def test_a_cut_off_response_scores_zero_even_with_the_right_answer():
    assert verifier_reward(ARITH, "five .", terminated=False) == 0.0
    assert labeler.judge(ARITH, "five .", terminated=False).correct == 1  # the judge's differs


def test_a_half_done_list_scores_zero():
    assert verifier_reward(LIST, "fig and pear .") == 0.0
    assert labeler.judge(LIST, "fig and pear .").correct == 0.5


def test_which_prompts_it_verifies_and_errors_on_the_others():
    by_category = {p["category"]: p for p in world.all_prompts()}
    for category, p in by_category.items():
        assert verifies(p) == (category in CHECKABLE)
        if category not in CHECKABLE:
            with pytest.raises(ValueError, match="cannot check"):
                verifier_reward(p, world.good_response(p, random.Random(0)))
    with pytest.raises(ValueError, match="unknown prompt category"):
        verifies({"id": "x", "category": "poetry", "prompt": "", "meta": {}})


def test_scores_are_shaped_like_a_reward_models():
    prompts = [ARITH, ARITH, LIST, LIST]
    responses = ["five .", "six .", "fig , pear and plum .", "fig , pear and plum ."]
    scores = verifier_scores(prompts, responses, torch.tensor([True, True, True, False]))
    assert scores.dtype == torch.float32 and scores.shape == (4,)
    assert scores.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert verifier_scores(prompts, responses, [True] * 4).tolist() == [1.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="must match"):
        verifier_scores(prompts, responses[:3], [True] * 4)
    tone = next(p for p in world.all_prompts() if p["category"] == "tone")
    with pytest.raises(ValueError, match="cannot check"):
        verifier_scores([ARITH, tone], ["five .", "tom is kind ."], [True, True])
