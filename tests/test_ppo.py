"""PPO pieces against hand computations and loops, plus the checklist's invariants."""
import copy
import dataclasses

import pytest
import torch

from rlhf_lite import checkpoints, data, evaluation, labeler
from rlhf_lite.generation import Completion
from rlhf_lite.kl import kl_estimate
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.ppo import (
    METRIC_RULES,
    PPOConfig,
    PPOTrainer,
    clipped_policy_loss,
    clipped_value_loss,
    response_logprobs,
    rlvr_variants,
    save_policy,
)
from rlhf_lite.tokenizer import load_tokenizer


class TokenCountReward(torch.nn.Module):
    """A stand-in reward model: the share of a response that is `token` (with the backbone and
    head a real reward model has, so the value model can be initialised from it)."""

    def __init__(self, vocab_size, token, prompt_len_fn):
        super().__init__()
        self.backbone = GPT(GPTConfig(vocab_size=vocab_size, n_layer=1, n_head=2, n_embd=16))
        self.head = torch.nn.Linear(16, 1)
        self.token, self.prompt_len_fn = token, prompt_len_fn

    def forward(self, input_ids, attention_mask):
        response = input_ids[:, self.prompt_len_fn():]
        real = attention_mask[:, self.prompt_len_fn():].float()
        return ((response == self.token).float() * real).sum(1) / real.sum(1).clamp(min=1)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def make_trainer(tokenizer, cfg=None, dropout=0.0, token="five", pretrain_stream=None,
                 prompts=None):
    torch.manual_seed(0)
    policy = GPT(GPTConfig(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=32,
                           dropout=dropout))
    prompts = prompts or data.load_records("prompts_train")
    prompt_len = {}
    rm = TokenCountReward(len(tokenizer), tokenizer.convert_tokens_to_ids(token),
                          lambda: prompt_len["P"])
    cfg = cfg or PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, ppo_epochs=2)
    trainer = PPOTrainer(cfg, policy, rm, tokenizer, prompts, gold_judge=labeler.gold_score,
                         pretrain_stream=pretrain_stream)
    original = trainer.rollout

    def rollout(batch):  # let the stand-in RM know where responses start
        enc = tokenizer([f"user : {p['prompt']} bot :" for p in batch], padding=True)
        prompt_len["P"] = len(enc["input_ids"][0])
        return original(batch)
    trainer.rollout = rollout
    return trainer, prompts


def test_clipped_policy_loss_matches_a_token_loop():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.0, -4.0]])
    old = torch.tensor([[-1.2, -1.5, -0.5], [-0.3, -2.0, -4.0]])
    adv = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 3.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, stats = clipped_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    terms, clipped = [], []
    for b in range(2):
        for t in range(3):
            if mask[b, t]:
                ratio = float(torch.exp(logp[b, t] - old[b, t]))
                a = float(adv[b, t])
                un, cl = -a * ratio, -a * min(max(ratio, 0.8), 1.2)
                terms.append(max(un, cl))
                clipped.append(cl > un)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    assert stats["clipfrac"] == pytest.approx(sum(clipped) / len(clipped))
    # by hand: ratio e^0.2 = 1.22 with A > 0 and e^1 = 2.72 with A > 0 are capped at 1.2;
    # e^-0.5 = 0.61 with A < 0 is floored at 0.8; the two ratios of exactly 1 are not clipped
    assert stats["clipfrac"] == pytest.approx(3 / 5)
    assert stats["ratio_max"] == pytest.approx(float(torch.exp(torch.tensor(1.0))))


def test_clipped_value_loss_by_hand():
    values, old = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]])
    returns, mask = torch.tensor([[2.0, 1.0]]), torch.ones(1, 2)
    # token 0: unclipped (1-2)^2 = 1, clipped V = 0.7: (0.7-2)^2 = 1.69 -> 1.69; token 1: 1
    loss = clipped_value_loss(values, old, returns, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.0) / 2)


def test_ratio_is_exactly_one_on_the_first_minibatch(tokenizer):
    trainer, prompts = make_trainer(tokenizer)
    r = trainer.rollout(prompts[:8])
    P = r.sequences.shape[1] - r.mask.shape[1]
    mb = trainer.cfg.minibatch_size
    with torch.enable_grad():
        new, _ = response_logprobs(trainer.policy, r.sequences[:mb], r.attention_mask[:mb], P,
                                   trainer.cfg.temperature, trainer.suppressed)
    assert torch.equal(new.detach(), r.logprobs[:mb])
    assert trainer.update(r)["first_ratio_max"] == 1.0


def test_rewards_are_kl_penalty_per_token_plus_score_at_the_last_token(tokenizer):
    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, beta=0.3)
    trainer, prompts = make_trainer(tokenizer, cfg)
    trainer.policy.transformer.h[0].mlp.c_proj.weight.data += 0.05  # differ from the reference
    r = trainer.rollout(prompts[:8])
    expected = -0.3 * kl_estimate(r.logprobs, r.ref_logprobs, "k1") * r.mask
    last = r.mask.sum(1).long() - 1
    expected[torch.arange(8), last] += r.scores
    assert torch.allclose(r.rewards, expected)
    assert (r.rewards[r.mask == 0] == 0).all() and (r.advantages[r.mask == 0] == 0).all()


def test_missing_eos_is_penalised(tokenizer):
    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=3, missing_eos_penalty=5.0)
    trainer, prompts = make_trainer(tokenizer, cfg)
    r = trainer.rollout(prompts[:8])
    raw = trainer.reward_model(r.sequences, r.attention_mask)
    assert (~r.terminated).any(), "an untrained model should rarely stop within 3 tokens"
    assert torch.allclose(r.scores, raw - 5.0 * (~r.terminated).float())


def test_left_padded_rollout_logprobs_equal_each_prompt_alone(tokenizer):
    trainer, prompts = make_trainer(tokenizer)
    batch = [prompts[0], next(p for p in prompts if len(p["prompt"].split()) > 8)]
    r = trainer.rollout(batch)
    P = r.sequences.shape[1] - r.mask.shape[1]
    for i in range(2):
        keep = r.attention_mask[i].bool()
        keep[P:] = True  # the response columns, including pad after eos
        seq = r.sequences[i, keep][None]
        p_len = int(r.attention_mask[i, :P].sum())
        with torch.no_grad():
            alone, _ = response_logprobs(trainer.policy, seq, torch.ones_like(seq), p_len, 1.0,
                                         trainer.suppressed)
        n = int(r.mask[i].sum())
        assert torch.allclose(alone[0, :n], r.logprobs[i, :n], atol=1e-5)


def test_the_evaluation_kl_is_the_kl_ppo_logs(tokenizer):
    trainer, prompts = make_trainer(tokenizer)
    with torch.no_grad():  # differ from the reference
        trainer.policy.lm_head.weight.mul_(20.0)
    r = trainer.rollout(prompts[:8])
    logged = (kl_estimate(r.logprobs, r.ref_logprobs, "k1") * r.mask).sum(1).mean().item()
    completions = [Completion(t, bool(e)) for t, e in zip(r.texts, r.terminated)]
    # the same log-probs (generation.sequence_logprobs) of right-padded rows, not left-padded
    kl = evaluation.kl_to_reference(trainer.policy, trainer.reference, tokenizer, r.prompts,
                                    completions)
    assert logged > 1.0 and kl == pytest.approx(logged, rel=1e-6)


def test_pad_and_unk_are_never_sampled_and_scored_as_sampled(tokenizer):
    trainer, prompts = make_trainer(tokenizer)
    assert trainer.suppressed == [tokenizer.pad_token_id, tokenizer.unk_token_id]
    for model in (trainer.policy, trainer.reference):  # make pad and unk by far the likeliest
        with torch.no_grad():
            direction = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(0))
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.copy_(direction)
            model.lm_head.weight[trainer.suppressed] = 50 * direction / direction.norm() ** 2
    r = trainer.rollout(prompts[:8])
    tokens = r.sequences[:, -r.mask.shape[1]:]
    assert not (torch.isin(tokens, torch.tensor(trainer.suppressed)) & r.mask.bool()).any()
    # by hand: log-softmax over the tokens that can be sampled
    P = r.sequences.shape[1] - r.mask.shape[1]
    with torch.no_grad():
        logits = trainer.policy(r.sequences, r.attention_mask)[:, P - 1: -1]
    logits[..., trainer.suppressed] = float("-inf")
    by_hand = logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
    valid = r.mask.bool()
    assert torch.allclose(r.logprobs[valid], by_hand[valid], atol=1e-5)
    assert torch.isfinite(r.entropy).all()


def test_dropout_off_and_frozen_models_stay_frozen(tokenizer):
    trainer, _ = make_trainer(tokenizer, dropout=0.2)
    for model in (trainer.policy, trainer.reference, trainer.reward_model, trainer.value_model):
        assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    ref_before = copy.deepcopy(trainer.reference.state_dict())
    policy_before = copy.deepcopy(trainer.policy.state_dict())
    trainer.step()
    assert all(torch.equal(v, trainer.reference.state_dict()[k]) for k, v in ref_before.items())
    assert any(not torch.equal(v, trainer.policy.state_dict()[k]) for k, v in policy_before.items())


def test_logged_metrics(tokenizer):
    trainer, _ = make_trainer(tokenizer)
    metrics = trainer.step()
    for key in ["rm_score", "gold_score", "kl", "entropy", "clipfrac", "approx_kl", "value_loss",
                "explained_variance", "response_length", "ratio_max", "beta"]:
        assert key in metrics, key
    assert metrics["kl"] == 0.0  # first rollout: the policy is still the reference


def test_every_metric_is_combined_by_its_own_rule(tokenizer, monkeypatch):
    """A metric with no rule in METRIC_RULES is an error (also in one process, before a
    torchrun would meet it), not silently averaged."""
    trainer, _ = make_trainer(tokenizer)
    trainer.step()
    monkeypatch.delitem(METRIC_RULES, "clipfrac")
    with pytest.raises(KeyError, match="'clipfrac' has no rule"):
        trainer.step()


def test_a_nan_gradient_stops_ppo_before_the_weights_move(tokenizer):
    trainer, _ = make_trainer(tokenizer)
    trainer.step()
    weights = copy.deepcopy(trainer.policy.state_dict())
    next(trainer.value_model.parameters()).register_hook(lambda g: g * float("nan"))
    with pytest.raises(FloatingPointError, match="ppo: gradient norm is nan at step 1"):
        trainer.step()
    assert all(torch.equal(v, trainer.policy.state_dict()[k]) for k, v in weights.items())


def test_ppo_increases_a_simple_reward(tokenizer):
    cfg = PPOConfig(batch_size=32, minibatch_size=8, max_new_tokens=6, ppo_epochs=4, lr=3e-3,
                    beta=0.0, missing_eos_penalty=0.0)
    trainer, _ = make_trainer(tokenizer, cfg, token="five")
    scores = trainer.train(iterations=25).metrics["rm_score"]
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert last > first + 0.2, (first, last)


# ---------------------------------------------------------------- PPO-ptx
def make_ptx_trainer(tokenizer, ptx_coef, **kw):
    """A trainer whose pretraining text is one sentence repeated: easy to learn."""
    stream = torch.tensor(tokenizer("a cat has four legs .")["input_ids"] * 200)
    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, ppo_epochs=2, lr=3e-3,
                    ptx_coef=ptx_coef, ptx_batch_size=4, **kw)
    return make_trainer(tokenizer, cfg, pretrain_stream=stream)[0], stream


def test_ptx_needs_pretraining_text(tokenizer):
    policy = GPT(GPTConfig(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=32))
    rm = TokenCountReward(len(tokenizer), 5, lambda: 1)
    with pytest.raises(ValueError, match="pretrain_stream"):
        PPOTrainer(PPOConfig(ptx_coef=1.0), policy, rm, tokenizer, [])


def test_ptx_loss_is_the_lm_loss_on_seeded_windows(tokenizer):
    from rlhf_lite.pretrain import lm_loss, random_windows

    trainer, stream = make_ptx_trainer(tokenizer, 1.0)
    expected = lm_loss(trainer.policy, random_windows(stream, 4, trainer.policy.config.block_size,
                                                      seed=1))
    assert torch.allclose(trainer.pretraining_loss(), expected)
    assert not torch.allclose(trainer.pretraining_loss(), expected)  # the next batch differs


def test_ptx_keeps_ratio_one_and_lowers_the_pretraining_loss(tokenizer):
    from rlhf_lite.pretrain import stream_loss

    losses = {}
    for coef in (0.0, 1.0):
        trainer, stream = make_ptx_trainer(tokenizer, coef)
        before = stream_loss(trainer.policy, stream, 32)
        history = trainer.train(iterations=3)
        assert history.metrics["first_ratio_max"][0] == 1.0
        assert ("ptx_loss" in history.metrics) == (coef > 0)
        losses[coef] = stream_loss(trainer.policy, stream, 32)
    assert losses[1.0] < before - 1.0 and losses[1.0] < losses[0.0] - 1.0, (before, losses)


# ---------------------------------------------------------------- runs side by side
def test_runs_in_parallel_equal_the_same_runs_one_after_another(tokenizer):
    from rlhf_lite.ppo import train_in_parallel
    from rlhf_lite.reward import RewardModel
    from rlhf_lite.utils import seed_everything

    torch.manual_seed(0)
    tiny = GPTConfig(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=16)
    sft, rm = GPT(tiny), RewardModel(GPT(tiny))
    torch.nn.init.normal_(rm.head.weight)  # a reward that depends on the response
    prompts = data.load_records("prompts_train")
    configs = {lr: PPOConfig(iterations=2, batch_size=8, minibatch_size=4, max_new_tokens=6,
                             ppo_epochs=1, lr=lr) for lr in (1e-3, 1e-2)}
    parallel = train_in_parallel(configs, sft, rm, tokenizer, prompts,
                                 gold_judge=labeler.gold_score)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for lr, cfg in configs.items():
            seed_everything(cfg.seed)
            alone = PPOTrainer(cfg, sft, rm, tokenizer, prompts, gold_judge=labeler.gold_score)
            alone.train()
            assert parallel[lr].history.metrics == alone.history.metrics
            for name, weight in alone.policy.state_dict().items():
                assert torch.equal(parallel[lr].policy.state_dict()[name], weight), name
    finally:
        torch.set_num_threads(threads)
    assert parallel[1e-3].history.last("kl") != parallel[1e-2].history.last("kl")  # two runs
    parallel[1e-2].step()  # a whole trainer came back: it can go on
    assert parallel[1e-2].history.steps == [0, 1, 2]


# ---------------------------------------------------------------- checkpoints
def test_an_interrupted_run_resumed_from_its_checkpoint_equals_an_uninterrupted_one(
        tokenizer, tmp_path):
    """Everything a PPO run carries (policy, value model, AdamW moments, adaptive beta, the
    sampling generator, the PPO-ptx batch counter, the history) survives a checkpoint."""
    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, ppo_epochs=2, iterations=4,
                    checkpoint_interval=2, adaptive_kl=True, kl_target=0.1, kl_horizon=8,
                    ptx_coef=0.5, ptx_batch_size=2)
    stream = torch.arange(2, 300) % len(tokenizer)
    straight, _ = make_trainer(tokenizer, cfg, pretrain_stream=stream)
    straight.train()
    path = tmp_path / "ppo.partial.pt"
    killed, _ = make_trainer(tokenizer, cfg, pretrain_stream=stream)
    step = killed.step

    def step_until_killed():
        if killed.iteration == 3:
            raise KeyboardInterrupt  # the run dies after 3 iterations, 1 after its checkpoint
        return step()
    killed.step = step_until_killed
    with pytest.raises(KeyboardInterrupt):
        killed.train(checkpoint_path=path)
    saved = checkpoints.read(path)
    assert saved.step == 2 and 0 < saved.seconds < killed.history.seconds  # 2 of 3 iterations
    resumed, _ = make_trainer(tokenizer, cfg, pretrain_stream=stream)
    resumed.train(checkpoint_path=path)
    # training time: the 2 saved iterations' plus the 2 resumed ones'
    total = checkpoints.read(path).seconds
    assert total > saved.seconds and total == resumed.history.seconds
    assert resumed.iteration == 4 and resumed.history.steps == [0, 1, 2, 3]
    assert resumed.history.metrics == straight.history.metrics
    assert resumed.kl_ctl.beta == straight.kl_ctl.beta != cfg.beta
    for a, b in ((resumed.policy, straight.policy), (resumed.value_model, straight.value_model)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                     b.state_dict().values()))
    assert checkpoints.read(path).done


def test_a_snapshot_is_the_policy_of_the_same_run_stopped_there(tokenizer, tmp_path):
    """snapshot_at keeps the policy of iteration 2 of a 3-iteration run: the weights of the
    same run stopped at 2, saved and loaded with the run."""
    short = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, iterations=2)
    long = dataclasses.replace(short, iterations=3, snapshot_at=2)
    stopped, _ = make_trainer(tokenizer, short)
    stopped.train()
    longer, _ = make_trainer(tokenizer, long)
    longer.train()
    assert {k: v[:2] for k, v in longer.history.metrics.items()} == stopped.history.metrics
    final = longer.policy.state_dict()
    kept = longer.snapshot_policy()
    assert not kept.training
    assert all(torch.equal(kept.state_dict()[name], weight)
               for name, weight in stopped.policy.state_dict().items())
    assert not all(torch.equal(final[name], weight)
                   for name, weight in stopped.policy.state_dict().items())  # it went on
    path = tmp_path / "run.pt"
    save_policy(longer, path)
    loaded, _ = make_trainer(tokenizer, long)
    loaded.resume(checkpoints.read(path))
    assert all(torch.equal(loaded.snapshot_policy().state_dict()[name], weight)
               for name, weight in stopped.policy.state_dict().items())
    with pytest.raises(ValueError, match="no snapshot"):
        stopped.snapshot_policy()
    with pytest.raises(ValueError, match="snapshot_at must be at most iterations"):
        dataclasses.replace(short, snapshot_at=3)


def test_a_checkpoint_of_other_input_models_is_not_resumed(tokenizer, tmp_path, capsys):
    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, ppo_epochs=1, iterations=1)
    path = tmp_path / "ppo.pt"
    trainer, _ = make_trainer(tokenizer, cfg)
    trainer.train(checkpoint_path=path)
    other, _ = make_trainer(tokenizer, cfg, token="four")
    with torch.no_grad():
        other.reward_model.head.bias += 1.0  # another reward model
    other.train(checkpoint_path=path)
    assert "trained from other input models" in capsys.readouterr().out
    assert other.iteration == 1 and other.history.steps == [0]


# ---------------------------------------------------------------- critic-free group baselines
@pytest.mark.parametrize("kind", ["rloo", "grpo"])
def test_a_group_baseline_samples_groups_and_trains_without_a_value_model(tokenizer, kind):
    from rlhf_lite.gae import group_advantages, whiten

    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, ppo_epochs=2,
                    advantage=kind, group_size=4)
    trainer, prompts = make_trainer(tokenizer, cfg)
    assert trainer.value_model is None and len(trainer.optimizer.param_groups) == 1
    picked = [prompts[i] for i in torch.randint(len(prompts), (2,), generator=torch.Generator()
                                                .manual_seed(cfg.seed)).tolist()]
    r = trainer.rollout([p for p in picked for _ in range(4)])
    assert [p["id"] for p in r.prompts] == [p["id"] for p in picked for _ in range(4)]
    expected = whiten(group_advantages(r.rewards.sum(1), 4, kind)[:, None] * r.mask, r.mask)
    assert torch.equal(r.advantages, expected)  # one advantage per response, on every token
    seen, rollout = [], trainer.rollout
    trainer.rollout = lambda batch: (seen.append([p["id"] for p in batch]), rollout(batch))[1]
    metrics = trainer.step()
    groups = [seen[0][i: i + 4] for i in range(0, 8, 4)]
    assert all(len(set(group)) == 1 for group in groups)  # each prompt sampled 4 times
    assert metrics["first_ratio_max"] == 1.0
    assert "value_loss" not in metrics and "explained_variance" not in metrics
    with pytest.raises(ValueError, match="group_size must be >= 2 and divide batch_size"):
        PPOConfig(advantage=kind)
    with pytest.raises(ValueError, match="advantage must be one of"):
        PPOConfig(advantage="a2c", group_size=4)


@pytest.mark.parametrize("advantage", ["gae", "rloo"])
def test_advantages_are_whitened_whatever_the_baseline(tokenizer, advantage):
    """RLOO against PPO is a comparison of baselines only if both steps see advantages of the
    same scale: mean 0 and variance 1 over the batch's valid tokens."""
    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, advantage=advantage,
                    group_size=4 if advantage == "rloo" else 1)
    trainer, prompts = make_trainer(tokenizer, cfg)
    r = trainer.rollout([p for p in prompts[:2] for _ in range(4)])
    valid = r.advantages[r.mask.bool()]
    assert abs(valid.mean().item()) < 1e-5
    assert abs(valid.var(unbiased=False).item() - 1) < 1e-3
    assert (r.advantages[~r.mask.bool()] == 0).all()


def test_rloo_increases_a_simple_reward(tokenizer):
    cfg = PPOConfig(batch_size=32, minibatch_size=8, max_new_tokens=6, ppo_epochs=4, lr=3e-3,
                    beta=0.0, missing_eos_penalty=0.0, advantage="rloo", group_size=4)
    trainer, _ = make_trainer(tokenizer, cfg, token="five")
    scores = trainer.train(iterations=25).metrics["rm_score"]
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert last > first + 0.2, (first, last)


# ---------------------------------------------------------------- the variants of notebook 10
def test_default_configs_reproduce_the_numbers_of_the_trainer_before_its_variants():
    """Two iterations of the default PPO and of whitened GRPO, one thread, give the
    metrics and weights the trainer gave before `reward`, `loss_aggregation`,
    `whiten_advantages` and `kl_in` existed (pinned from that code on an AVX-512 CPU). Another
    CPU's float kernels move them a little (an AVX2 AMD EPYC: GRPO's policy loss by 1.4e-3 of
    itself, its KL by 1.6e-4, the weight sum by 1.2e-7): the tolerances are about 10x the
    largest; a change of what a step computes (a scale, a sign, a missing term) moves them far
    more."""
    tokenizer, threads = load_tokenizer(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        old = dict(batch_size=8, minibatch_size=4, max_new_tokens=6, ppo_epochs=2, lr=2e-5,
                   value_lr=1e-4)  # the defaults of that time: 4 epochs then, 2 here
        pinned = [(PPOConfig(**old),
                   -0.0006112810224294662, -0.0011981725692749023, 99.08280559444839),
                  (PPOConfig(**old, advantage="grpo", group_size=4, beta=0.2),
                   -0.0006895655133121181, 0.00103682279586792, 99.09623167464119)]
        for cfg, policy_loss, kl, weight_sum in pinned:
            trainer, _ = make_trainer(tokenizer, cfg)
            trainer.step()
            metrics = trainer.step()
            assert (metrics["policy_loss"], metrics["kl"]) == pytest.approx(
                (policy_loss, kl), rel=1.5e-2, abs=1e-12)
            assert sum(p.double().sum().item() for p in trainer.policy.parameters()
                       ) == pytest.approx(weight_sum, rel=1.5e-6)
    finally:
        torch.set_num_threads(threads)


def verifier_prompts():
    from rlhf_lite.verifier import verifies

    return [p for p in data.load_records("prompts_train") if verifies(p)]


def test_the_verifier_scores_responses_and_the_missing_eos_penalty_still_applies(tokenizer):
    from rlhf_lite.verifier import verifier_scores

    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=3, reward="verifier",
                    missing_eos_penalty=5.0)
    trainer, prompts = make_trainer(tokenizer, cfg, prompts=verifier_prompts())
    trainer.reward_model = lambda *args: torch.full((8,), 7.0)  # not asked: 7 would show
    r = trainer.rollout(prompts[:8])
    assert (~r.terminated).any(), "an untrained model should rarely stop within 3 tokens"
    expected = (verifier_scores(prompts[:8], r.texts, r.terminated)
                - 5.0 * (~r.terminated).float())
    assert torch.equal(r.scores, expected)


def test_the_verifier_needs_prompts_it_can_check(tokenizer):
    cfg = PPOConfig(batch_size=8, minibatch_size=4, reward="verifier")
    with pytest.raises(ValueError, match=r"PPOConfig.reward 'verifier' can check only .*"
                                         r"'harmful'.*filter them with verifier.verifies"):
        make_trainer(tokenizer, cfg)  # all the train prompts, harmful and tone ones too


@pytest.mark.parametrize("kl_in", ["reward", "loss"])
def test_kl_in_the_reward_or_in_the_loss(tokenizer, kl_in):
    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, beta=0.3, kl_in=kl_in)
    trainer, prompts = make_trainer(tokenizer, cfg)
    trainer.policy.transformer.h[0].mlp.c_proj.weight.data += 0.05  # differ from the reference
    r = trainer.rollout(prompts[:8])
    kl = kl_estimate(r.logprobs, r.ref_logprobs, "k1") * r.mask
    assert kl.abs().sum() > 0
    expected = -0.3 * kl if kl_in == "reward" else torch.zeros_like(kl)
    expected[torch.arange(8), r.mask.sum(1).long() - 1] += r.scores
    assert torch.allclose(r.rewards, expected)
    assert ("kl_loss" in trainer.update(r)) == (kl_in == "loss")


@pytest.mark.parametrize("how", ["token", "sequence", "constant"])
def test_kl_in_the_loss_has_the_gradient_of_beta_times_the_aggregated_k3(tokenizer, how):
    """GRPO's KL term (Shao et al. 2024): with zero advantages the policy loss is beta * k3 of
    the new log-probs to the reference's, aggregated as the policy loss is; its gradient
    flows through the new log-probs only. The reference: autograd of that sum by a loop."""
    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, beta=0.3, kl_in="loss",
                    kl_estimator="k3", advantage="grpo", group_size=4, loss_aggregation=how)
    trainer, prompts = make_trainer(tokenizer, cfg)
    trainer.policy.transformer.h[0].mlp.c_proj.weight.data += 0.05
    r = trainer.rollout([p for p in prompts[:2] for _ in range(4)])
    r.advantages = torch.zeros_like(r.advantages)
    idx = torch.arange(4)
    with torch.enable_grad():
        loss, _, losses = trainer.minibatch_loss(r, idx)
        got = torch.autograd.grad(loss, list(trainer.policy.parameters()))
        P = r.sequences.shape[1] - r.mask.shape[1]
        new, _ = response_logprobs(trainer.policy, r.sequences[:4], r.attention_mask[:4], P,
                                   cfg.temperature, trainer.suppressed)
        rows = []
        for b in range(4):
            terms = [torch.exp(r.ref_logprobs[b, t] - new[b, t]) - 1
                     - (r.ref_logprobs[b, t] - new[b, t])
                     for t in range(new.shape[1]) if r.mask[b, t]]
            rows.append(terms)
        if how == "token":
            k3 = sum(sum(row) for row in rows) / sum(len(row) for row in rows)
        elif how == "sequence":
            k3 = sum(sum(row) / len(row) for row in rows) / 4
        else:
            k3 = sum(sum(row) for row in rows) / (4 * cfg.max_new_tokens)
        want = torch.autograd.grad(0.3 * k3, list(trainer.policy.parameters()))
    assert losses["kl_loss"] == pytest.approx(k3.item(), rel=1e-5)
    assert losses["policy_loss"] == 0.0
    assert any(g.abs().sum() > 0 for g in want)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-7, rtol=1e-4)


def test_the_clipped_loss_is_aggregated_as_asked():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.0, -4.0]])
    old = torch.tensor([[-1.2, -1.5, -0.5], [-0.3, -2.0, -4.0]])
    adv = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 3.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rows = [[max(-a * r, -a * min(max(r, 0.8), 1.2)) for r, a, m in
             zip(torch.exp(lp - o).tolist(), ad.tolist(), mk.tolist()) if m]
            for lp, o, ad, mk in zip(logp, old, adv, mask)]
    expected = {"token": sum(rows[0] + rows[1]) / 4,
                "sequence": (sum(rows[0]) / 3 + sum(rows[1]) / 1) / 2,
                "constant": sum(rows[0] + rows[1]) / (2 * 10)}
    _, token_stats = clipped_policy_loss(logp, old, adv, mask, 0.2)
    for how, value in expected.items():
        loss, stats = clipped_policy_loss(logp, old, adv, mask, 0.2, how, max_len=10)
        assert loss.item() == pytest.approx(value, rel=1e-6), how
        assert stats == token_stats  # clipfrac, approx_kl: token means whatever the loss's


def test_unwhitened_group_advantages_are_the_group_s_own(tokenizer):
    from rlhf_lite.gae import group_advantages, zero_advantage_groups

    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, advantage="dr_grpo",
                    group_size=4, whiten_advantages=False)
    trainer, prompts = make_trainer(tokenizer, cfg)
    r = trainer.rollout([p for p in prompts[:2] for _ in range(4)])
    totals = r.rewards.sum(1)
    assert torch.equal(r.advantages, group_advantages(totals, 4, "dr_grpo")[:, None] * r.mask)
    gae_trainer, _ = make_trainer(tokenizer, PPOConfig(batch_size=8, minibatch_size=4,
                                                       max_new_tokens=6, whiten_advantages=False))
    assert "zero_advantage_groups" not in gae_trainer.step()  # GAE: no groups
    seen, rollout = [], trainer.rollout
    trainer.rollout = lambda batch: seen.append(rollout(batch)) or seen[-1]
    metrics = trainer.step()
    assert metrics["zero_advantage_groups"] == zero_advantage_groups(seen[0].rewards.sum(1), 4)


def test_a_dr_grpo_verifier_run_steps_with_all_its_variants(tokenizer):
    """The grpo_verifier stage's recipe: every variant at once, on checkable prompts."""
    from rlhf_lite.presets import get_preset

    cfg = get_preset("toy").grpo_verifier
    assert (cfg.advantage, cfg.reward, cfg.loss_aggregation, cfg.whiten_advantages, cfg.kl_in,
            cfg.kl_estimator) == ("dr_grpo", "verifier", "constant", False, "loss", "k3")
    small = PPOConfig(**{**cfg.as_dict(), "batch_size": 8, "minibatch_size": 4,
                         "max_new_tokens": 6, "ppo_epochs": 1})
    trainer, _ = make_trainer(tokenizer, small, prompts=verifier_prompts())
    metrics = trainer.step()
    assert {"kl_loss", "zero_advantage_groups"} <= set(metrics)
    assert 0 <= metrics["zero_advantage_groups"] <= 1 and metrics["first_ratio_max"] == 1.0


def test_each_rlvr_variant_changes_only_its_own_fields():
    from rlhf_lite.presets import get_preset

    stage = get_preset("toy").grpo_verifier
    changed = {name: {k for k, v in dataclasses.asdict(cfg).items()
                      if v != dataclasses.asdict(stage)[k]}
               for name, cfg in rlvr_variants(stage).items()}
    assert changed == {"RM reward": {"reward"}, "GRPO": {"advantage", "loss_aggregation"},
                       "k1 in the reward": {"kl_in", "kl_estimator"}}
