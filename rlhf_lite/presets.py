"""Named recipes: one object holds every stage's configuration for a scale of the course.

`toy` is the CPU course the notebooks run by default. Later stages add their config here,
so a notebook or the pipeline switches scale by changing one name.

`gpt2` runs the same stages on a GPT-2 checkpoint (hub name or folder: `hf.PretrainedConfig`,
env RLHF_GPT2_CHECKPOINT) with its tokenizer: its "base" stage is the checkpoint, not
pretraining, and the toy world's prompts and demonstrations are simply tokenized by GPT-2's
BPE, so the gold labeler, which judges text, still judges. Besides its recipes a preset says
how the stages run (`runtime`: device, bf16 autocast, gradient checkpointing); those settings
are no part of any recipe, so changing them never makes a checkpoint stale.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from .hf import PretrainedConfig
from .ppo import PPOConfig
from .pretrain import PretrainConfig
from .reward import RewardConfig
from .sft import SFTConfig
from .training import TrainConfig
from .utils import pick_device

# PPO-ptx's gamma in the toy world (the paper: 27.8 with its own loss scaling); notebook 7's sweep
PTX_COEF = 0.1


@dataclass
class Preset:
    name: str  # the name notebooks and the pipeline use
    # stage 0: base model, pretrained on the world's text or loaded from a GPT-2 checkpoint
    pretrain: PretrainConfig | PretrainedConfig = field(default_factory=PretrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)  # stage 1: supervised fine-tuning
    reward: RewardConfig = field(default_factory=RewardConfig)  # stage 2: reward model
    ppo: PPOConfig = field(default_factory=PPOConfig)  # stage 3: PPO against the reward model
    ppo_ptx: PPOConfig = field(  # stage 3 with pretraining gradients mixed in (notebook 7)
        default_factory=lambda: PPOConfig(ptx_coef=PTX_COEF))
    # whose reward model PPO trains against: None = this preset's own; the paper used one
    # 6B reward model for policies of every size, so a smaller preset can borrow a larger one's
    reward_preset: str | None = None
    # how the stages run (not part of any recipe)
    device: str | None = "cpu"  # "cpu", "cuda", "mps"; None: the best available (utils.pick_device)
    bf16: bool = False  # on CUDA, forward passes autocast to bfloat16; weights and AdamW stay float32
    gradient_checkpointing: bool = False  # recompute block activations in backward: less memory

    @property
    def reward_source(self) -> str:
        return self.reward_preset or self.name

    def load_tokenizer(self):
        """The toy world's word-level tokenizer, or the GPT-2 checkpoint's (pad added, left padding)."""
        if isinstance(self.pretrain, PretrainedConfig):
            from .hf import load_pretrained_tokenizer

            return load_pretrained_tokenizer(self.pretrain.checkpoint)
        from .tokenizer import load_tokenizer

        return load_tokenizer()

    @contextmanager
    def runtime(self):
        """`with preset.runtime() as device:` runs code the preset's way. Tensors and models
        created inside live on its device (torch's device context: no `.to(device)` anywhere
        in the stages), and on CUDA with `bf16` every forward pass autocasts matrix products
        to bfloat16 (softmax, losses and the weights stay float32; no loss scaling needed)."""
        device = pick_device(self.device)
        place = nullcontext() if device.type == "cpu" else torch.device(device)  # cpu: the default
        cast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if self.bf16 and device.type == "cuda" else nullcontext())
        with place, cast:
            yield device


PRESETS = {
    "toy": Preset("toy"),
    # about 12x fewer parameters than toy (68k vs 826k): the small model of notebook 8, trained
    # against toy's reward model like the paper's 1.3B policy against its 6B reward model
    "tiny": Preset("tiny", pretrain=PretrainConfig(n_layer=2, n_head=4, n_embd=48),
                   reward_preset="toy"),
    # GPT-2 (124M by default) on a GPU. Learning rates are the usual fine-tuning range for
    # 124M (SFT 3e-5, RM 1e-5, PPO 2e-6): starting points, not tuned on a GPU run.
    "gpt2": Preset(
        "gpt2", pretrain=PretrainedConfig(),
        sft=SFTConfig(batch_size=32, train=TrainConfig(  # ~10 epochs of the 324 demonstrations
            max_steps=100, lr=3e-5, warmup_steps=10, eval_interval=10, desc="sft")),
        reward=RewardConfig(max_new_tokens=32, batch_size=16, train=TrainConfig(
            max_steps=0, lr=1e-5, warmup_steps=10, eval_interval=50, desc="rm")),
        # BPE splits the world's invented words into pieces: answers take more tokens than words
        ppo=PPOConfig(max_new_tokens=32, lr=2e-6, value_lr=1e-5, beta=0.05),
        ppo_ptx=PPOConfig(max_new_tokens=32, lr=2e-6, value_lr=1e-5, beta=0.05,
                          ptx_coef=PTX_COEF),
        device=None, bf16=True),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
