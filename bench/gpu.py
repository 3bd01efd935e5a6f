"""GPU figures for a GPT-2 124M-shaped model (random weights, nothing downloaded).

- SFT step (forward and loss in bf16 autocast, backward, AdamW; float32 weights, as the gpt2
  preset trains): steps/s of ours and of transformers' GPT2LMHeadModel, and the model FLOPs
  utilisation MFU = bench.common.train_flops / step time / --peak-tflops.
- PPO: iterations of rlhf_lite.ppo.PPOTrainer with the gpt2 preset's PPOConfig and bf16
  autocast: responses/s and sampled tokens/s over whole iterations. Prompts are the world's,
  encoded by the toy tokenizer (GPT-2's own would need a download); a random policy seldom
  samples eos, so every response runs the full max_new_tokens.
- Sampling: our KV-cache generate against transformers' generate, as bench.sampling
  (same weights, multinomial sampling, no eos), in bf16 autocast.

    python -m bench.gpu                        # on a machine with CUDA
    python -m bench.gpu --peak-tflops 989      # H100/H200 SXM bf16 dense peak (the default)
"""
from __future__ import annotations

import argparse
import time

import torch
from transformers import GPT2Config

from bench.common import print_table, sync, time_interleaved, train_flops, twins
from bench.sampling import measure
from bench.train_step import make_step
from rlhf_lite.data import load_records
from rlhf_lite.hf import config_from_hf
from rlhf_lite.model import GPT
from rlhf_lite.ppo import PPOTrainer
from rlhf_lite.presets import PRESETS
from rlhf_lite.reward import RewardModel
from rlhf_lite.tokenizer import load_tokenizer

# 12 layers x 768, vocab 50257, 1024 positions
GPT2_124M = config_from_hf(GPT2Config(), dropout=0.0)


def bf16(fn):
    def run():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return fn()
    return run


def sft_rows(batch_size: int, seq_len: int, repeats: int, peak: float) -> list[list]:
    ours, theirs = (m.cuda() for m in twins(GPT2_124M))
    seconds = time_interleaved({"ours": bf16(make_step(ours, batch_size, seq_len)),
                                "transformers": bf16(make_step(theirs, batch_size, seq_len))},
                               repeats)
    flops = train_flops(GPT2_124M, ours.num_params(), batch_size * seq_len, seq_len)
    return [[name, f"{batch_size}x{seq_len}", 1 / s, f"{100 * flops / s / peak:.1f}%"]
            for name, s in seconds.items()]


def ppo_row(iterations: int) -> list:
    cfg = PRESETS["gpt2"].ppo
    with torch.device("cuda"), torch.autocast("cuda", dtype=torch.bfloat16):
        torch.manual_seed(0)
        trainer = PPOTrainer(cfg, GPT(GPT2_124M), RewardModel(GPT(GPT2_124M)), load_tokenizer(),
                             load_records("prompts_train"))
        trainer.step()  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(iterations):
            trainer.step()
        sync()
        seconds = (time.perf_counter() - start) / iterations
    return [f"{cfg.batch_size} prompts, {cfg.max_new_tokens} new tokens, {cfg.ppo_epochs} epochs",
            seconds, cfg.batch_size / seconds, cfg.batch_size * cfg.max_new_tokens / seconds]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per contender")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the GPU's dense bf16 peak (H100/H200 SXM: 989)")
    parser.add_argument("--batch", type=int, default=16, help="SFT step: sequences per batch")
    parser.add_argument("--seq-len", type=int, default=1024, help="SFT step: tokens per sequence")
    parser.add_argument("--ppo-iterations", type=int, default=3)
    parser.add_argument("--sample", type=int, nargs=3, default=(64, 64, 128),
                        metavar=("BATCH", "PROMPT", "NEW"), help="sampling workload")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench.gpu needs a CUDA GPU, and torch.cuda.is_available() is False "
                         "here; the CPU benchmarks are `python -m bench`.")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"peak {args.peak_tflops:g} TFLOP/s bf16")
    print_table(f"SFT step, bf16 autocast (median of {args.repeats})",
                ["model", "batch x seq", "steps/s", "MFU"],
                sft_rows(args.batch, args.seq_len, args.repeats, args.peak_tflops * 1e12))
    print_table(f"PPO iteration, gpt2 preset recipe (mean of {args.ppo_iterations})",
                ["workload", "seconds", "responses/s", "sampled tokens/s"],
                [ppo_row(args.ppo_iterations)])
    ours, theirs = (m.cuda() for m in twins(GPT2_124M))
    batch, prompt_len, new_tokens = args.sample
    tps = bf16(lambda: measure(ours, theirs, batch, prompt_len, new_tokens, args.repeats,
                               uncached=False))()
    print_table(f"Sampling, bf16 autocast, new tokens/s (median of {args.repeats})",
                ["batch x (prompt+new)", "ours KV cache", "transformers", "ours / transformers"],
                [[f"{batch}x({prompt_len}+{new_tokens})", tps["ours"], tps["transformers"],
                  tps["ours"] / tps["transformers"]]])


if __name__ == "__main__":
    main()
