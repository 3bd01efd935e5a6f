"""A small trainer shared by pretraining, SFT and the reward model.

Every stage is "minimise a loss over batches", so one loop serves them all:

- AdamW (Adam with decoupled weight decay). Decay is applied to weight matrices and
  embeddings only: shrinking biases and LayerNorm gains towards 0 does not regularise, it
  only fights the normalisation.
- Learning rate: linear warmup (Adam's moment estimates are noisy for the first steps, so
  big updates then are risky), then cosine decay to min_lr = lr * min_lr_ratio.
- Gradient clipping: the global gradient norm is capped, so one odd batch cannot throw
  the weights far away (`backward_and_step`, the one optimizer step, also PPO's).
- Periodic validation with `eval_fn`, under no_grad and in eval mode (no dropout).
- NaN guard: the loss and the gradient norm are checked before the optimizer step, so a
  NaN stops the run with a clear message instead of silently corrupting the weights.
- Atomic checkpoints (rlhf_lite.checkpoints) and exact resume: a checkpoint holds the
  model, the optimizer moments, the step, the history and the RNG state, and the data is a
  function of the step (`get_batch(step)`), so an interrupted run resumed from its
  checkpoint ends bit-for-bit where an uninterrupted one would (on CPU, same thread count).
  `resumable` and `run_steps` are the periodic checkpoint/resume that PPO uses too.
- Data parallel under torchrun (rlhf_lite.distributed), all of it here: each process trains
  on its shard of every batch, its loss weighted by its share of the batch's loss terms, DDP
  averages the gradients, rank 0 alone writes the checkpoint. A stage's code is the same
  whether one process runs it or several.
"""

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch

from . import checkpoints, distributed, precision
from .checkpoints import Checkpoint
from .paths import shown
from .utils import (
    check_config,
    check_finite,
    eval_mode,
    integer,
    number,
    optional,
    progress,
    rule,
    seed_everything,
    text,
)


@dataclass
class TrainConfig:
    # total optimizer steps; 0: none, the model as given is the finished run (gpt2-hh's base
    # stage: the GPT-2 checkpoint itself); None: `epochs` passes over the data, counted by the
    # stage (the reward model and DPO, see `set_by_epochs`)
    max_steps: int | None = rule(1000, optional(integer(0)))
    # peak learning rate, reached at the end of warmup
    lr: float = rule(3e-3, number(0, low_open=True))
    # final lr = lr * min_lr_ratio, reached at max_steps
    min_lr_ratio: float = rule(0.1, number(0, 1))
    warmup_steps: int = rule(50, integer(0))  # steps of linear warmup from ~0 to lr
    # AdamW decoupled weight decay (matrices and embeddings only)
    weight_decay: float = rule(0.1, number(0))
    # AdamW momentum (gradient moving average)
    beta1: float = rule(0.9, number(0, 1, high_open=True))
    # AdamW squared-gradient average; < 0.999 reacts faster to loss spikes
    beta2: float = rule(0.95, number(0, 1, high_open=True))
    grad_clip: float = rule(1.0, number(0))  # max global gradient norm; 0 disables clipping
    # steps between validation runs; 0 = only at the end
    eval_interval: int = rule(100, integer(0), run_control=True)
    # steps between checkpoints (resume after a kill); 0 = at the end
    checkpoint_interval: int = rule(100, integer(0), run_control=True)
    # seeds torch at the start of a fresh run (dropout); resume restores the RNG
    seed: int = rule(0, integer(0))
    # label for the progress bar and error messages
    desc: str = rule("train", text(), run_control=True)

    def __post_init__(self):
        check_config(self)


def set_by_epochs() -> tuple:
    """Rule (utils.check_config) for the TrainConfig of a stage that trains for `epochs`
    passes over its data: max_steps None, the stage counts the steps."""
    return ("a TrainConfig with max_steps=None (the stage's `epochs` sets the steps)",
            lambda train: train.max_steps is None)


@dataclass
class History:
    """The training log of every stage (a checkpoint's `history`, as a dict): per-step values
    as lists, one entry per step in `steps`, and the training time."""

    steps: list[int] = field(default_factory=list)  # index of each recorded step (PPO: iteration)
    train_loss: list[float] = field(default_factory=list)  # loss on get_batch(step)
    lr: list[float] = field(default_factory=list)  # learning rate used at that step
    grad_norm: list[float] = field(default_factory=list)  # global grad norm, before clipping
    eval_steps: list[int] = field(default_factory=list)  # steps done when eval_fn ran
    eval: dict[str, list[float]] = field(default_factory=dict)  # eval metric -> values
    # any other per-step metric -> values, one per step (PPO's, one per iteration)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0  # wall-clock training time, summed over resumed runs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**d)

    def record(self, step: int, metrics: dict[str, float]) -> None:
        """Log step `step`'s `metrics` (each to its list in `metrics`)."""
        self.steps.append(step)
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append(value)

    def last(self, metric: str) -> float:
        """Latest value of an eval metric (e.g. "val_loss"), of a per-step metric, or of
        "train_loss", "lr", "grad_norm"."""
        for logged in (self.eval, self.metrics):
            if metric in logged:
                return logged[metric][-1]
        if metric in ("train_loss", "lr", "grad_norm"):
            return getattr(self, metric)[-1]
        raise KeyError(f"no metric {metric!r}; have train_loss, lr, grad_norm, "
                       f"{', '.join([*self.eval, *self.metrics])}")


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


def load_checkpoint(path, model: torch.nn.Module, optimizer=None) -> Checkpoint:
    """Load a checkpoint written by `train` into `model` (and `optimizer`); return it. Its
    weights are checked against their fingerprint first (`checkpoints.read`)."""
    ckpt = checkpoints.read(path, verify=True)
    model.load_state_dict(ckpt.model)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt.resume["optimizer"])
    return ckpt


def resumable(checkpoint_path, inputs: dict) -> Checkpoint | None:
    """The checkpoint at `checkpoint_path` to continue (every trainer resumes through here), if
    its weights match their fingerprint and it was trained from the same inputs (`inputs`: the
    fingerprints of its input models and files); None when there is none, or when it was
    trained from other inputs (then the run starts afresh, and says so). A damaged file (it
    cannot be read, or its weights were changed after they were written) is never trained on:
    it is set aside as <name>.damaged.pt (`checkpoints.set_aside`) and the run starts afresh,
    saying so in one line that names both files."""
    if checkpoint_path is None or not os.path.exists(checkpoint_path):
        return None
    try:
        ckpt = checkpoints.read(checkpoint_path, verify=True)
    except checkpoints.DamagedCheckpoint as e:
        aside = checkpoints.set_aside(checkpoint_path)
        print(f"{shown(checkpoint_path)} {e.problem}: set aside as {shown(aside)}; training "
              "from scratch")
        return None
    if ckpt.inputs != inputs:
        print(f"{shown(checkpoint_path)} was trained from other input models or data: training "
              "from scratch")
        return None
    return ckpt


def run_steps(steps: range, step_fn, history: History, save=None, interval: int = 0,
              desc: str = "train") -> None:
    """The loop of every trainer (`train`, `PPOTrainer.train`): step_fn(step) for each of
    `steps`, its time added to history.seconds (which so sums the training time over resumed
    runs); then, with `save`, save(steps done) every `interval` steps (0: never) and after the
    last, so a killed run loses at most `interval` steps. step_fn may return a dict to show on
    the progress bar."""
    bar = progress(steps, total=len(steps), desc=desc)
    for step in bar:
        start = time.perf_counter()
        postfix = step_fn(step)
        history.seconds += time.perf_counter() - start
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        done = step + 1
        if save is not None and (done == steps.stop or (interval and done % interval == 0)):
            save(done)


def _start(model, optimizer, cfg: TrainConfig, ckpt: Checkpoint | None, checkpoint_path
           ) -> tuple[History, int]:
    """(history, first step): the checkpoint's state when resuming (model, optimizer and RNG
    restored), else a fresh run seeded with cfg.seed."""
    if ckpt is None:
        seed_everything(cfg.seed)
        return History(), 0
    model.load_state_dict(ckpt.model)
    optimizer.load_state_dict(ckpt.resume["optimizer"])
    saved, now = (checkpoints.result_fields(c, cfg) for c in (ckpt.resume["config"], asdict(cfg)))
    if saved != now:
        changed = [k for k, v in now.items() if saved.get(k) != v]
        warnings.warn(f"resuming {shown(checkpoint_path)} with a changed config: {changed}")
    _set_rng_state(ckpt.resume["rng"])
    return History.from_dict(ckpt.history), ckpt.step


def backward_and_step(modules: list[torch.nn.Module], optimizer, scaler, loss,
                      max_norm: float, what: str, step: int, lr: float | None = None
                      ) -> list[float]:
    """The optimizer step of every trainer: backward (through `scaler`, precision.grad_scaler),
    the gradient of each module in `modules` clipped to norm `max_norm` on its own (PPO clips
    the policy and the value model apart), each norm checked finite before the weights move
    (a NaN stops the run with a message naming `what` and `step`), then the optimizer step.
    Returns the modules' gradient norms before clipping."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    norms = [torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm) for m in modules]
    # under fp16 an overflowed gradient is routine: the scaler skips the step, lowers the scale
    values = [norm.item() if scaler.is_enabled() else check_finite(norm, what, step, lr)
              for norm in norms]
    precision.optimizer_step(scaler, optimizer)
    return values


@torch.no_grad()
def evaluate(model: torch.nn.Module, eval_fn) -> dict[str, float]:
    """Run `eval_fn(model)` in eval mode without gradients, then put the model back in train
    mode."""
    with eval_mode(model):
        return {name: float(value) for name, value in eval_fn(model).items()}


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
    meta: dict | None = None,
    stop_after: int | None = None,
    finalize=None,
) -> History:
    """Train `model` for cfg.max_steps optimizer steps; return the History.

    get_batch(step) -> the step's whole batch: a tensor or list with one row per example, or a
        tuple or dict of them. Must be a deterministic function of `step` (e.g. sample with a
        torch.Generator seeded by the step), so a resumed run replays exactly the same data.
    loss_fn(model, batch) -> (loss, n): the loss, a scalar tensor that is the mean of n terms
        (tokens, pairs) of `batch`; or (loss, n, metrics): also {name: number} of the step,
        logged in history.metrics (online DPO's reward-model score; this process's value
        under torchrun).
    eval_fn(model) -> {name: value}, run every cfg.eval_interval steps and at the end.
    checkpoint_path: where to save (every cfg.checkpoint_interval steps and at the end). An
        existing checkpoint there is loaded and training continues from its step; a finished
        one just loads the weights and returns its history. A checkpoint trained from other
        input models (meta["inputs"] differs) is not resumed: the run starts afresh and
        overwrites it. With cfg.max_steps 0 the model as given is saved as the finished run.
    meta: what the checkpoint records besides weights and progress (`checkpoints.Checkpoint`):
        "model_config", "recipe", "inputs" (fingerprints of the models this one is trained
        from, see checkpoints.fingerprint).
    stop_after: stop (and checkpoint) once this many steps in total are done; calling again
        resumes. Useful in tests, and to split a long run over several sessions.
    finalize(model) -> {name: number}, run once when the last step is done, before the final
        checkpoint is written (the reward model's bias normalisation): the finished
        checkpoint holds the final model, written once; the numbers go to Checkpoint.extra.

    Data parallel (inside a torchrun process group, see rlhf_lite.distributed): loss_fn
    receives this process's shard of the batch (every W-th example, `distributed.shard`) and
    the model wrapped in DDP; each process's loss is weighted by its n, so a step is the one on
    the mean over the whole batch (`distributed.scale_for_global_mean`). eval_fn receives the
    plain model (every process evaluates the same weights on the same data), and only rank 0
    writes the checkpoint. History.train_loss is the loss of the whole batch, on every process.
    """
    if cfg.max_steps is None:
        raise ValueError(f"{cfg.desc}: TrainConfig.max_steps is None (left to a stage that "
                         "counts its steps from epochs): give a number of steps")
    optimizer = make_optimizer(model, cfg)
    meta = meta or {}
    ckpt = resumable(checkpoint_path, meta.get("inputs", {}))
    history, start = _start(model, optimizer, cfg, ckpt, checkpoint_path)
    end = cfg.max_steps if stop_after is None else min(stop_after, cfg.max_steps)
    extra = {}  # finalize's numbers, once the last step is done

    def save(done: int) -> None:
        checkpoints.save(Checkpoint(
            model.state_dict(), step=done, max_steps=cfg.max_steps,  # done = next step's index
            history=history.to_dict(), extra=extra, **meta,
            resume={"optimizer": optimizer.state_dict(), "rng": _rng_state(),
                    "config": asdict(cfg)}), checkpoint_path)

    if start >= end:
        if ckpt is not None:
            print(f"{cfg.desc}: loaded {shown(checkpoint_path)}, already trained for {start} steps "
                  f"({history.seconds:.0f} s); delete it or pass checkpoint_path=None to train "
                  "again")
        elif cfg.max_steps == 0 and checkpoint_path is not None:
            # nothing to train (a real-data preset's base stage is the GPT-2 checkpoint
            # itself): the model as given is the finished run
            extra.update(finalize(model) if finalize is not None else {})
            save(0)
        return history

    model.train()
    replica = distributed.wrap(model)  # DDP under torchrun, `model` itself otherwise
    # with grad_clip=0, clipping to inf still returns the norm (for the NaN check and history)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    scaler = precision.grad_scaler()  # loss scaling under fp16 autocast; a no-op otherwise

    def train_step(step: int) -> dict | None:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = distributed.shard(get_batch(step))  # this process's share of the step's batch
        loss, n, *logged = loss_fn(replica, batch)
        loss, combined_loss = distributed.scale_for_global_mean(loss, n)
        # the combined loss is the same on every process, so a NaN stops them all together
        loss_value = check_finite(combined_loss, f"{cfg.desc}: loss", step, lr)
        (norm_value,) = backward_and_step([model], optimizer, scaler, loss, max_norm,
                                          f"{cfg.desc}: gradient norm", step, lr)

        history.steps.append(step)
        history.train_loss.append(loss_value)
        history.lr.append(lr)
        history.grad_norm.append(norm_value)
        for name, value in (logged[0] if logged else {}).items():
            history.metrics.setdefault(name, []).append(value)
        done = step + 1
        if eval_fn is not None and (done == cfg.max_steps
                                    or (cfg.eval_interval and done % cfg.eval_interval == 0)):
            history.eval_steps.append(done)
            for name, value in evaluate(model, eval_fn).items():
                history.eval.setdefault(name, []).append(value)
        if finalize is not None and done == cfg.max_steps:
            extra.update(finalize(model))
        return {"loss": f"{loss_value:.3f}"} if step % 20 == 0 else None

    run_steps(range(start, end), train_step, history,
              save if checkpoint_path is not None else None, cfg.checkpoint_interval, cfg.desc)
    return history
