"""The gpt2 preset end to end, offline: a tiny random GPT-2 and a byte-level BPE tokenizer
trained on the world's text stand in for the hub checkpoint; SFT, the reward model and a PPO
iteration run through `artifacts.load_model` exactly as with "gpt2"."""
import json
from dataclasses import replace

import pytest
import torch

from rlhf_lite import artifacts, checkpoints, paths, presets
from rlhf_lite.batching import epoch_batch, prompt_response_ids
from rlhf_lite.chat import format_prompt
from rlhf_lite.data import load_records
from rlhf_lite.hf import load_pretrained, save_random_gpt2
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.ppo import PPOConfig, PPOTrainer
from rlhf_lite.presets import CHECKPOINT_ENV, gpt2_checkpoint
from rlhf_lite.pretrain import random_windows
from rlhf_lite.reward import RewardConfig
from rlhf_lite.sft import SFTConfig, sft_loss, tokenize_demonstrations
from rlhf_lite.training import TrainConfig


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A GPT-2 folder whose BPE has seen the world's prompts, demonstrations and some web text."""
    demos = load_records("demonstrations")
    texts = ([format_prompt(d["prompt"]) + " " + d["response"] for d in demos]
             + [r["text"] for r in load_records("pretrain_val")[:200]])
    return save_random_gpt2(tmp_path_factory.mktemp("gpt2"), texts, vocab_size=600, n_layer=2,
                            n_head=2, n_embd=32, n_positions=128)


@pytest.fixture
def micro_gpt2(checkpoint, tmp_path, monkeypatch):
    """The gpt2 preset with the local checkpoint, on the CPU, and a few steps per stage."""
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path / "artifacts")

    def steps(n, desc):
        return TrainConfig(max_steps=n, lr=1e-3, warmup_steps=1, eval_interval=0, desc=desc)

    ppo = PPOConfig(iterations=1, batch_size=8, minibatch_size=4, ppo_epochs=1, max_new_tokens=8)
    preset = replace(presets.get_preset("gpt2"), name="gpt2-micro", device="cpu",
                     base=replace(presets.get_preset("gpt2").base, init_from=str(checkpoint),
                                  block_size=32, batch_size=4, train=steps(3, "pretrain")),
                     sft=SFTConfig(batch_size=8, train=steps(2, "sft")),
                     rm=RewardConfig(k=2, rounds=1, val_rounds=1, max_new_tokens=8,
                                         batch_size=128, train=steps(None, "rm")),
                     ppo=ppo, ppo_ptx=replace(ppo, ptx_coef=0.1, ptx_batch_size=2))
    monkeypatch.setitem(presets.PRESETS, "gpt2-micro", preset)
    return "gpt2-micro"


def test_gpt2_preset_recipe():
    p = presets.get_preset("gpt2")
    assert p.base.init_from == gpt2_checkpoint() and p.base.train.max_steps > 0
    assert (p.device, p.precision) == (None, "auto")  # the best device and its best precision
    assert p.ppo_ptx.ptx_coef > 0 == p.ppo.ptx_coef
    toy = presets.get_preset("toy")  # the CPU course runs as before: no device context, float32
    assert (toy.device, toy.precision, toy.gradient_checkpointing) == ("cpu", "fp32", False)


def test_checkpoint_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(CHECKPOINT_ENV, "/models/my-gpt2")
    assert gpt2_checkpoint() == "/models/my-gpt2"
    monkeypatch.delenv(CHECKPOINT_ENV)
    assert gpt2_checkpoint() == "gpt2"


def test_base_stage_continues_pretraining_the_checkpoint_on_the_world(micro_gpt2, checkpoint):
    base = artifacts.load_model("base", micro_gpt2)
    assert artifacts.status("base", micro_gpt2) == "done"
    tokenizer = presets.get_preset(micro_gpt2).load_tokenizer()
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and tokenizer.padding_side == "left"
    assert base.config.vocab_size == len(tokenizer)  # the added pad row
    assert base.config.n_layer == 2 and base.config.block_size == 128  # the checkpoint's sizes
    start, _ = load_pretrained(checkpoint)
    history = checkpoints.read(artifacts.checkpoint_path("base", micro_gpt2)).history
    assert history["steps"] == [0, 1, 2] and history["eval"]["val_loss"]
    # trained from the checkpoint's weights, not from scratch: close to them after 3 steps
    ids = tokenizer(["user : what is two plus two ? bot :"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        moved = (base(ids) - start(ids)).abs().max().item()
    assert 0 < moved < 1.0
    # another checkpoint is another recipe: the base stage becomes stale
    presets.PRESETS[micro_gpt2].base = replace(presets.PRESETS[micro_gpt2].base,
                                               init_from="elsewhere")
    assert artifacts.status("base", micro_gpt2) == "stale"


def test_world_text_survives_gpt2_tokenization(micro_gpt2):
    """BPE re-tokenizes the world losslessly, so the gold labeler judges the same text."""
    tokenizer = presets.get_preset(micro_gpt2).load_tokenizer()
    demos = load_records("demonstrations")[:50]
    pairs = prompt_response_ids(tokenizer, [d["prompt"] for d in demos],
                                [d["response"] for d in demos])
    for d, (prompt, response) in zip(demos, pairs):
        assert tokenizer.decode(prompt) == format_prompt(d["prompt"])
        assert tokenizer.decode(response) == " " + d["response"]
    batch = tokenize_demonstrations(demos, tokenizer, block_size=128)
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    assert ((batch["input_ids"] == tokenizer.eos_token_id).sum(1) == 1).all()  # one eos, unmasked


def test_sft_rm_and_ppo_run_under_the_preset(micro_gpt2):
    sft = artifacts.load_model("sft", micro_gpt2)
    ckpt = checkpoints.read(artifacts.checkpoint_path("sft", micro_gpt2))
    assert ckpt.step == 2 and all(torch.isfinite(torch.tensor(ckpt.history["train_loss"])))
    assert artifacts.status("sft", micro_gpt2) == "done"
    base = artifacts.load_model("base", micro_gpt2)
    assert not torch.equal(sft.lm_head.weight, base.lm_head.weight)  # it trained

    rm = artifacts.load_model("rm", micro_gpt2)
    assert artifacts.status("rm", micro_gpt2) == "done"
    lines = artifacts.rankings_path("train", micro_gpt2).read_text().splitlines()
    rankings = [json.loads(line) for line in lines]
    assert len(rankings) == 162 and all(len(r["responses"]) == 2 for r in rankings)

    p = presets.get_preset(micro_gpt2)
    tokenizer = p.load_tokenizer()
    trainer = PPOTrainer(p.ppo, sft, rm, tokenizer, load_records("prompts_train"))
    before = {k: v.clone() for k, v in trainer.reference.state_dict().items()}
    metrics = trainer.step()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    # the reference is frozen and has no optimizer state: only policy and value are trained
    trained = {id(q) for g in trainer.optimizer.param_groups for q in g["params"]}
    assert not any(id(q) in trained or q.requires_grad for q in trainer.reference.parameters())
    assert all(torch.equal(v, before[k]) for k, v in trainer.reference.state_dict().items())


def test_runtime_places_new_tensors_on_the_preset_device_but_keeps_the_data_order():
    """Inside `runtime()` tensors are created on the preset's device ("meta" stands in for a
    GPU here); batches and samples still come from CPU generators, so they are the same."""
    expected = epoch_batch(50, 8, step=3, seed=0), random_windows(torch.arange(100), 4, 8, seed=1)
    with replace(presets.get_preset("toy"), device="meta").runtime() as device:
        assert device.type == "meta" and torch.zeros(1).device.type == "meta"
        idx = epoch_batch(50, 8, step=3, seed=0)
        x, _ = random_windows(torch.arange(100, device="cpu"), 4, 8, seed=1)
    assert torch.equal(idx, expected[0]) and torch.equal(x, expected[1][0])
    with presets.get_preset("toy").runtime() as device:  # toy: plain CPU, no autocast
        assert device.type == "cpu" and not torch.is_autocast_enabled("cpu")
    with replace(presets.get_preset("gpt2"), device="cpu").runtime():  # fp32 on the CPU
        assert not torch.is_autocast_enabled("cpu")


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=3, n_head=2, n_embd=16))
    ids = torch.randint(0, 50, (2, 12))
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = flag
        loss = model(ids).logsumexp(-1).mean()
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-5, atol=1e-7)


def test_gradient_checkpointing_is_set_by_the_preset(micro_gpt2):
    presets.PRESETS[micro_gpt2].gradient_checkpointing = True
    assert artifacts.load_model("base", micro_gpt2).gradient_checkpointing
    presets.PRESETS[micro_gpt2].gradient_checkpointing = False
    assert not artifacts.load_model("base", micro_gpt2).gradient_checkpointing


def test_sft_step_under_bf16_autocast_matches_float32(micro_gpt2):
    """The stage code is bf16-safe: under autocast the loss is close to float32's and the
    gradients stay float32 (CPU autocast stands in for CUDA's here)."""
    base = artifacts.load_model("base", micro_gpt2).train()
    tokenizer = presets.get_preset(micro_gpt2).load_tokenizer()
    batch = tokenize_demonstrations(load_records("demonstrations")[:8], tokenizer, 128)
    full = sft_loss(base, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = sft_loss(base, batch)
    half.backward()
    assert half.dtype == torch.float32 and abs(half.item() - full.item()) < 0.05 * full.item()
    assert base.lm_head.weight.grad.dtype == torch.float32
    assert torch.isfinite(base.lm_head.weight.grad).all()
