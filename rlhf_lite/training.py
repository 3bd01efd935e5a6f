"""A small trainer shared by pretraining, SFT and the reward model.

Every stage is "minimise a loss over batches", so one loop serves them all:

- AdamW (Adam with decoupled weight decay). Decay is applied to weight matrices and
  embeddings only: shrinking biases and LayerNorm gains towards 0 does not regularise, it
  only fights the normalisation.
- Learning rate: linear warmup (Adam's moment estimates are noisy for the first steps, so
  big updates then are risky), then cosine decay to min_lr = lr * min_lr_ratio.
- Gradient clipping: the global gradient norm is capped, so one odd batch cannot throw
  the weights far away.
- Periodic validation with `eval_fn`, under no_grad and in eval mode (no dropout).
- NaN guard: the loss and the gradient norm are checked before the optimizer step, so a
  NaN stops the run with a clear message instead of silently corrupting the weights.
- Atomic checkpoints (see utils.atomic_save) and exact resume: a checkpoint holds the
  model, the optimizer moments, the step, the history and the RNG state, and the data is a
  function of the step (`get_batch(step)`), so an interrupted run resumed from its
  checkpoint ends bit-for-bit where an uninterrupted one would (on CPU, same thread count).
- Data parallel under torchrun (rlhf_lite.distributed): each process trains on its shard of
  every batch, DDP averages the gradients, rank 0 alone writes the checkpoint.
"""

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch

from . import distributed
from .utils import check_finite, progress, seed_everything


@dataclass
class TrainConfig:
    max_steps: int = 1000  # total optimizer steps
    lr: float = 3e-3  # peak learning rate, reached at the end of warmup
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio, reached at max_steps
    warmup_steps: int = 50  # steps of linear warmup from ~0 to lr
    weight_decay: float = 0.1  # AdamW decoupled weight decay (matrices and embeddings only)
    beta1: float = 0.9  # AdamW momentum (gradient moving average)
    beta2: float = 0.95  # AdamW squared-gradient average; < 0.999 reacts faster to loss spikes
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_interval: int = 100  # steps between validation runs; 0 = only at the end
    checkpoint_interval: int = 0  # steps between checkpoints; 0 = only at the end
    seed: int = 0  # seeds torch at the start of a fresh run (dropout); resume restores the RNG
    desc: str = "train"  # label for the progress bar and error messages


@dataclass
class History:
    steps: list[int] = field(default_factory=list)  # step index of each recorded train loss
    train_loss: list[float] = field(default_factory=list)  # loss on get_batch(step)
    lr: list[float] = field(default_factory=list)  # learning rate used at that step
    grad_norm: list[float] = field(default_factory=list)  # global grad norm, before clipping
    eval_steps: list[int] = field(default_factory=list)  # steps done when eval_fn ran
    eval: dict[str, list[float]] = field(default_factory=dict)  # eval metric -> values
    seconds: float = 0.0  # wall-clock training time, summed over resumed runs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**d)

    def last(self, metric: str) -> float:
        """Latest value of an eval metric (e.g. "val_loss") or of "train_loss", "lr", "grad_norm"."""
        if metric in self.eval:
            return self.eval[metric][-1]
        if metric in ("train_loss", "lr", "grad_norm"):
            return getattr(self, metric)[-1]
        raise KeyError(f"no metric {metric!r}; have train_loss, lr, grad_norm, {', '.join(self.eval)}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine decay."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    min_lr = cfg.lr * cfg.min_lr_ratio
    progress_ = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress_)) * (cfg.lr - min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on parameters with dim >= 2 only (not biases, not LayerNorm).

    named_parameters() yields a tied parameter (e.g. embedding = output layer) once, so it
    gets one set of Adam moments. Frozen parameters (requires_grad=False) are left out.
    """
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def load_checkpoint(path, model: torch.nn.Module, optimizer=None) -> dict:
    """Load a checkpoint written by `train` into `model` (and `optimizer`); return the whole dict.

    weights_only=False because the file also holds plain Python (history, config,
    extra_state); that unpickles arbitrary objects, which is fine for files we wrote ourselves.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt


def _resumable(checkpoint_path, extra_state) -> bool:
    """Whether there is a checkpoint at `checkpoint_path` trained from the same input models
    (read memory-mapped: only its metadata, not the weights and optimizer moments)."""
    if checkpoint_path is None or not os.path.exists(checkpoint_path):
        return False
    saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False, mmap=True)
    if (saved.get("extra_state") or {}).get("inputs") != (extra_state or {}).get("inputs"):
        print(f"{checkpoint_path} was trained from other input models: training from scratch")
        return False
    return True


@torch.no_grad()
def evaluate(model: torch.nn.Module, eval_fn) -> dict[str, float]:
    """Run `eval_fn(model)` in eval mode without gradients, then put the model back in train mode."""
    model.eval()
    try:
        return {name: float(value) for name, value in eval_fn(model).items()}
    finally:
        model.train()


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    model: torch.nn.Module,
    loss_fn,
    get_batch,
    cfg: TrainConfig,
    eval_fn=None,
    checkpoint_path=None,
    resume: bool = True,
    extra_state=None,
    stop_after: int | None = None,
    loss_weight=None,
) -> History:
    """Train `model` for cfg.max_steps optimizer steps; return the History.

    loss_fn(model, batch) -> scalar loss tensor.
    get_batch(step) -> batch. Must be a deterministic function of `step` (e.g. sample with a
        torch.Generator seeded by the step), so a resumed run replays exactly the same data.
    eval_fn(model) -> {name: value}, run every cfg.eval_interval steps and at the end.
    checkpoint_path: where to save (every cfg.checkpoint_interval steps and at the end).
        With `resume`, an existing checkpoint is loaded and training continues from its
        step; a finished one just loads the weights and returns its history. A checkpoint
        trained from other input models (extra_state["inputs"] differs) is not resumed: the
        run starts afresh and overwrites it.
    extra_state: anything picklable to store alongside (e.g. the model config; "inputs":
        fingerprints of the models this one is trained from, see utils.fingerprint).
    stop_after: stop (and checkpoint) once this many steps in total are done; calling again
        resumes. Useful in tests, and to split a long run over several sessions.
    loss_weight(batch) -> how many terms loss_fn averages over (e.g. response tokens); used
        only under DDP, where it makes a step equal to one on the combined batch of all
        processes (distributed.scale_for_global_mean). None: every shard weighs the same.

    Data parallel (inside a torchrun process group, see rlhf_lite.distributed): get_batch(step)
    returns this process's shard of the step's batch (distributed.shard), loss_fn receives the
    model wrapped in DDP, eval_fn the plain model (every process evaluates the same weights on
    the same data), and only rank 0 writes the checkpoint. History.train_loss is the loss of
    the combined batch, on every process.
    """
    optimizer = make_optimizer(model, cfg)
    history, start = History(), 0
    resumed = resume and _resumable(checkpoint_path, extra_state)
    if resumed:
        ckpt = load_checkpoint(checkpoint_path, model, optimizer)
        if ckpt["config"] != asdict(cfg):
            changed = [k for k, v in asdict(cfg).items() if ckpt["config"].get(k) != v]
            warnings.warn(f"resuming {checkpoint_path} with a changed config: {changed}")
        history, start = History.from_dict(ckpt["history"]), ckpt["step"]
        _set_rng_state(ckpt["rng"])
    else:
        seed_everything(cfg.seed)
    end = cfg.max_steps if stop_after is None else min(stop_after, cfg.max_steps)
    if start >= end:
        if resumed:
            print(f"{cfg.desc}: loaded {checkpoint_path}, already trained for {start} steps "
                  f"({history.seconds:.0f} s); delete it or pass checkpoint_path=None to train "
                  "again")
        return history

    model.train()
    replica = distributed.wrap(model)  # DDP under torchrun, `model` itself otherwise
    seconds_before, t0 = history.seconds, time.perf_counter()

    def save(done: int) -> None:
        history.seconds = seconds_before + time.perf_counter() - t0
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": done,  # steps done = index of the next step to run
            "history": history.to_dict(),
            "config": asdict(cfg),
            "rng": _rng_state(),
            "extra_state": extra_state,
        }
        distributed.save_on_main(state, checkpoint_path)

    # with grad_clip=0, clipping to inf still returns the norm (for the NaN check and history)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    bar = progress(range(start, end), total=end - start, desc=cfg.desc)
    for step in bar:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = get_batch(step)
        loss = loss_fn(replica, batch)
        loss, combined_loss = distributed.scale_for_global_mean(
            loss, loss_weight(batch) if loss_weight else 1)
        # the combined loss is the same on every process, so a NaN stops them all together
        loss_value = check_finite(combined_loss, f"{cfg.desc}: loss", step, lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        norm_value = check_finite(norm, f"{cfg.desc}: gradient norm", step, lr)
        optimizer.step()

        history.steps.append(step)
        history.train_loss.append(loss_value)
        history.lr.append(lr)
        history.grad_norm.append(norm_value)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        done = step + 1
        if eval_fn is not None and (done == cfg.max_steps or (cfg.eval_interval and done % cfg.eval_interval == 0)):
            history.eval_steps.append(done)
            for name, value in evaluate(model, eval_fn).items():
                history.eval.setdefault(name, []).append(value)
        if checkpoint_path is not None and (
            done == end or (cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0)
        ):
            save(done)
    history.seconds = seconds_before + time.perf_counter() - t0
    return history
