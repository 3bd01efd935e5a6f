"""Achieved FLOP/s of our training step against this machine's float32 matmul peak.

The peak is measured in the same run: the median of --repeats products of two random
float32 N x N matrices (--matmul-size, default 2048), 2 N^3 FLOPs each. A training step
(forward, backward, AdamW, as in bench.train_step) is counted as
    FLOPs = 6 * N_params * tokens + 12 * n_layer * seq_len * n_embd * tokens
(bench.common.train_flops: matrix products only, attention's QK^T and AV not halved for
the causal mask; AdamW, LayerNorm, GELU and softmax are left out), so "% of peak" is the
share of the machine's matmul speed that the step turns into useful matrix products.

    python -m bench.roofline
    python -m bench.roofline --quick --sizes tiny --threads 1
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
    train_flops,
    twins,
)
from bench.train_step import make_step, workload


def matmul_peak(n: int, repeats: int) -> float:
    """FLOP/s of a float32 n x n x n matrix product (median of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / time_interleaved({"matmul": lambda: a @ b}, repeats)["matmul"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, repeats=5)
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="N of the peak's N x N x N product (default 2048, --quick 1024)")
    args = parser.parse_args(argv)
    repeats = setup(args)
    n = args.matmul_size or (1024 if args.quick else 2048)
    peak = matmul_peak(n, repeats)
    rows = [[f"matmul {n}^3", "", 2 * n ** 3 / 1e9, 2 * n ** 3 / peak, peak / 1e9, "100%"]]
    for size in sizes_of(args):
        batch_size, seq_len = workload(size, args.quick)
        ours, _ = twins(SIZES[size])
        seconds = time_interleaved({"ours": make_step(ours, batch_size, seq_len)}, repeats)["ours"]
        flops = train_flops(ours.config, ours.num_params(), batch_size * seq_len, seq_len)
        rows.append([f"train step {size}", f"{batch_size}x{seq_len}", flops / 1e9, seconds,
                     flops / seconds / 1e9, f"{100 * flops / seconds / peak:.1f}%"])
    print_table(f"Roofline: float32 FLOP/s (median of {repeats})",
                ["workload", "batch x seq", "GFLOP", "seconds", "GFLOP/s", "% of matmul peak"],
                rows)
    return rows


if __name__ == "__main__":
    main()
