import dataclasses
import math
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
from synthetic import marker_rankings, ranking

from rlhf_lite import artifacts, checkpoints, paths, presets, reward
from rlhf_lite.batching import encode_responses
from rlhf_lite.comparisons import (
    check_ranking,
    make_rankings,
    pair_prompt_ids,
    pairs_ordered,
    read_rankings,
    sample_rankings,
)
from rlhf_lite.data import DataError, load_records, write_jsonl
from rlhf_lite.labeler import GoldLabeler, rankings_agreement
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.ppo import PPOConfig, PPOTrainer
from rlhf_lite.pretrain import PretrainConfig
from rlhf_lite.reward import (
    RewardConfig,
    RewardModel,
    bradley_terry_loss,
    collate_rankings,
    normalize_to_demonstrations,
    pair_scores,
    pairwise_accuracy,
    rm_loss,
    score_responses,
    train_reward_model,
)
from rlhf_lite.sft import SFTConfig
from rlhf_lite.tokenizer import load_tokenizer
from rlhf_lite.training import TrainConfig

TOKENIZER = load_tokenizer()


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=len(TOKENIZER), block_size=48, n_layer=2, n_head=2, n_embd=32))


def tiny_rm(seed=0):
    rm = RewardModel(tiny_gpt(seed))
    nn.init.normal_(rm.head.weight)  # the zero init would score everything 0
    return rm.eval()


# ----------------------------------------------------------------------------- loss
def test_bradley_terry_known_values():
    zero = torch.zeros(3)
    assert bradley_terry_loss(zero, zero).item() == pytest.approx(math.log(2))
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.5, 1.0])
    by_hand = (math.log(1 + math.exp(-1.5)) + math.log(1 + math.exp(1.0))) / 2  # -log sigmoid(d)
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(by_hand, rel=1e-6)


def test_bradley_terry_is_stable_for_huge_differences():
    big, zero = torch.tensor([1e4]), torch.tensor([0.0])
    assert bradley_terry_loss(big, zero).item() == pytest.approx(0.0, abs=1e-6)
    assert bradley_terry_loss(zero, big).item() == pytest.approx(1e4, rel=1e-6)
    r = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(r, r.detach() + 1e4).backward()
    assert torch.isfinite(r.grad).all() and r.grad.item() == pytest.approx(-1.0)


# ----------------------------------------------------------------------------- model
def test_score_is_read_at_the_last_real_token_whatever_the_padding():
    rm = tiny_rm()
    prompts = ["what is two plus two ?", "name two fruits .", "say something nice about tom ."]
    responses = ["four .", "pear and lime . i hope this helps .", "tom is"]
    terminated = [True, True, False]
    right = encode_responses(TOKENIZER, prompts, responses, terminated)
    ids, mask = right["input_ids"], right["attention_mask"]
    lengths = mask.sum(1)
    assert ids[2, lengths[2] - 1] != TOKENIZER.eos_token_id  # no eos on an unfinished response
    assert ids[0, lengths[0] - 1] == TOKENIZER.eos_token_id
    singles = torch.stack([rm(ids[i: i + 1, :n], mask[i: i + 1, :n])
                           for i, n in enumerate(lengths)]).squeeze(1)
    # left padding: move each row's real tokens to the end
    left_ids, left_mask = torch.full_like(ids, TOKENIZER.pad_token_id), torch.zeros_like(mask)
    for i, n in enumerate(lengths):
        left_ids[i, -n:], left_mask[i, -n:] = ids[i, :n], 1
    with torch.no_grad():
        torch.testing.assert_close(rm(ids, mask), singles, atol=1e-5, rtol=0)
        torch.testing.assert_close(rm(left_ids, left_mask), singles, atol=1e-5, rtol=0)
    assert singles.unique().numel() == 3  # the scores do differ between rows


def test_all_pairs_of_a_ranking_are_in_its_batch_with_the_right_signs():
    batch = collate_rankings(TOKENIZER, [
        ranking(["four .", "five .", "i do not know ."], [2, 0, 1]),  # K = 3: best is response 2
        ranking(["yes .", "no ."], [1, 0]),  # its rows are 3 and 4
    ])
    assert batch["input_ids"].shape[0] == 5
    assert list(zip(batch["chosen"].tolist(), batch["rejected"].tolist())) == [
        (2, 0), (2, 1), (0, 1), (4, 3)]
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0, 5.0])

    class Fixed(nn.Module):
        def forward(self, input_ids, attention_mask):
            return scores

    by_hand = -torch.nn.functional.logsigmoid(torch.tensor([2.0 - 0, 2 - 1, 0 - 1, 5 - 3])).mean()
    assert rm_loss(Fixed(), batch).item() == pytest.approx(by_hand.item())


# ----------------------------------------------------------------------------- data
@pytest.mark.parametrize("change, message", [
    ({"ranking": [0, 0, 1]}, r"field 'ranking' should be a permutation of 0\.\.2 .*\[0, 0, 1\]"),
    ({"ranking": [0, 1, 3]}, r"field 'ranking' should be a permutation of 0\.\.2 "),
    ({"ranking": [0, 1]}, r"field 'ranking' should be a permutation of 0\.\.2 "),
    ({"ranking": [0, 1, True]}, r"field 'ranking' should be a permutation of 0\.\.2 "),
    ({"ranking": [0, 1, "2"]}, r"field 'ranking' should be a permutation of 0\.\.2 "),
    ({"responses": ["four ."], "terminated": [True], "ranking": [0]},
     r"field 'responses' needs at least 2 responses to rank, got 1"),
    ({"terminated": [True, False]}, r"field 'terminated' should hold 3 booleans"),
    ({"ranking": "0 1 2"}, r"field 'ranking' should be list, got str"),
])
def test_check_ranking_rejects_bad_records(change, message):
    good = ranking(["four .", "five .", "six ."], [0, 1, 2])
    check_ranking(good, "here")
    with pytest.raises(DataError, match=r"^here: " + message):
        check_ranking({**good, **change}, "here")


def test_load_rankings_names_file_and_line(tmp_path):
    path = tmp_path / "rankings.jsonl"
    records = [ranking(["four .", "five ."], [1, 0]), ranking(["four .", "five ."], [1, 1])]
    write_jsonl(path, records[:1])
    assert read_rankings(path) == records[:1]
    write_jsonl(path, records)
    with pytest.raises(DataError, match=r"rankings\.jsonl, line 2: field 'ranking'"):
        read_rankings(path)


def test_make_rankings_records():
    prompts = [{"id": "a", "category": "arithmetic", "prompt": "what is two plus two ?",
                "meta": {"answer": "four"}},
               {"id": "b", "category": "harmful", "prompt": "how do i rob tom ?",
                "meta": {"verb": "rob", "target": "tom"}}]
    records = make_rankings(tiny_gpt(), TOKENIZER, prompts, k=3, labeler=GoldLabeler(seed=0),
                            rounds=2, seed=0, max_new_tokens=6)
    assert [r["prompt_id"] for r in records] == ["a", "b", "a", "b"]
    for i, r in enumerate(records):
        check_ranking(r, f"record {i}")
        assert len(r["responses"]) == 3 and r["prompt"] == prompts[i % 2]["prompt"]
    # a split's rankings use the recipe's K, rounds and seeds
    cfg = RewardConfig(k=2, rounds=1, val_rounds=3, max_new_tokens=6)
    assert [len(sample_rankings(cfg, tiny_gpt(), TOKENIZER, prompts, split))
            for split in ("train", "validation")] == [2, 6]


# ----------------------------------------------------------------------------- evaluation
class CountFour(nn.Module):
    """A stand-in RM: the score is the number of "four" tokens in the sequence."""

    def forward(self, input_ids, attention_mask):
        return (input_ids == TOKENIZER.convert_tokens_to_ids("four")).sum(1).float()


def test_pairwise_accuracy_counts_ties_as_half():
    rankings = [
        ranking(["four .", "four .", "five ."], [0, 1, 2]),  # (0,1) a tie; (0,2), (1,2) right
        ranking(["five .", "four ."], [0, 1]),  # wrong
    ]
    assert (pairwise_accuracy(CountFour(), TOKENIZER, rankings)
            == pytest.approx((0.5 + 1 + 1 + 0) / 4))


def test_pairs_ordered_pair_by_pair_with_their_prompts():
    rankings = [
        {**ranking(["four .", "four .", "five ."], [0, 1, 2]), "prompt_id": "a"},
        {**ranking(["five .", "four ."], [0, 1]), "prompt_id": "b"},
    ]
    outcomes = pairs_ordered(*pair_scores(CountFour(), TOKENIZER, rankings))
    assert outcomes.tolist() == [0.5, 1.0, 1.0, 0.0]  # the tie, two right, the wrong one
    assert pair_prompt_ids(rankings) == ["a", "a", "a", "b"]
    assert outcomes.mean().item() == pairwise_accuracy(CountFour(), TOKENIZER, rankings)


def test_identical_responses_score_exactly_equal():
    rm = tiny_rm()
    scores = score_responses(rm, TOKENIZER, ["what is two plus two ?"] * 3,
                             ["four .", "five six .", "four ."], [True] * 3)
    assert scores[0].item() == scores[2].item() != scores[1].item()


def test_rankings_agreement_of_a_second_labeler():
    prompt = {"id": "p", "category": "arithmetic", "prompt": "what is two plus two ?",
              "meta": {"answer": "four"}}
    labeler = GoldLabeler(seed=0)
    # gold 8 vs 1: labelers almost always agree
    clear = ["four .", "you are stupid . what is five ?"]
    same = ["four .", "four ."]  # only the labelers' noise orders them
    rankings = {name: [ranking(rs, labeler.rank(prompt, rs)) for _ in range(400)] for name, rs in
                (("clear", clear), ("same", same))}
    agree, pairs = rankings_agreement(rankings["clear"], {"p": prompt}, labeler_seed=1)
    assert agree > 0.97 and pairs == 400
    same, _ = rankings_agreement(rankings["same"], {"p": prompt}, labeler_seed=1)
    assert same == pytest.approx(0.5, abs=0.08)


def test_normalization_makes_demonstrations_score_zero_on_average():
    rm = tiny_rm()
    demos = [{"prompt": "what is two plus two ?", "response": "four ."},
             {"prompt": "name two fruits .", "response": "pear and lime ."},
             {"prompt": "how do i rob tom ?", "response": "sorry , i can not help with that ."}]
    args = (TOKENIZER, [d["prompt"] for d in demos], [d["response"] for d in demos], [True] * 3)
    before = score_responses(rm, *args)
    assert abs(before.mean().item()) > 0.1
    shift = normalize_to_demonstrations(rm, TOKENIZER, demos)
    after = score_responses(rm, *args)
    assert shift == pytest.approx(-before.mean().item(), abs=1e-6)
    assert after.mean().item() == pytest.approx(0.0, abs=1e-5)
    torch.testing.assert_close(after - after[0], before - before[0])  # differences unchanged


# ----------------------------------------------------------------------------- training


def test_tiny_reward_model_learns_a_marker(tmp_path):
    train, val = marker_rankings(160, seed=0), marker_rankings(40, seed=1)
    demos = [{"prompt": "name two fruits .", "response": "pear and banana ."}]
    cfg = RewardConfig(batch_size=8, epochs=3,
                       train=TrainConfig(max_steps=None, lr=3e-3, warmup_steps=5, eval_interval=30,
                                         desc="rm-test"))
    path = tmp_path / "rm.pt"
    rm, history = train_reward_model(cfg, tiny_gpt(), TOKENIZER, train, val, demos,
                                     checkpoint_path=path)
    assert len(history.steps) == 3 * 160 // 8
    assert (history.eval["val_accuracy"][-1] > 0.9
            and history.eval["val_loss"][-1] < history.eval["val_loss"][0])
    assert pairwise_accuracy(rm, TOKENIZER, val) > 0.9
    # the one saved checkpoint holds the normalised bias, equal to the returned model's
    ckpt = checkpoints.read(path)
    loaded = RewardModel(GPT(GPTConfig(**ckpt.model_config)))
    loaded.load_state_dict(ckpt.model)
    assert score_responses(loaded.eval(), TOKENIZER, [demos[0]["prompt"]], [demos[0]["response"]],
                           [True]).item() == pytest.approx(0.0, abs=1e-5)
    assert ckpt.extra["bias_shift"] != 0.0 and torch.equal(loaded.head.bias, rm.head.bias)


def test_sft_and_rm_stages_build_save_and_load(tmp_path, monkeypatch):
    def quick(desc):
        return TrainConfig(max_steps=2, warmup_steps=1, eval_interval=0, desc=desc)

    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path)
    monkeypatch.setitem(presets.PRESETS, "tiny", presets.Preset(
        "tiny", base=PretrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=48, batch_size=4,
                                        train=quick("pretrain")),
        sft=SFTConfig(batch_size=8, train=quick("sft")),
        rm=RewardConfig(k=2, rounds=1, val_rounds=1, max_new_tokens=8,
                        train=replace(quick("rm"), max_steps=None))))
    rm = artifacts.load_model("rm", "tiny")  # builds base, then sft, then rm
    assert isinstance(rm, RewardModel) and not rm.training
    assert [artifacts.status(s, "tiny") for s in ("base", "sft", "rm")] == ["done"] * 3
    train = read_rankings(artifacts.rankings_path("train", "tiny"))
    assert (len(train) == 162
            and len(read_rankings(artifacts.rankings_path("validation", "tiny"))) == 30)
    ckpt = checkpoints.read(artifacts.checkpoint_path("rm", "tiny"))
    assert ckpt.step == math.ceil(162 / RewardConfig().batch_size) and "bias_shift" in ckpt.extra
    demos = load_records("demonstrations")
    scores = score_responses(rm, TOKENIZER, [d["prompt"] for d in demos],
                             [d["response"] for d in demos], [True] * len(demos))
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-4)  # saved with the normalised bias


def test_a_killed_reward_model_run_resumes_to_the_same_normalised_model(tmp_path, monkeypatch):
    """Killed between two checkpoints, the run resumes from the last one; the finished model,
    bias normalisation included, equals an uninterrupted run's bit for bit."""
    train, val = marker_rankings(48, seed=0), marker_rankings(8, seed=1)
    demos = [{"prompt": "name two fruits .", "response": "pear and banana ."}]
    cfg = RewardConfig(batch_size=8, epochs=2, train=TrainConfig(
        max_steps=None, lr=3e-3, warmup_steps=2, eval_interval=4, checkpoint_interval=4,
        desc="rm-test"))
    straight, _ = train_reward_model(cfg, tiny_gpt(), TOKENIZER, train, val, demos,
                                     checkpoint_path=tmp_path / "a.pt")
    calls, loss = [], reward.rm_loss

    def killed_at_step_6(rm, batch):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt  # 6 steps done, the last checkpoint at step 4
        return loss(rm, batch)
    monkeypatch.setattr(reward, "rm_loss", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_reward_model(cfg, tiny_gpt(), TOKENIZER, train, val, demos,
                           checkpoint_path=tmp_path / "b.pt")
    assert checkpoints.read(tmp_path / "b.pt").step == 4
    monkeypatch.setattr(reward, "rm_loss", loss)
    resumed, history = train_reward_model(cfg, tiny_gpt(), TOKENIZER, train, val, demos,
                                          checkpoint_path=tmp_path / "b.pt")
    assert history.steps == list(range(12))
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                                 resumed.state_dict().values()))
    assert checkpoints.read(tmp_path / "b.pt").extra == checkpoints.read(tmp_path / "a.pt").extra


# ----------------------------------------------------------------------------- ensembles
def constant_rm(bias: float) -> RewardModel:
    """An RM that scores every sequence `bias` (zero head weight)."""
    rm = RewardModel(tiny_gpt(0)).eval()
    with torch.no_grad():
        rm.head.bias.fill_(bias)
    return rm


def test_uwo_penalty_by_hand_and_member_config():
    # constant members 0, 1, 1, 1, 1 on every answer: mean 0.8, the worst case subtracts 0.8, the
    # variance is (0.8^2 + 4 x 0.2^2) / 5 = 0.16, so lambda = 0.8 / 0.16 = 5
    members = [constant_rm(b) for b in (0.0, 1.0, 1.0, 1.0, 1.0)]
    rankings = [ranking(["two .", "four .", "five ."], [1, 0, 2]),
                ranking(["no .", "yes ."], [0, 1])]
    penalty, worst, variance = reward.uwo_penalty(members, TOKENIZER, rankings)
    assert (penalty, worst) == (5, pytest.approx(0.8)) and variance == pytest.approx(0.16)
    with pytest.raises(ValueError, match="agree on every answer"):
        reward.uwo_penalty([constant_rm(1.0)] * 2, TOKENIZER, rankings)
    cfg = reward.RewardConfig()
    member = reward.member_config(cfg, 7)
    assert member.train.seed == 7 and member.train.eval_interval == 0
    assert dataclasses.replace(member, train=cfg.train) == cfg  # nothing else changed


@pytest.mark.parametrize("combine, penalty, expected", [
    ("mean", None, 1.0),  # (1 - 2 + 4) / 3
    ("min", None, -2.0),
    ("uwo", 0.5, 1.0 - 0.5 * 6.0),  # variance ((1-1)^2 + (-2-1)^2 + (4-1)^2) / 3 = 6
    ("uwo", 0.0, 1.0)])
def test_ensemble_combines_members_with_known_outputs(combine, penalty, expected):
    ensemble = reward.RewardEnsemble([constant_rm(b) for b in (1.0, -2.0, 4.0)], combine,
                                     penalty)
    batch = encode_responses(TOKENIZER, ["hi", "hi"], ["two .", "four four ."], [True, False])
    scores = ensemble(batch["input_ids"], batch["attention_mask"])
    assert scores.shape == (2,)
    assert scores.tolist() == pytest.approx([expected, expected], abs=1e-5)


def test_ensemble_of_varied_members_against_a_loop_over_rows():
    members = [tiny_rm(seed) for seed in (1, 2, 3)]
    batch = encode_responses(TOKENIZER, ["hi"] * 3, ["two .", "four four .", "red"],
                             [True, True, False])
    alone = [m(batch["input_ids"], batch["attention_mask"]).tolist() for m in members]
    for combine, penalty in (("mean", None), ("min", None), ("uwo", 2.0)):
        ensemble = reward.RewardEnsemble(members, combine, penalty)
        got = ensemble(batch["input_ids"], batch["attention_mask"]).tolist()
        for row in range(3):
            r = [scores[row] for scores in alone]
            mean = sum(r) / 3
            by_hand = {"mean": mean, "min": min(r),
                       "uwo": mean - 2.0 * sum((x - mean) ** 2 for x in r) / 3}[combine]
            assert got[row] == pytest.approx(by_hand, abs=1e-5)
    # the RM's scoring path takes it unchanged
    assert score_responses(reward.RewardEnsemble(members), TOKENIZER, ["hi"], ["two ."],
                           [True]).item() == pytest.approx(sum(a[0] for a in alone) / 3, abs=1e-5)


def test_ensemble_fingerprint_tells_combinations_apart():
    members = [constant_rm(b) for b in (1.0, -2.0)]
    prints = {checkpoints.fingerprint(reward.RewardEnsemble(members, combine, penalty))
              for combine, penalty in [("mean", None), ("min", None), ("uwo", 0.5), ("uwo", 1.0)]}
    assert len(prints) == 4  # a saved run against one is stale for another
    again = reward.RewardEnsemble([constant_rm(b) for b in (1.0, -2.0)], "min")
    assert checkpoints.fingerprint(reward.RewardEnsemble(members, "min")) == \
        checkpoints.fingerprint(again)


def test_ppo_takes_an_ensemble_and_its_value_model_starts_from_the_first_member():
    members = [tiny_rm(seed) for seed in (1, 2)]
    trainer = PPOTrainer(PPOConfig(iterations=1, batch_size=4, minibatch_size=4,
                                   max_new_tokens=4, ppo_epochs=1), tiny_gpt(0),
                         reward.RewardEnsemble(members, "min"), TOKENIZER,
                         [{"prompt": "hi"}, {"prompt": "what is two plus two ?"}])
    start = {k: v for k, v in trainer.value_model.state_dict().items()}
    first = {"backbone." + k: v for k, v in members[0].backbone.state_dict().items()}
    first.update({"head." + k: v for k, v in members[0].head.state_dict().items()})
    assert start.keys() == first.keys() and all(torch.equal(start[k], first[k]) for k in first)
    assert math.isfinite(trainer.step()["rm_score"])


@pytest.mark.parametrize("members, combine, penalty, message", [
    ([], "mean", None, "members is empty"),
    (None, "max", None, "combine must be one of"),
    (None, "uwo", None, "penalty is the weight"),
    (None, "mean", 1.0, "penalty is the weight"),
    (None, "uwo", -1.0, "penalty must be >= 0")])
def test_ensemble_rejects_bad_arguments(members, combine, penalty, message):
    with pytest.raises(ValueError, match=message):
        reward.RewardEnsemble([constant_rm(0.0)] if members is None else members, combine,
                              penalty)
