"""DPO (rlhf_lite.dpo): the loss by hand and by loop, the implicit reward's sign, sequence
log-probs that padding does not change, a frozen reference, learning a marker, exact resume."""
import math
from dataclasses import replace

import pytest
import torch
from synthetic import marker_rankings, ranking

from rlhf_lite import checkpoints, comparisons, dpo, reward, training
from rlhf_lite.batching import IGNORE_INDEX, encode_responses, epoch_batch
from rlhf_lite.chat import format_prompt
from rlhf_lite.data import file_sha256, load_records
from rlhf_lite.dpo import (
    DPOConfig,
    dpo_loss,
    implicit_reward_accuracy,
    implicit_rewards,
    log_likelihoods,
    train_dpo,
)
from rlhf_lite.generation import (
    generate,
    response_mask,
    sequence_logprobs,
    suppress_tokens,
)
from rlhf_lite.labeler import gold_score
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.tokenizer import load_tokenizer, never_generated
from rlhf_lite.training import TrainConfig
from rlhf_lite.utils import derive_seed

TOKENIZER = load_tokenizer()
SUPPRESSED = never_generated(TOKENIZER)


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=len(TOKENIZER), block_size=48, n_layer=2, n_head=2,
                         n_embd=32)).eval()




def quick_config(epochs=2, **train):
    return DPOConfig(beta=0.1, batch_size=8, epochs=epochs, train=TrainConfig(
        **{"max_steps": None, "lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.0,
           "eval_interval": 0, "desc": "dpo-test", **train}))


# ----------------------------------------------------------------------------- the loss
def test_loss_against_hand_computed_values():
    # log-ratios (pi - ref): chosen 1.0 and 0.2, rejected -0.6 and 1.0; beta 0.5
    policy_w, ref_w = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -5.2])
    policy_l, ref_l = torch.tensor([-6.6, -2.0]), torch.tensor([-6.0, -3.0])
    loss, stats = dpo_loss(policy_w, policy_l, ref_w, ref_l, beta=0.5)
    z = [0.5 * (1.0 - -0.6), 0.5 * (0.2 - 1.0)]  # 0.8 and -0.4
    by_hand = sum(-math.log(1 / (1 + math.exp(-v))) for v in z) / 2  # -log sigmoid
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert stats["reward_accuracy"] == 0.5
    assert stats["reward_margin"] == pytest.approx((0.8 - 0.4) / 2, abs=1e-6)
    assert stats["chosen_reward"] == pytest.approx(0.5 * (1.0 + 0.2) / 2, abs=1e-6)
    assert stats["rejected_reward"] == pytest.approx(0.5 * (-0.6 + 1.0) / 2, abs=1e-6)
    zero = torch.zeros(3)
    assert dpo_loss(zero, zero, zero, zero, 0.1)[0].item() == pytest.approx(math.log(2))


def test_loss_against_a_loop_over_pairs():
    g = torch.Generator().manual_seed(0)
    pw, pl, rw, rl = (torch.randn(7, generator=g, dtype=torch.float64) * 3 for _ in range(4))
    pl[0], rl[0], pw[0], rw[0] = 1.0, 2.0, 1.0, 2.0  # a tie counts 1/2
    beta = 0.3
    loss, stats = dpo_loss(pw, pl, rw, rl, beta)
    terms, correct = [], 0.0
    for i in range(7):
        margin = beta * ((pw[i].item() - rw[i].item()) - (pl[i].item() - rl[i].item()))
        terms.append(math.log1p(math.exp(-margin)))
        correct += 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0
    assert loss.item() == pytest.approx(sum(terms) / 7, rel=1e-12)
    assert stats["reward_accuracy"] == pytest.approx(correct / 7)


def test_loss_is_finite_for_huge_margins():
    big, zero = torch.tensor([1e4]), torch.tensor([0.0])
    assert dpo_loss(big, zero, zero, zero, 1.0)[0].item() == pytest.approx(0.0, abs=1e-6)
    chosen = torch.tensor([0.0], requires_grad=True)
    loss, _ = dpo_loss(chosen, big, zero, zero, 1.0)
    loss.backward()
    assert loss.item() == pytest.approx(1e4) and chosen.grad.item() == pytest.approx(-1.0)


def test_config_rejects_a_zero_beta():
    with pytest.raises(ValueError, match=r"DPOConfig.beta must be a finite number > 0"):
        DPOConfig(beta=0.0)


# ----------------------------------------------------------------------------- log-probs
PROMPTS = ["what is two plus two ?", "name two fruits .", "say something nice about tom ."]
RESPONSES = ["four .", "pear and lime . i hope this helps .", "tom is"]
TERMINATED = [True, True, False]


def test_labels_are_the_response_and_eos_of_each_row():
    enc = encode_responses(TOKENIZER, PROMPTS, RESPONSES, TERMINATED)
    for row, labels, response, done in zip(enc["input_ids"], enc["labels"], RESPONSES,
                                           TERMINATED):
        scored = labels[labels != IGNORE_INDEX].tolist()
        expected = TOKENIZER(" " + response, add_special_tokens=False)["input_ids"]
        assert scored == expected + ([TOKENIZER.eos_token_id] if done else [])
        assert torch.equal(row[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])


def test_log_likelihoods_sum_the_response_tokens_by_hand():
    model = tiny_gpt()
    enc = encode_responses(TOKENIZER, PROMPTS[:1], RESPONSES[:1], TERMINATED[:1])
    with torch.no_grad():
        got = log_likelihoods(model, enc, SUPPRESSED)
        logits = suppress_tokens(model(enc["input_ids"])[0], SUPPRESSED)  # (T, V)
    ids = enc["input_ids"][0].tolist()
    start = (enc["labels"][0] != IGNORE_INDEX).nonzero()[0].item()  # first response token
    by_hand = sum(torch.log_softmax(logits[t - 1], -1)[ids[t]].item()
                  for t in range(start, len(ids)))
    assert got.item() == pytest.approx(by_hand, abs=1e-5)


def test_log_likelihoods_do_not_depend_on_padding():
    model = tiny_gpt()
    with torch.no_grad():
        batch = log_likelihoods(model, encode_responses(TOKENIZER, PROMPTS, RESPONSES, TERMINATED),
                                SUPPRESSED)
        for i in range(3):
            alone = log_likelihoods(model, encode_responses(
                TOKENIZER, PROMPTS[i:i + 1], RESPONSES[i:i + 1], TERMINATED[i:i + 1]), SUPPRESSED)
            assert alone.item() == pytest.approx(batch[i].item(), abs=1e-5)


# ----------------------------------------------------------------------------- implicit reward
def test_a_policy_that_raised_the_chosen_response_has_a_positive_margin():
    reference = tiny_gpt()
    record = ranking(["pear and banana .", "tom is kind ."], [0, 1], prompt="name two fruits .")
    assert implicit_reward_accuracy(reference, reference, TOKENIZER, [record], 0.1) == 0.5  # tie
    policy = tiny_gpt()
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    chosen = encode_responses(TOKENIZER, [record["prompt"]], record["responses"][:1], [True])
    for _ in range(5):  # raise log pi(chosen) only
        optimizer.zero_grad()
        (-log_likelihoods(policy, chosen, SUPPRESSED).sum()).backward()
        optimizer.step()
    r_chosen, r_rejected = implicit_rewards(policy, reference, TOKENIZER, [record], 0.1)
    assert r_chosen.item() > 0 and r_chosen.item() > r_rejected.item()
    assert implicit_reward_accuracy(policy, reference, TOKENIZER, [record], 0.1) == 1.0
    same = ranking(["pear .", "pear ."], [1, 0], prompt="name two fruits .")  # tie exactly
    assert implicit_reward_accuracy(policy, reference, TOKENIZER, [same], 0.1) == 0.5


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained():
    """One short DPO run on marker rankings, recording the reference and the optimizer."""
    train, val = marker_rankings(48, seed=0), marker_rankings(16, seed=1)
    sft = tiny_gpt()
    sft_weights = {k: v.clone() for k, v in sft.state_dict().items()}
    seen = {}

    def frozen_reference(model):
        seen["reference"] = reference_of(model)
        return seen["reference"]

    def make_optimizer(model, cfg):
        seen["optimizer"] = optimizer_of(model, cfg)
        return seen["optimizer"]

    reference_of, optimizer_of = dpo.frozen_reference, training.make_optimizer
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dpo, "frozen_reference", frozen_reference)
        mp.setattr(training, "make_optimizer", make_optimizer)
        before = implicit_reward_accuracy(sft, reference_of(sft), TOKENIZER, val, 0.1)
        policy, history = train_dpo(quick_config(epochs=2), sft, TOKENIZER, train, val)
    return {"sft": sft, "sft_weights": sft_weights, "policy": policy, "history": history,
            "val": val, "before": before, **seen}


def test_tiny_policy_learns_a_marker(trained):
    history, val = trained["history"], trained["val"]
    assert trained["before"] == 0.5  # policy = reference: every pair a tie
    assert len(history.steps) == 2 * 48 // 8
    # step 0: policy = reference, so the precomputed reference log-probs give a loss of log 2
    assert history.train_loss[0] == pytest.approx(math.log(2), abs=1e-5)
    assert history.eval["val_accuracy"][-1] > 0.8
    assert history.eval["val_margin"][-1] > 0 and history.eval["val_loss"][-1] < math.log(2)
    assert implicit_reward_accuracy(trained["policy"], trained["reference"], TOKENIZER, val,
                                    0.1) == pytest.approx(history.eval["val_accuracy"][-1])
    assert not trained["policy"].training


def test_the_reference_stays_frozen(trained):
    reference, policy = trained["reference"], trained["policy"]
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    assert all(torch.equal(trained["sft_weights"][k], v)
               for k, v in reference.state_dict().items())
    assert all(torch.equal(trained["sft_weights"][k], v)
               for k, v in trained["sft"].state_dict().items())  # the caller's SFT model too
    optimized = {id(p) for group in trained["optimizer"].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in policy.parameters()}
    assert not optimized & {id(p) for p in reference.parameters()}
    assert any(not torch.equal(trained["sft_weights"][k], v)
               for k, v in policy.state_dict().items())


def test_a_stopped_run_resumes_to_the_same_policy(tmp_path):
    train, val = marker_rankings(24, seed=0), marker_rankings(4, seed=1)
    cfg = quick_config(epochs=2, eval_interval=2, checkpoint_interval=2)
    straight, _ = train_dpo(cfg, tiny_gpt(), TOKENIZER, train, val,
                            checkpoint_path=tmp_path / "a.pt")
    _, partial = train_dpo(cfg, tiny_gpt(), TOKENIZER, train, val,
                           checkpoint_path=tmp_path / "b.pt", stop_after=4)
    ckpt = checkpoints.read(tmp_path / "b.pt")
    assert partial.steps == list(range(4)) and ckpt.step == 4 and not ckpt.done
    assert ckpt.inputs == {"sft": checkpoints.fingerprint(tiny_gpt())}
    resumed, history = train_dpo(cfg, tiny_gpt(), TOKENIZER, train, val,
                                 checkpoint_path=tmp_path / "b.pt")
    assert history.steps == list(range(6))
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                                 resumed.state_dict().values()))
    loaded = GPT(GPTConfig(**checkpoints.read(tmp_path / "b.pt").model_config))
    loaded.load_state_dict(checkpoints.read(tmp_path / "b.pt").model)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                                 loaded.state_dict().values()))


# ----------------------------------------------------------------------------- the stage
def test_build_trains_on_the_rm_stage_rankings_and_needs_them(tmp_path):
    path = tmp_path / "dpo.partial.pt"
    cfg = quick_config(epochs=1)
    with pytest.raises(FileNotFoundError, match="build the 'rm' stage"):
        dpo.build(cfg, None, TOKENIZER, {"sft": tiny_gpt()}, path)
    comparisons.save_rankings({"train": marker_rankings(8, 0), "validation": marker_rankings(2, 1)},
                         tmp_path)
    rm = reward.RewardModel(tiny_gpt(1))
    dpo.build(cfg, None, TOKENIZER, {"sft": tiny_gpt(), "rm": rm}, path)
    ckpt = checkpoints.read(path)
    assert ckpt.done and ckpt.step == 1 and ckpt.recipe == cfg.as_dict()
    assert ckpt.inputs == {"sft": checkpoints.fingerprint(tiny_gpt()),
                           "rm": checkpoints.fingerprint(rm), **dpo.file_inputs(tmp_path)}
    assert dpo.file_inputs(tmp_path)["rankings_train"] == file_sha256(
        comparisons.rankings_file(tmp_path, "train"))[:16]


# ----------------------------------------------------------------------------- online DPO
ONLINE_PROMPTS = load_records("prompts_train")[:8]  # records of the toy world


def tiny_rm(seed=1):
    rm = reward.RewardModel(tiny_gpt(seed))
    torch.nn.init.normal_(rm.head.weight)  # the zero init would tie every pair
    return rm.eval()


class LastTokenScorer(torch.nn.Module):
    """A scorer with the RM's signature: the id of the last real token mod 3 (many ties)."""

    def forward(self, input_ids, attention_mask):
        return (input_ids.gather(1, reward.last_token_index(attention_mask)[:, None]) % 3
                ).squeeze(1).float()


def online_config(seed=0, **fields):
    return DPOConfig(**{"beta": 0.5, "batch_size": 4, "epochs": 1, "pairs": "online",
                        "max_new_tokens": 6, **fields}, train=TrainConfig(
        max_steps=None, lr=3e-3, warmup_steps=0, weight_decay=0.0, eval_interval=0, seed=seed,
        checkpoint_interval=0, desc="online-test"))


def sampled_pairs_by_hand(policy, rm, prompts, seed):
    """Each prompt sampled twice by `generation.generate` (left-padded, one generator), the
    log-probs of both responses summed from `sequence_logprobs` on those very sequences, the
    RM read on them: (chosen, rejected) row pairs of the untied prompts (equal scores or two
    identical responses tie), the attention mask, the sequences, the prompt width and the
    response mask."""
    twice = [p for p in prompts for _ in range(2)]
    enc = TOKENIZER([format_prompt(p["prompt"]) for p in twice], padding=True,
                    return_tensors="pt")
    P = enc["input_ids"].shape[1]
    seq = generate(policy, enc["input_ids"], enc["attention_mask"], max_new_tokens=6,
                   eos_token_id=TOKENIZER.eos_token_id, pad_token_id=TOKENIZER.pad_token_id,
                   generator=torch.Generator().manual_seed(seed), suppress_token_ids=SUPPRESSED)
    mask = response_mask(seq[:, P:], TOKENIZER.eos_token_id)
    attention = torch.cat([enc["attention_mask"], mask], 1)
    with torch.no_grad():
        scores = rm(seq, attention)
    pairs = []
    for i in range(len(prompts)):
        a, b = 2 * i, 2 * i + 1
        if scores[a] != scores[b] and not torch.equal(seq[a, P:] * mask[a], seq[b, P:] * mask[b]):
            pairs.append((a, b) if scores[a] > scores[b] else (b, a))
    return pairs, attention, seq, P, mask


def logprob_sums(model, seq, attention, P, mask):
    with torch.no_grad():
        logp, _ = sequence_logprobs(model, seq, attention, P, suppress_token_ids=SUPPRESSED)
    return (logp * mask).sum(1)


def test_an_online_step_trains_on_the_current_policy_s_pairs_with_the_dpo_loss(tmp_path):
    sft, rm, val = tiny_gpt(), tiny_rm(), marker_rankings(2, seed=1)
    cfg = replace(online_config(), epochs=2)  # 4 steps of 4 prompts
    after_one, first = train_dpo(cfg, sft, TOKENIZER, None, val, prompts=ONLINE_PROMPTS,
                                 reward_model=rm, gold_judge=gold_score,
                                 checkpoint_path=tmp_path / "a.pt", stop_after=1)
    assert any(not torch.equal(a, b) for a, b in zip(after_one.state_dict().values(),
                                                     sft.state_dict().values()))
    assert first.train_loss == [pytest.approx(math.log(2), abs=1e-5)]  # policy = reference
    _, history = train_dpo(cfg, sft, TOKENIZER, None, val, prompts=ONLINE_PROMPTS,
                           reward_model=rm, gold_judge=gold_score,
                           checkpoint_path=tmp_path / "a.pt", stop_after=2)
    # step 1 by hand: its prompts, sampled from the policy after step 0 with the step's seed
    prompts = [ONLINE_PROMPTS[i] for i in epoch_batch(8, 4, 1, 0).tolist()]
    pairs, attention, seq, P, mask = sampled_pairs_by_hand(
        after_one, rm, prompts, derive_seed(0, 1, "samples"))
    policy, ref = (logprob_sums(m, seq, attention, P, mask) for m in (after_one, sft))
    w, lo = torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs])
    by_hand, _ = dpo_loss(policy[w], policy[lo], ref[w], ref[lo], 0.5)
    assert history.train_loss[1] == pytest.approx(by_hand.item(), abs=1e-5)
    assert history.metrics["tied"][1] == pytest.approx(1 - len(pairs) / 4)
    with torch.no_grad():
        scores = rm(seq, attention)
    assert history.metrics["rm_score"][1] == pytest.approx(scores.mean().item(), abs=1e-5)
    texts = [TOKENIZER.decode(row[m.bool()].tolist(), skip_special_tokens=True)
             for row, m in zip(seq[:, P:], mask)]
    ended = (seq[:, P:] == TOKENIZER.eos_token_id).any(1).tolist()
    gold = [gold_score(p, t, e) for p, t, e in zip([p for p in prompts for _ in range(2)],
                                                   texts, ended)]
    assert history.metrics["gold_score"][1] == pytest.approx(sum(gold) / 8)
    assert checkpoints.read(tmp_path / "a.pt").inputs["rm"] == checkpoints.fingerprint(rm)


def test_online_ties_are_left_out_of_the_loss_and_counted():
    rankings, stats = dpo.online_pairs(tiny_gpt(), LastTokenScorer(), TOKENIZER, ONLINE_PROMPTS,
                                       6, 7)
    pairs, _, seq, P, mask = sampled_pairs_by_hand(tiny_gpt(), LastTokenScorer(), ONLINE_PROMPTS,
                                                   7)
    assert 0 < len(pairs) < 8  # both kinds occur with this seed
    assert stats["tied"] == pytest.approx(1 - len(pairs) / 8)
    texts = [TOKENIZER.decode(row[m.bool()].tolist(), skip_special_tokens=True)
             for row, m in zip(seq[:, P:], mask)]
    assert [r["prompt"] for r in rankings] == [ONLINE_PROMPTS[a // 2]["prompt"] for a, _ in pairs]
    assert [r["responses"][r["ranking"][0]] for r in rankings] == [texts[a] for a, _ in pairs]
    assert [r["responses"][r["ranking"][1]] for r in rankings] == [texts[b] for _, b in pairs]
    # a reward model that ties every pair: the step counts them all and leaves the policy be
    flat = reward.RewardModel(tiny_gpt(1)).eval()  # zero head: every score 0
    sft = tiny_gpt()
    policy, history = train_dpo(replace(online_config(), batch_size=8), sft, TOKENIZER, None,
                                marker_rankings(2, seed=1), prompts=ONLINE_PROMPTS,
                                reward_model=flat)
    assert history.metrics["tied"] == [1.0] and history.train_loss == [0.0]
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(),
                                                 sft.state_dict().values()))


def test_rank_two_against_hand_made_pairs_and_bad_lengths():
    prompts = [{"id": "a", "prompt": "x ?"}, {"id": "b", "prompt": "y ?"},
               {"id": "c", "prompt": "z ?"}]
    texts, ended = ["p", "q", "r", "r", "s", "t"], [True, False, True, True, True, True]
    rankings, tied = dpo.rank_two(prompts, texts, ended, [0.5, 1.5, 0.2, 0.2, 3.0, -3.0])
    assert tied == pytest.approx(1 / 3)  # prompt b's two identical answers tie exactly
    assert rankings == [
        {"prompt_id": "a", "prompt": "x ?", "responses": ["p", "q"], "terminated": [True, False],
         "ranking": [1, 0]},
        {"prompt_id": "c", "prompt": "z ?", "responses": ["s", "t"], "terminated": [True, True],
         "ranking": [0, 1]}]
    for record in rankings:
        comparisons.check_ranking(record, "online ranking")  # the rm stage's format
    with pytest.raises(ValueError, match="3 prompts need 2 texts"):
        dpo.rank_two(prompts, texts[:5], ended, [0.0] * 6)


def test_online_steps_are_full_batches_of_prompts():
    cfg = replace(online_config(), batch_size=3, epochs=2)  # 8 prompts: 2 full steps a pass
    assert dpo.train_steps(cfg, 8) == 4
    assert dpo.train_steps(replace(cfg, pairs="rankings"), 8) == 6  # offline: ceil, every one
    _, history = train_dpo(cfg, tiny_gpt(), TOKENIZER, None, marker_rankings(2, seed=1),
                           prompts=ONLINE_PROMPTS, reward_model=tiny_rm())
    assert len(history.train_loss) == 4
    # the recipe notebook 11 trains: about the offline stage's 162 steps over 2592 rankings
    stage = DPOConfig()
    assert dpo.train_steps(dpo.online_recipe(stage), 162) == 160
    assert dpo.train_steps(stage, 2592) == 162


def test_online_dpo_is_determined_by_its_seed():
    def run(seed):
        return train_dpo(online_config(seed), tiny_gpt(), TOKENIZER, None,
                         marker_rankings(2, seed=1), prompts=ONLINE_PROMPTS,
                         reward_model=tiny_rm())
    (a, history_a), (b, history_b), (_, history_c) = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
    assert history_a.metrics == history_b.metrics and history_a.train_loss == history_b.train_loss
    assert history_c.metrics["rm_score"] != history_a.metrics["rm_score"]


@pytest.mark.parametrize("online, train, kwargs", [
    (True, [], {"prompts": ONLINE_PROMPTS, "reward_model": LastTokenScorer()}),
    (True, None, {"reward_model": LastTokenScorer()}),
    (True, None, {"prompts": ONLINE_PROMPTS}),
    (False, None, {}),
    (False, [], {"reward_model": LastTokenScorer()})])
def test_the_pair_source_needs_its_own_arguments(online, train, kwargs):
    cfg = online_config() if online else quick_config()
    with pytest.raises(ValueError, match="DPOConfig.pairs="):
        train_dpo(cfg, tiny_gpt(), TOKENIZER, train, [], **kwargs)


def test_config_rejects_an_unknown_pair_source():
    with pytest.raises(ValueError, match="DPOConfig.pairs must be one of"):
        DPOConfig(pairs="offline")
