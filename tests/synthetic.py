"""Synthetic rankings shared by the reward-model and DPO tests, and a reward model's accuracy
on rankings counted by hand (the pipeline tests)."""
import random

from rlhf_lite.reward import score_responses


def ranking(responses, order, terminated=None, prompt="what is two plus two ?"):
    """A ranking record as the rm stage saves it."""
    return {"prompt_id": "p", "prompt": prompt, "responses": responses,
            "terminated": terminated or [True] * len(responses), "ranking": order}


def marker_rankings(n, seed):
    """Rankings of 4 responses holding 0..3 "banana" markers: more markers rank higher."""
    rng = random.Random(seed)
    words = ["red", "green", "cat", "dog", "two", "three", "tom", "ann", "kind", "pear"]
    records = []
    for _ in range(n):
        counts = rng.sample(range(4), 4)  # response i holds counts[i] markers
        responses = []
        for c in counts:
            tokens = rng.choices(words, k=rng.randint(2, 4))
            for _ in range(c):
                tokens.insert(rng.randrange(len(tokens) + 1), "banana")
            responses.append(" ".join(tokens) + " .")
        order = sorted(range(4), key=lambda i: -counts[i])
        records.append(ranking(responses, order, prompt="name two fruits ."))
    return records


def accuracy_by_hand(rm, tokenizer, rankings) -> float:
    """Share of the pairs (better, worse) of each ranking's order whose better response `rm`
    scores higher, ties 1/2: a loop over rankings, each one's responses scored together."""
    hits = []
    for r in rankings:
        score = score_responses(rm, tokenizer, [r["prompt"]] * len(r["responses"]),
                                r["responses"], r["terminated"]).tolist()
        order = r["ranking"]
        hits += [1.0 if score[a] > score[b] else 0.5 if score[a] == score[b] else 0.0
                 for i, a in enumerate(order) for b in order[i + 1:]]
    return sum(hits) / len(hits)
