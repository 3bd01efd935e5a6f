"""Sampling speed: rlhf_lite.generation.generate against transformers' GPT2LMHeadModel.generate.

Both run the same GPT-2 weights (our GPT converted with rlhf_lite.hf.to_hf) on the same
batch of random prompts, with the same thread count and the same sampling: multinomial
draws from softmax(logits / 1.0), no top-k, no top-p, no eos (so every row samples exactly
--new-tokens tokens). Reported: new tokens per second (batch * new tokens / median time)
of our KV-cache path, of transformers' (its default cache and SDPA attention), their
ratio, and of our uncached path (the whole sequence re-run every step) for reference:
that one is slow, so it is timed once, after the others have warmed the model up.

    python -m bench.sampling                  # toy (the course's model) and 6x384
    python -m bench.sampling --quick --sizes tiny --threads 1
"""
from __future__ import annotations

import argparse

import torch

from bench.common import (
    SIZES,
    add_common_args,
    print_table,
    setup,
    sizes_of,
    time_interleaved,
    twins,
)
from rlhf_lite.generation import generate

# (batch, prompt length, new tokens) per size; toy's is a PPO rollout (64 prompts, 20 tokens)
WORKLOADS = {"tiny": (64, 12, 20), "toy": (64, 12, 20), "6x384": (16, 32, 32)}


def measure(ours, theirs, batch: int, prompt_len: int, new_tokens: int, repeats: int,
            uncached: bool = True) -> dict[str, float]:
    """Tokens/s of each contender (keys "ours", "transformers", and "ours_uncached")."""
    device = next(ours.parameters()).device
    ids = torch.randint(3, ours.config.vocab_size, (batch, prompt_len), device=device)
    mask = torch.ones_like(ids)

    def hf_generate():
        out = theirs.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                              top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              pad_token_id=0)
        assert out.shape == (batch, prompt_len + new_tokens), out.shape

    def ours_generate(use_cache=True):
        generate(ours, ids, mask, max_new_tokens=new_tokens, use_cache=use_cache)

    seconds = time_interleaved({"ours": ours_generate, "transformers": hf_generate}, repeats)
    if uncached:  # slow: timed once, on the model the others have warmed up
        seconds |= time_interleaved({"ours_uncached": lambda: ours_generate(use_cache=False)}, 1,
                                    warmup=False)
    return {name: batch * new_tokens / s for name, s in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, repeats=5)
    parser.add_argument("--no-uncached", action="store_true", help="skip the uncached reference")
    args = parser.parse_args(argv)
    repeats = setup(args)
    rows = []
    for size in sizes_of(args):
        batch, prompt_len, new_tokens = WORKLOADS[size]
        if args.quick:
            new_tokens //= 2
        ours, theirs = twins(SIZES[size])
        tps = measure(ours, theirs, batch, prompt_len, new_tokens, repeats,
                      uncached=not args.no_uncached)
        rows.append([size, f"{ours.num_params() / 1e6:.2f}M",
                     f"{batch}x({prompt_len}+{new_tokens})",
                     tps["ours"], tps["transformers"], tps["ours"] / tps["transformers"],
                     tps.get("ours_uncached", "skipped")])
    print_table(f"Sampling, new tokens/s (median of {repeats})",
                ["size", "params", "batch x (prompt+new)", "ours KV cache", "transformers",
                 "ours / transformers", "ours uncached (1 run)"], rows)
    return rows


if __name__ == "__main__":
    main()
