"""Run the CPU benchmarks in turn: sampling, training step, PPO iteration, roofline.

    python -m bench                   # full (a few minutes on 2 cores)
    python -m bench --quick           # smaller workloads, 2 repeats
    python -m bench --threads 2 --repeats 7

bench.course_runtime (minutes: the whole course), bench.gpu (needs CUDA) and bench.paired_power
(needs the trained toy models) run on their own.
"""
import argparse

from bench import ppo_iteration, roofline, sampling, train_step
from bench.common import add_common_args

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
add_common_args(parser, repeats=5, sizes=None)
args = parser.parse_args()
forward = (["--quick"] if args.quick else []) + \
    (["--repeats", str(args.repeats)] if args.repeats is not None else []) + \
    (["--threads", str(args.threads)] if args.threads is not None else [])
for bench in (sampling, train_step, ppo_iteration, roofline):
    print(f"\n## {bench.__name__}")
    bench.main(forward)
