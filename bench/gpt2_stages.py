"""Every stage of the gpt2 preset on a CPU with a GPT-2 124M stand-in: wall time, peak memory.

Nothing is downloaded: a byte-level BPE trained on the world's text and a randomly initialised
GPT-2 124M (12 layers x 768, 1024 positions, GPT-2's 50,257-row embedding) stand in for the
hub checkpoint. The stages run in registry order, each in a fresh process (its peak resident
memory is its own; loading its input checkpoints is part of its time), with the gpt2 preset's
recipes cut down to a few steps on a cut-down copy of the world's data (`--prompts` per prompt
split, a few hundred documents of web text). The figures say what a step of each stage costs
at 124M in float32 on a CPU and whether it fits in memory, not how good the models get.

    python -m bench.gpt2_stages                 # about 10 minutes on 2 cores
    python -m bench.gpt2_stages --prompts 8     # quicker
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common import print_table

GPT2_VOCAB = 50257  # GPT-2's embedding rows; the stand-in BPE uses the first few thousand


def cut_data(out: Path, prompts: int) -> Path:
    """A copy of data/ with the first `prompts` train and validation prompts (and their
    demonstrations), 300 training and 50 validation documents of web text."""
    from rlhf_lite import data, paths

    out.mkdir(parents=True, exist_ok=True)
    kept = {}
    for split in ("train", "validation", "heldout"):
        kept[split] = data.load_records(f"prompts_{split}")[:prompts]
        data.write_jsonl(out / f"prompts_{split}.jsonl", kept[split])
    ids = {p["id"] for split in ("train", "validation") for p in kept[split]}
    data.write_jsonl(out / "demonstrations.jsonl",
                     [d for d in data.load_records("demonstrations") if d["prompt_id"] in ids])
    for name, n in (("pretrain_train", 300), ("pretrain_val", 50)):
        data.write_jsonl(out / f"{name}.jsonl", data.load_records(name)[:n])
    (out / "tokenizer").symlink_to(paths.DATA_DIR / "tokenizer")
    return out


def make_checkpoint(folder: Path) -> Path:
    """The 124M stand-in: save_random_gpt2's tokenizer, then a GPT-2 of GPT-2's own sizes."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_lite.chat import format_prompt
    from rlhf_lite.data import load_records
    from rlhf_lite.hf import save_random_gpt2

    texts = ([format_prompt(d["prompt"]) + " " + d["response"]
              for d in load_records("demonstrations")]
             + [r["text"] for r in load_records("pretrain_train")])
    save_random_gpt2(folder, texts, vocab_size=4096, n_layer=1, n_head=1, n_embd=8)
    eos = json.loads((folder / "config.json").read_text())["eos_token_id"]
    GPT2LMHeadModel(GPT2Config(vocab_size=GPT2_VOCAB, bos_token_id=eos, eos_token_id=eos)
                    ).save_pretrained(folder)  # 124M, over the small model's files
    return folder


def standin_preset(checkpoint: str):
    """The gpt2 preset on the CPU in float32, from `checkpoint`, a few steps per stage."""
    from rlhf_lite.presets import get_preset

    gpt2 = get_preset("gpt2")

    def steps(cfg, n):
        return replace(cfg, train=replace(cfg.train, max_steps=n, warmup_steps=1,
                                          eval_interval=0))

    ppo = dict(iterations=1, batch_size=8, minibatch_size=4, ppo_epochs=1, max_new_tokens=16)
    return replace(gpt2, name="gpt2-cpu", device="cpu", precision="fp32",
                   base=replace(steps(gpt2.base, 3), init_from=checkpoint, batch_size=4),
                   sft=replace(steps(gpt2.sft, 3), batch_size=8),
                   rm=replace(gpt2.rm, k=2, rounds=1, val_rounds=1, max_new_tokens=16,
                              batch_size=4),
                   ppo=replace(gpt2.ppo, **ppo),
                   ppo_ptx=replace(gpt2.ppo_ptx, **ppo, ptx_batch_size=2),
                   dpo=replace(gpt2.dpo, batch_size=4),
                   rloo=replace(gpt2.rloo, **{**ppo, "batch_size": 8}))


def run_stage(stage: str, checkpoint: str, root: str) -> dict:
    """Build one stage (in this process: the parent runs each in a fresh one)."""
    from rlhf_lite import artifacts

    preset = standin_preset(checkpoint)
    start = time.perf_counter()
    artifacts.build(stage, preset, root=Path(root))
    return {"stage": stage, "seconds": time.perf_counter() - start,
            "threads": artifacts.stage_threads(stage, preset),
            "peak RSS (GiB)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=24, help="prompts kept per split")
    parser.add_argument("--one", nargs=3, metavar=("STAGE", "CHECKPOINT", "ROOT"),
                        help=argparse.SUPPRESS)  # the child process: build one stage
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_stage(*args.one)))
        return
    from rlhf_lite import artifacts
    from rlhf_lite.stages import groups

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "RLHF_DATA_DIR": str(cut_data(tmp / "data", args.prompts)),
               "TQDM_DISABLE": "1", "RLHF_QUIET": "1", "HF_HUB_OFFLINE": "1"}
        start = time.perf_counter()
        checkpoint = str(make_checkpoint(tmp / "gpt2-124m"))
        print(f"124M stand-in written in {time.perf_counter() - start:.0f} s; data: "
              f"{args.prompts} prompts per split", flush=True)
        preset, rows = standin_preset(checkpoint), []
        for stage in [s for group in groups() for s in group if s in artifacts.stages_of(preset)]:
            done = subprocess.run([sys.executable, "-m", "bench.gpt2_stages", "--one", stage,
                                   checkpoint, str(tmp / "artifacts")], env=env, check=True,
                                  capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{stage}: {rows[-1]['seconds']:.0f} s", flush=True)
    columns = list(rows[0])
    print_table("gpt2 preset, 124M stand-in, float32 on this CPU (a few steps per stage)",
                columns, [[row[c] for c in columns] for row in rows])


if __name__ == "__main__":
    main()
