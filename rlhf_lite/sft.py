"""Stage 1: supervised fine-tuning (SFT) on labeler demonstrations.

InstructGPT fine-tunes GPT-3 on ~13k prompts with a response written by a labeler
(Ouyang et al. 2022, sec 3.5 "Supervised fine-tuning"). The objective is the pretraining one,
next-token cross-entropy, with one change: only the response is learned. The prompt is
context the model reads, not text it should learn to write, so its positions are masked out:

    loss = - mean over response tokens t (and the final eos) of log p(x_t | x_<t)

Layout of a training row (RIGHT-padded; pad is a distinct token, see rlhf_lite.tokenizer):

    input_ids       user : what is two plus two ? bot :   four  .  <eos> <pad> <pad>
    attention_mask  1    1 1    1  1   1    1   1   1     1     1  1     0     0
    labels          -100 ... (prompt)                -100 four  .  <eos> -100  -100

The eos is learned too: a model that never emits it rambles until max_new_tokens. Right
padding keeps every row at positions 0, 1, 2, ... and, with causal attention, no real token
ever sees a pad. (Generation left-pads prompts instead; both layouts are masked the same way.)
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .batching import IGNORE_INDEX, encode_responses, epoch_batch
from .checkpoints import Checkpoint, fingerprint
from .data import locate
from .datasource import DataSource, stage_recipe
from .model import GPT
from .runs import model_checkpoint, saved_with
from .tokenizer import check_vocabulary
from .training import History, TrainConfig, train
from .utils import check_config, integer, nested, rule


@dataclass
class SFTConfig:
    # demonstrations per step (rows are padded to the longest demonstration)
    batch_size: int = rule(32, integer(1))
    # 150 steps = ~15 epochs of the 324 train demonstrations (the paper: 16). The validation
    # loss bottoms out near epoch 6 and then rises, yet the gold score of samples does not
    # drop: the paper saw the same overfitting and picked epochs by reward, not validation loss.
    # No dropout (the base model's config): 0.1 did not improve the best validation loss.
    train: TrainConfig = nested(lambda: TrainConfig(
        max_steps=150, lr=1e-3, warmup_steps=10, eval_interval=10, desc="sft"))

    def __post_init__(self):
        check_config(self)

    def as_dict(self) -> dict:
        return asdict(self)


def tokenize_demonstrations(records: list[dict], tokenizer,
                            block_size: int) -> dict[str, torch.Tensor]:
    """Demonstration records ({"id", "prompt", "response", ...}) -> right-padded training tensors.

    Returns `batching.encode_responses`'s input_ids, attention_mask and labels (N, T), every
    demonstration terminated (its eos is learned): the input id on response tokens and eos,
    IGNORE_INDEX on prompt and pad positions. A sequence longer than `block_size` raises
    (truncating it would silently drop the end of the answer and its eos), and so does a word
    the word-level tokenizer does not know (it would become <unk>); both errors name the file
    and line of a record read by `rlhf_lite.data`.
    """
    sources = [demonstration_source(r) for r in records]
    check_vocabulary(tokenizer, [r[f] for r in records for f in ("prompt", "response")],
                     [f"{s}, field '{f}'" for s in sources for f in ("prompt", "response")])
    batch = encode_responses(tokenizer, [r["prompt"] for r in records],
                             [r["response"] for r in records], [True] * len(records))
    lengths = batch["attention_mask"].sum(1).tolist()  # (N,) prompt + response + eos
    scored = (batch["labels"] != IGNORE_INDEX).sum(1).tolist()  # (N,) response + eos
    for source, length, answer in zip(sources, lengths, scored):
        if length > block_size:
            raise ValueError(f"{source} is {length} tokens long (prompt {length - answer} + "
                             f"response {answer - 1} + eos), more than the model's "
                             f"block_size {block_size}")
    return batch


def demonstration_source(record: dict) -> str:
    """"demonstration 'demo-0007'", preceded by its file and line when it was read from one
    (records carry no file field: `datasets` tables would grow a column)."""
    name = f"demonstration {record.get('id', '?')!r}"
    where = locate(record)
    return f"{where}: {name}" if where else name


def sft_loss(model: GPT, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the tokens whose label is not IGNORE_INDEX.

    The logits at position t predict token t + 1, hence the shift by one.
    """
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"])  # (B, T, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX)


def response_token_count(batch: dict[str, torch.Tensor]) -> int:
    """How many tokens `sft_loss` averages over: the labels that are not IGNORE_INDEX."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def loaded_run(ckpt: Checkpoint, cfg: SFTConfig, base_model: GPT, *args, **kwargs
               ) -> tuple[GPT, History]:
    """The (model, history) of a saved `train_sft` run (`runs.model_checkpoint`): a copy of
    `base_model` given the trained weights."""
    model = copy.deepcopy(base_model)
    model.load_state_dict(ckpt.model)
    return model.eval(), History.from_dict(ckpt.history)


@saved_with(model_checkpoint, loaded_run)
def train_sft(cfg: SFTConfig, base_model: GPT, tokenizer, train_records: list[dict],
              val_records: list[dict], checkpoint_path=None, recipe: dict | None = None
              ) -> tuple[GPT, History]:
    """Fine-tune a copy of `base_model` on demonstrations; return it and its history.

    History eval metric: "val_loss", the SFT loss on the validation demonstrations.
    `recipe`: what the checkpoint records as its recipe (default: `cfg`;
    `datasource.stage_recipe`). Saveable as a run (`runs.train_side_by_side(saved_as=...)`:
    SFT variants side by side).
    """
    model = copy.deepcopy(base_model)  # the caller's base model stays as it was
    block_size = model.config.block_size
    data = tokenize_demonstrations(train_records, tokenizer, block_size)
    val = tokenize_demonstrations(val_records, tokenizer, block_size)
    n = len(train_records)

    def get_batch(step: int) -> dict[str, torch.Tensor]:
        idx = epoch_batch(n, cfg.batch_size, step, cfg.train.seed)
        return {name: t[idx] for name, t in data.items()}

    def loss_fn(m: GPT, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return sft_loss(m, batch), response_token_count(batch)

    def eval_fn(m: GPT) -> dict[str, float]:
        return {"val_loss": sft_loss(m, val).item()}

    history = train(model, loss_fn, get_batch, cfg.train, eval_fn=eval_fn,
                    checkpoint_path=checkpoint_path,
                    meta={"model_config": asdict(model.config), "recipe": recipe or cfg.as_dict(),
                          "inputs": {"base": fingerprint(base_model)}})
    model.eval()
    return model, history


def build(cfg: SFTConfig, data: DataSource, tokenizer, inputs: dict, path) -> None:
    """The "sft" stage (rlhf_lite.stages): fine-tune the base model on the demonstrations of
    the train prompts, validated on those of the validation prompts, into `path`."""
    train, val = (data.demonstrations(split, tokenizer) for split in ("train", "validation"))
    train_sft(cfg, inputs["base"], tokenizer, train, val, checkpoint_path=path,
              recipe=stage_recipe(cfg, data))
