"""Every stage of the gpt2 and gpt2-hh presets on a CPU with a GPT-2 124M stand-in: wall time
and peak memory per stage.

Nothing is downloaded: a byte-level BPE trained on the world's text and a randomly initialised
GPT-2 124M (12 layers x 768, 1024 positions, GPT-2's 50,257-row embedding) stand in for the
hub checkpoint. The stages run in registry order, each in a fresh process (its peak resident
memory is its own; loading its input checkpoints is part of its time), with the presets'
recipes cut down to a few steps: gpt2 on a cut-down copy of the world's data (`--prompts` per
prompt split, a few hundred documents of web text), gpt2-hh on a file in HH-RLHF's format
written from the world's demonstrations (preferred: the demonstration; rejected: a refusal).
The figures say what a step of each stage costs at 124M in float32 on a CPU and whether it
fits in memory, not how good the models get.

    python -m bench.gpt2_stages                      # both presets, about 15 minutes on 2 cores
    python -m bench.gpt2_stages --preset gpt2-hh     # one of them
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


def write_hh_file(path: Path) -> str:
    """HH-RLHF's format from the world: one record per demonstration, the demonstration
    preferred to a refusal, or a refusal to "i do not know" (gzip JSON lines, as the hub ships
    train.jsonl.gz)."""
    import gzip

    from rlhf_lite.data import load_records
    from rlhf_lite.world import IDK, REFUSAL

    def dialogue(prompt: str, reply: str) -> str:
        return f"\n\nHuman: {prompt}\n\nAssistant: {reply}"

    with gzip.open(path, "wt", encoding="utf-8") as f:
        for d in load_records("demonstrations"):
            f.write(json.dumps({"chosen": dialogue(d["prompt"], d["response"]),
                                "rejected": dialogue(d["prompt"], IDK if d["response"] == REFUSAL
                                                     else REFUSAL)}) + "\n")
    return str(path)


def _steps(cfg, n: int):
    return replace(cfg, train=replace(cfg.train, max_steps=n, warmup_steps=1, eval_interval=0))


PPO_CUT = dict(iterations=1, batch_size=8, minibatch_size=4, ppo_epochs=1, max_new_tokens=16)


def standin_preset(checkpoint: str):
    """The gpt2 preset on the CPU in float32, from `checkpoint`, a few steps per stage."""
    from rlhf_lite.presets import get_preset

    gpt2 = get_preset("gpt2")
    return replace(gpt2, name="gpt2-cpu", device="cpu", precision="fp32",
                   base=replace(_steps(gpt2.base, 3), init_from=checkpoint, batch_size=4),
                   sft=replace(_steps(gpt2.sft, 3), batch_size=8),
                   rm=replace(gpt2.rm, k=2, rounds=1, val_rounds=1, max_new_tokens=16,
                              batch_size=4),
                   ppo=replace(gpt2.ppo, **PPO_CUT),
                   ppo_ptx=replace(gpt2.ppo_ptx, **PPO_CUT, ptx_batch_size=2),
                   dpo=replace(gpt2.dpo, batch_size=4),
                   rloo=replace(gpt2.rloo, **PPO_CUT),
                   grpo_verifier=replace(gpt2.grpo_verifier, **PPO_CUT))


def hh_standin_preset(checkpoint: str, hh_file: str):
    """The gpt2-hh preset on the CPU in float32, from `checkpoint`, on `hh_file` (16 held-out
    prompts), a few steps per stage, each reward model on 32 pairs."""
    from rlhf_lite.presets import get_preset
    from rlhf_lite.realdata import PreferenceData, PreferenceSource

    hh = get_preset("gpt2-hh")
    rm = replace(hh.rm, batch_size=4, max_pairs=32)
    return replace(hh, name="gpt2-hh-cpu", device="cpu", precision="fp32",
                   data=PreferenceSource(PreferenceData(source=hh_file, heldout_prompts=16)),
                   base=replace(hh.base, init_from=checkpoint),
                   sft=replace(_steps(hh.sft, 3), batch_size=8), rm=rm,
                   gold_rm=replace(rm, train=hh.gold_rm.train), ppo=replace(hh.ppo, **PPO_CUT),
                   dpo=replace(hh.dpo, batch_size=4), rloo=replace(hh.rloo, **PPO_CUT))


def presets_for(checkpoint: str, hh_file: str) -> dict:
    return {"gpt2": standin_preset(checkpoint), "gpt2-hh": hh_standin_preset(checkpoint, hh_file)}


def run_stage(stage: str, preset_name: str, checkpoint: str, hh_file: str, root: str) -> dict:
    """Build one stage (in this process: the parent runs each in a fresh one)."""
    from rlhf_lite import artifacts, paths

    paths.ARTIFACTS_DIR = Path(root)  # this fresh process's artifacts folder
    preset = presets_for(checkpoint, hh_file)[preset_name]
    start = time.perf_counter()
    artifacts.build(stage, preset)
    return {"preset": preset_name, "stage": stage, "seconds": time.perf_counter() - start,
            "threads": artifacts.stage_threads(stage, preset),
            "peak RSS (GiB)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=24,
                        help="prompts kept per split of the world (gpt2 preset)")
    parser.add_argument("--preset", choices=("gpt2", "gpt2-hh"), action="append",
                        help="run this preset only (repeatable; default: both)")
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)  # the child: one stage
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
        hh_file = write_hh_file(tmp / "hh.jsonl.gz")
        print(f"124M stand-in written in {time.perf_counter() - start:.0f} s; world data: "
              f"{args.prompts} prompts per split", flush=True)
        rows = []
        for name, preset in presets_for(checkpoint, hh_file).items():
            if args.preset and name not in args.preset:
                continue
            for stage in [s for g in groups() for s in g if s in artifacts.stages_of(preset)]:
                done = subprocess.run([sys.executable, "-m", "bench.gpt2_stages", "--one", stage,
                                       name, checkpoint, hh_file, str(tmp / "artifacts")],
                                      env=env, check=True, capture_output=True, text=True)
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"{name} {stage}: {rows[-1]['seconds']:.0f} s", flush=True)
    columns = list(rows[0])
    print_table("124M stand-in, float32 on this CPU, a few steps per stage", columns,
                [[row[c] for c in columns] for row in rows])


if __name__ == "__main__":
    main()
