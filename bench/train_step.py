"""Training speed: one step of our GPT against transformers' GPT2LMHeadModel.

A step is forward, next-token cross-entropy over every position, backward and an AdamW
update (torch's, default settings), on a batch of random token windows. Both models have
the same GPT-2 config and initial weights (rlhf_lite.hf.to_hf), dropout 0, the same thread
count; transformers runs its default (SDPA) attention, and the loss is computed outside
both models, the same way. Reported: steps/s (1 / median step time), the ratio, and our
training tokens/s.

    python -m bench.train_step                 # toy (the course's model) and 6x384
    python -m bench.train_step --quick --sizes tiny --threads 1
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench.common import (
    SIZES,
    add_common_args,
    print_table,
    setup,
    sizes_of,
    time_interleaved,
    twins,
)

# (batch, sequence length) per size; toy's is its pretraining batch (32 windows of 64 tokens)
WORKLOADS = {"tiny": (32, 64), "toy": (32, 64), "6x384": (8, 128)}


def workload(size: str, quick: bool) -> tuple[int, int]:
    batch, seq_len = WORKLOADS[size]
    return (max(1, batch // 4), seq_len) if quick else (batch, seq_len)


def make_step(model, batch_size: int, seq_len: int, seed: int = 0):
    """A function running one training step of `model` (ours or transformers') on a fixed batch."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(model.config.vocab_size, (batch_size, seq_len + 1), generator=g)
    device = next(model.parameters()).device
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        logits = model(x)
        logits = getattr(logits, "logits", logits)  # transformers returns an output object
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, repeats=5)
    args = parser.parse_args(argv)
    repeats = setup(args)
    rows = []
    for size in sizes_of(args):
        batch_size, seq_len = workload(size, args.quick)
        ours, theirs = twins(SIZES[size])
        seconds = time_interleaved({"ours": make_step(ours, batch_size, seq_len),
                                    "transformers": make_step(theirs, batch_size, seq_len)},
                                   repeats)
        rows.append([size, f"{ours.num_params() / 1e6:.2f}M", f"{batch_size}x{seq_len}",
                     1 / seconds["ours"], 1 / seconds["transformers"],
                     seconds["transformers"] / seconds["ours"],
                     batch_size * seq_len / seconds["ours"]])
    print_table(f"Training step (forward, backward, AdamW), steps/s (median of {repeats})",
                ["size", "params", "batch x seq", "ours", "transformers", "ours / transformers",
                 "ours tokens/s"], rows)
    return rows


if __name__ == "__main__":
    main()
