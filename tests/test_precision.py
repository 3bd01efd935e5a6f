"""Mixed precision: the choice per GPU (torch.cuda mocked), fp16 with loss scaling in the
trainers (CPU autocast stands in for CUDA's), and fp32 exactly as a plain training loop."""
import math
from dataclasses import replace

import pytest
import torch

from rlhf_lite import data, precision, presets
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.ppo import PPOConfig, PPOTrainer
from rlhf_lite.pretrain import lm_loss, random_windows
from rlhf_lite.reward import RewardModel
from rlhf_lite.tokenizer import load_tokenizer
from rlhf_lite.training import TrainConfig, lr_at, make_optimizer, train
from rlhf_lite.utils import seed_everything

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
STREAM = torch.arange(4000) * 7 % 50  # a predictable sequence: the loss falls within steps
CFG = TrainConfig(max_steps=8, lr=3e-3, warmup_steps=2, eval_interval=0, desc="amp")


@pytest.fixture(autouse=True)
def nothing_announced_yet(monkeypatch):
    monkeypatch.setattr(precision, "_announced", set())


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((8, 0), "bf16"),
                                                  ((9, 0), "bf16")])
def test_auto_takes_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, capsys,
                                                                   capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # as a T4 says
    assert precision.resolve("auto", CUDA) == precision.resolve("auto", CUDA) == expected
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and expected in lines[0] and "%d.%d" % capability in lines[0]


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_auto_is_fp32_off_cuda(device):
    assert precision.resolve("auto", torch.device(device)) == "fp32"


def test_an_explicit_precision_overrides_auto(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    chosen = ["fp16", "fp32", "bf16"]
    assert [precision.resolve(p, CUDA) for p in chosen] == chosen
    assert capsys.readouterr().out == ""  # only an automatic choice is announced
    with pytest.raises(ValueError, match="fp8"):
        precision.resolve("fp8", CUDA)


def test_presets_choose_their_precision():
    toy, gpt2 = presets.get_preset("toy"), presets.get_preset("gpt2")
    assert (toy.precision, gpt2.precision) == ("fp32", "auto")
    for preset in (toy, replace(gpt2, device="cpu")):  # auto on a CPU: fp32, no scaler
        with preset.runtime():
            assert not torch.is_autocast_enabled("cpu")
            assert not precision.grad_scaler().is_enabled()
    with replace(toy, precision="fp16").runtime():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16
        assert precision.grad_scaler().is_enabled()
    assert not precision.grad_scaler().is_enabled()  # the choice ends with the runtime


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32))


def get_batch(step: int):
    return random_windows(STREAM, 8, 16, seed=step)


def token_mean_loss(model: GPT, batch) -> tuple[torch.Tensor, int]:
    return lm_loss(model, batch), batch[1].numel()


def run(precision_name: str, loss_fn=token_mean_loss, batches=get_batch, **train_kwargs):
    """A tiny GPT trained for CFG's steps under `precision_name` autocast on the CPU."""
    model = tiny_gpt()
    with precision.autocast(precision_name, CPU):
        history = train(model, loss_fn, batches, CFG, **train_kwargs)
    return model, history


def test_fp32_training_is_a_plain_adamw_loop_bit_for_bit():
    """The disabled scaler changes nothing: the same steps written without it agree exactly."""
    model, _ = run("fp32")
    plain = tiny_gpt()
    seed_everything(CFG.seed)
    optimizer = make_optimizer(plain, CFG)
    for step in range(CFG.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, CFG)
        optimizer.zero_grad(set_to_none=True)
        lm_loss(plain, get_batch(step)).backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), CFG.grad_clip)
        optimizer.step()
    for name, tensor in plain.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


@pytest.mark.parametrize("half", ["fp16", "bf16"])
def test_16_bit_training_follows_fp32(half):
    """Autocast spans the whole run (as in `Preset.runtime()`): the forward passes must use
    the weights of each step, not autocast's cached copies of the first (10% off here)."""
    full, full_history = run("fp32")
    model, history = run(half)
    assert history.train_loss[-1] < 0.9 * history.train_loss[0]  # it learns
    assert history.train_loss[-1] == pytest.approx(full_history.train_loss[-1], rel=0.01)
    weights = [(full.state_dict()[k], v) for k, v in model.state_dict().items()]
    assert all(torch.isfinite(w).all() for _, w in weights)
    assert not all(torch.equal(f, w) for f, w in weights)  # 16-bit really ran


def test_an_overflowed_fp16_gradient_skips_the_step():
    """fp16 gradients overflow now and then: the scaler skips that step (the weights stay
    those of the step before), where fp32's NaN guard stops the run."""
    last = CFG.max_steps - 1

    def loss_fn(model, batch):
        x, y, overflow = batch
        if overflow:
            model.lm_head.weight.register_hook(lambda grad: torch.full_like(grad, math.inf))
        return token_mean_loss(model, (x, y))

    def batches(step):
        return *get_batch(step), step == last

    skipped, history = run("fp16", loss_fn, batches)
    before, _ = run("fp16", loss_fn, batches, stop_after=last)
    assert math.isinf(history.grad_norm[-1]) and len(history.steps) == CFG.max_steps
    for name, tensor in before.state_dict().items():
        assert torch.equal(skipped.state_dict()[name], tensor), name
    with pytest.raises(FloatingPointError, match="gradient norm"):
        run("fp32", loss_fn, batches)


def test_ppo_updates_under_fp16_with_loss_scaling():
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=32)
    policy, rm = GPT(config), RewardModel(GPT(config))
    cfg = PPOConfig(batch_size=8, minibatch_size=4, max_new_tokens=6, ppo_epochs=2)
    with precision.autocast("fp16", CPU):
        trainer = PPOTrainer(cfg, policy, rm, tokenizer, data.load_records("prompts_train"))
        metrics = [trainer.step() for _ in range(2)]
    assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() > 0
    assert all(m["first_ratio_max"] == 1.0 for m in metrics)  # same forward, same old log-probs
    assert all(math.isfinite(v) for m in metrics for v in m.values())
    changed = [not torch.equal(p, q) for p, q in zip(trainer.policy.parameters(),
                                                     policy.parameters())]
    assert any(changed) and all(torch.isfinite(p).all() for p in trainer.policy.parameters())
