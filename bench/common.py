"""What the benchmarks share: model sizes, twin models, interleaved timing, markdown tables.

Timing. The course machine is small and shared (2 CPU cores, other jobs running), so every
comparison runs its contenders in turn within each repeat (A, B, A, B, ...), after one
untimed warm-up call each, and reports the median: a burst of load then hits both sides
alike instead of one whole series.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch

from rlhf_lite.hf import to_hf
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.presets import PRESETS
from rlhf_lite.tokenizer import load_tokenizer
from rlhf_lite.utils import set_threads

# The toy world's vocabulary (data/tokenizer); every size uses it, so the sizes differ only in
# the transformer itself.
TOY_VOCAB = len(load_tokenizer())
SIZES = {
    "tiny": PRESETS["tiny"].base.model_config(TOY_VOCAB),  # 2 layers x 48, notebook 8
    "toy": PRESETS["toy"].base.model_config(TOY_VOCAB),  # 4 layers x 128, the CPU course
    "6x384": GPTConfig(vocab_size=TOY_VOCAB, block_size=256, n_layer=6, n_head=6, n_embd=384),
}


def add_common_args(parser, repeats: int, sizes: str | None = "toy,6x384"):
    """--quick, --repeats, --threads (and --sizes unless sizes is None) on an argparse parser."""
    parser.add_argument("--quick", action="store_true", help="smaller workloads, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed repeats per contender (default {repeats}, --quick 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for every contender (default: all cores)")
    if sizes is not None:
        parser.add_argument("--sizes", default=sizes,
                            help=f"comma-separated model sizes from {sorted(SIZES)}")
    parser.set_defaults(default_repeats=repeats)


def setup(args) -> int:
    """Apply --threads, resolve --repeats; print the machine line; return the repeats."""
    threads = set_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} cores, "
          f"load average {load:.1f} when started")
    if args.repeats is not None:
        return args.repeats
    return 2 if args.quick else args.default_repeats


def sizes_of(args) -> list[str]:
    names = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in names if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size(s) {unknown}; choose from {sorted(SIZES)}")
    return names


def twins(config: GPTConfig, seed: int = 0):
    """(our GPT, transformers GPT2LMHeadModel) with identical random weights, in eval mode."""
    torch.manual_seed(seed)
    ours = GPT(config)
    return ours.eval(), to_hf(ours).eval()


def sync():
    """Wait for queued GPU work, so a timer measures it (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_interleaved(contenders: dict[str, Callable[[], object]], repeats: int,
                     warmup: bool = True) -> dict[str, float]:
    """Median seconds per call of each contender, called in turn `repeats` times (after an
    untimed warm-up call each, unless warmup=False)."""
    for fn in contenders.values() if warmup else ():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def train_flops(config: GPTConfig, n_params: int, tokens: int, seq_len: int) -> float:
    """FLOPs of one training step (forward + backward) on `tokens` tokens in sequences of
    `seq_len`: 6 * N * tokens + 12 * n_layer * seq_len * n_embd * tokens.

    6N: each parameter of a matrix product costs a multiply-add (2 FLOPs) per token forward
    and twice that backward; N counts the matrices (lm_head included, position table not).
    The second term is attention's Q K^T and A V, 2 * 2 * seq_len * n_embd per token and
    layer forward, times 3 with backward (PaLM's formula, which does not halve for the
    causal mask).
    """
    return 6 * n_params * tokens + 12 * config.n_layer * seq_len * config.n_embd * tokens


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_table(title: str, columns: list[str], rows: list[list]):
    """A markdown table, numbers to 3 significant figures."""
    print(f"\n{title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(fmt(v) for v in row) + " |")
