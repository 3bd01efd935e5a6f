import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from rlhf_lite import checkpoints
from rlhf_lite.paths import shown
from rlhf_lite.training import History, TrainConfig, load_checkpoint, lr_at, make_optimizer, train
from rlhf_lite.utils import atomic_save

VOCAB = 16


class TinyLM(nn.Module):
    """Embedding -> LayerNorm -> dropout -> linear: enough to exercise decay groups and RNG."""

    def __init__(self, dim=8, dropout=0.1, tied=False):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.ln = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, VOCAB)
        if tied:
            self.head.weight = self.emb.weight

    def forward(self, idx):
        return self.head(self.drop(self.ln(self.emb(idx))))


def get_batch(step):
    """Next-token toy task: predict (x + 1) mod VOCAB. Seeded by the step, as train requires."""
    x = torch.randint(0, VOCAB, (32,), generator=torch.Generator().manual_seed(step))
    return x, (x + 1) % VOCAB


def loss_fn(model, batch):
    """The mean loss over the batch's targets, and their number (as train requires)."""
    x, y = batch
    return F.cross_entropy(model(x), y), len(y)


def eval_fn(model):
    return {"val_loss": loss_fn(model, get_batch(10_000))[0].item()}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise comparisons need a fixed reduction order
    yield
    torch.set_num_threads(before)


def test_lr_schedule():
    cfg = TrainConfig(max_steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)  # lr / warmup_steps
    assert lr_at(9, cfg) == pytest.approx(1e-3) and lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx((1e-3 + 1e-4) / 2)  # cosine midpoint
    assert lr_at(100, cfg) == pytest.approx(1e-4) and lr_at(150, cfg) == pytest.approx(1e-4)
    after_warmup = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a > b for a, b in zip(after_warmup, after_warmup[1:]))
    assert lr_at(0, TrainConfig(warmup_steps=0)) == pytest.approx(TrainConfig().lr)


def test_weight_decay_groups_and_tied_params():
    model = TinyLM(tied=True)
    model.ln.bias.requires_grad_(False)  # frozen parameters are left out
    decay, no_decay = make_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.emb.weight)}  # tied head counted once
    assert {id(p) for p in no_decay["params"]} == {id(model.ln.weight), id(model.head.bias)}


def test_loss_decreases_and_history():
    torch.manual_seed(0)
    model = TinyLM(dropout=0.0)
    cfg = TrainConfig(max_steps=150, lr=3e-2, warmup_steps=10, eval_interval=50)
    hist = train(model, loss_fn, get_batch, cfg, eval_fn=eval_fn)
    assert (hist.steps == list(range(150))
            and len(hist.train_loss) == len(hist.lr) == len(hist.grad_norm) == 150)
    assert hist.eval_steps == [50, 100, 150]
    # starts near ln(16), ends solved
    assert hist.train_loss[0] > 2.0 and hist.last("val_loss") < 0.1
    assert sum(hist.train_loss[-10:]) < 0.3 * sum(hist.train_loss[:10])
    assert hist.last("lr") == hist.lr[-1] and hist.seconds > 0
    assert History.from_dict(hist.to_dict()) == hist
    with pytest.raises(KeyError):
        hist.last("nope")


def test_exact_resume(tmp_path, one_thread):
    cfg = TrainConfig(max_steps=20, lr=1e-2, warmup_steps=3, eval_interval=5)
    torch.manual_seed(0)
    straight = TinyLM()
    h_straight = train(straight, loss_fn, get_batch, cfg, eval_fn,
                       checkpoint_path=tmp_path / "a.pt")

    torch.manual_seed(0)
    first = TinyLM()
    train(first, loss_fn, get_batch, cfg, eval_fn, checkpoint_path=tmp_path / "b.pt",
          meta={"recipe": {"k": 1}}, stop_after=10)
    assert checkpoints.read(tmp_path / "b.pt").step == 10
    torch.manual_seed(123)  # a fresh model with other weights and another RNG state
    resumed = TinyLM()
    h_resumed = train(resumed, loss_fn, get_batch, cfg, eval_fn, checkpoint_path=tmp_path / "b.pt",
                      meta={"recipe": {"k": 1}})

    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    d_straight, d_resumed = h_straight.to_dict(), h_resumed.to_dict()
    d_straight.pop("seconds"), d_resumed.pop("seconds")
    assert d_straight == d_resumed and h_resumed.eval_steps == [5, 10, 15, 20]

    # a finished checkpoint: load weights and return its history without training
    done = TinyLM()
    h_done = train(done, lambda m, b: pytest.fail("trained again"), get_batch, cfg,
                   checkpoint_path=tmp_path / "b.pt")
    assert (h_done.steps == h_resumed.steps
            and all(torch.equal(p, q) for p, q in zip(done.parameters(), resumed.parameters())))
    ckpt = load_checkpoint(tmp_path / "b.pt", TinyLM())
    assert ckpt.recipe == {"k": 1} and ckpt.max_steps == 20 and ckpt.done


def test_a_checkpoint_of_other_input_models_is_not_resumed(tmp_path, one_thread, capsys):
    cfg = TrainConfig(max_steps=6, lr=1e-2, warmup_steps=2, eval_interval=0)
    path = tmp_path / "c.pt"
    torch.manual_seed(0)
    train(TinyLM(), loss_fn, get_batch, cfg, checkpoint_path=path, meta={"inputs": {"base": "aaa"}})
    torch.manual_seed(1)
    fresh, again = TinyLM(), TinyLM()
    again.load_state_dict(fresh.state_dict())
    h_fresh = train(fresh, loss_fn, get_batch, cfg)  # no checkpoint: the reference run
    h_again = train(again, loss_fn, get_batch, cfg, checkpoint_path=path,
                    meta={"inputs": {"base": "bbb"}})  # trained from another base
    assert ("trained from other input models or data: training from scratch"
            in capsys.readouterr().out)
    assert h_again.train_loss == h_fresh.train_loss
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), again.parameters()))
    assert checkpoints.read(path).inputs == {"base": "bbb"}
    # the same inputs: the finished checkpoint is loaded, and the notebook user is told so
    train(TinyLM(), lambda m, b: pytest.fail("trained again"), get_batch, cfg, checkpoint_path=path,
          meta={"inputs": {"base": "bbb"}})
    assert "already trained for 6 steps" in capsys.readouterr().out


def test_a_damaged_partial_checkpoint_is_set_aside_and_never_trained_on(tmp_path, one_thread,
                                                                        capsys):
    cfg = TrainConfig(max_steps=6, lr=1e-2, warmup_steps=2, eval_interval=0, checkpoint_interval=2)
    path, aside = tmp_path / "d.partial.pt", tmp_path / "d.partial.damaged.pt"
    torch.manual_seed(0)
    fresh, again = TinyLM(), TinyLM()
    again.load_state_dict(fresh.state_dict())
    h_fresh = train(fresh, loss_fn, get_batch, cfg)  # the reference run, never interrupted
    for damage in ("a changed weight", "a truncated file"):
        torch.manual_seed(1)
        train(TinyLM(), loss_fn, get_batch, cfg, checkpoint_path=path, stop_after=4)
        if damage == "a changed weight":  # the recorded fingerprint is left as written
            raw = torch.load(path, weights_only=True)
            raw["model"]["ln.bias"][0] += 1.0
            torch.save(raw, path)
            problem = "is damaged: its weights do not match the checksum written with them"
        else:
            path.write_bytes(path.read_bytes()[:100])
            problem = "cannot be read"
        capsys.readouterr()
        model = TinyLM()
        model.load_state_dict(again.state_dict())
        history = train(model, loss_fn, get_batch, cfg, checkpoint_path=path)
        assert (f"{shown(path)} {problem}" in (out := capsys.readouterr().out)
                and f": set aside as {shown(aside)}; training from scratch\n" in out), damage
        assert history.train_loss == h_fresh.train_loss and history.steps == list(range(6))
        assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), model.parameters()))
        assert checkpoints.read(path, verify=True).done and aside.exists()
        path.unlink()


def test_zero_steps_save_the_model_as_given_and_none_is_no_step_count(tmp_path):
    model, path = TinyLM(), tmp_path / "untrained.pt"
    hist = train(model, lambda m, b: pytest.fail("trained"), get_batch, TrainConfig(max_steps=0),
                 checkpoint_path=path)
    ckpt = checkpoints.read(path)
    assert hist.steps == [] and ckpt.done and (ckpt.step, ckpt.max_steps) == (0, 0)
    assert all(torch.equal(ckpt.model[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"^sft: TrainConfig.max_steps is None \(left to a stage"):
        train(model, loss_fn, get_batch, TrainConfig(max_steps=None, desc="sft"))


def test_nan_loss_raises_and_keeps_checkpoint(tmp_path):
    def nan_at_7(model, batch):
        step, batch = batch
        loss, n = loss_fn(model, batch)
        return loss * (float("nan") if step == 7 else 1.0), n

    model = TinyLM()
    cfg = TrainConfig(max_steps=20, warmup_steps=2, checkpoint_interval=5, desc="pretrain")
    path = tmp_path / "ckpt.pt"
    with pytest.raises(FloatingPointError, match=r"^pretrain: loss is nan at step 7 \(lr "):
        train(model, nan_at_7, lambda s: (s, get_batch(s)), cfg, checkpoint_path=path)
    ckpt = checkpoints.read(path)
    assert ckpt.step == 5 and all(torch.isfinite(t).all() for t in ckpt.model.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_nan_gradient_raises():
    def inf_grad(model, batch):  # finite loss (0), infinite gradient (d sqrt(x)/dx at 0)
        return (model.head.weight * 0).sum().sqrt(), 1

    with pytest.raises(FloatingPointError, match="gradient norm is nan at step 0"):
        train(TinyLM(), inf_grad, get_batch, TrainConfig(max_steps=3))


def test_atomic_save(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "ckpt.pt"
    atomic_save({"a": 1}, path)  # creates the missing directory
    assert os.listdir(path.parent) == ["ckpt.pt"]

    def broken_save(obj, f):  # writes half a file, then fails like a full disk
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"a": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"a": 1} and os.listdir(path.parent) == ["ckpt.pt"]


def test_eval_called_in_eval_mode():
    calls = []

    def spy(model):
        assert not model.training and not torch.is_grad_enabled()
        calls.append(len(calls))
        return {"n": float(len(calls))}

    model = TinyLM()
    hist = train(model, loss_fn, get_batch, TrainConfig(max_steps=10, eval_interval=4), eval_fn=spy)
    assert hist.eval_steps == [4, 8, 10] and hist.eval["n"] == [1.0, 2.0, 3.0]
    assert model.training



def test_evaluations_leave_the_trained_weights_unchanged():
    """eval_interval is run control (checkpoints.py): how often a run is evaluated must not
    change its weights. TinyLM has dropout: an evaluation in train mode would draw masks from
    the generator the training's dropout draws from, and shift every later step."""
    def evaluate(model):
        return {"loss": loss_fn(model, get_batch(0))[0].item()}

    weights = []
    for interval in (0, 1, 3):
        torch.manual_seed(0)
        model = TinyLM()
        train(model, loss_fn, get_batch, TrainConfig(max_steps=8, eval_interval=interval),
              eval_fn=evaluate)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])

@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_grad_clip_bounds_norm(grad_clip):
    seen = []

    def record_norm(optimizer, args, kwargs):  # runs just before each optimizer.step()
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                          for g in grads])).item())

    handle = register_optimizer_step_pre_hook(record_norm)
    try:
        hist = train(TinyLM(), lambda m, b: (1e6 * loss_fn(m, b)[0], 1), get_batch,
                     TrainConfig(max_steps=5, grad_clip=grad_clip))
    finally:
        handle.remove()
    assert min(hist.grad_norm) > 100  # the raw gradients really are huge
    if grad_clip:
        assert max(seen) <= grad_clip * (1 + 1e-4)
    else:
        assert seen == pytest.approx(hist.grad_norm)


def test_finalize_runs_once_before_the_single_final_save(tmp_path, one_thread, monkeypatch):
    cfg = TrainConfig(max_steps=6, lr=1e-2, warmup_steps=2, eval_interval=0, checkpoint_interval=4)
    saves, calls = [], []
    save = checkpoints.save
    monkeypatch.setattr(checkpoints, "save",
                        lambda ckpt, path: (saves.append((ckpt.step, dict(ckpt.extra))),
                                            save(ckpt, path)))

    def finalize(model):
        calls.append(1)
        with torch.no_grad():
            next(model.parameters()).zero_()
        return {"shift": 1.5}
    model = TinyLM()
    train(model, loss_fn, get_batch, cfg, checkpoint_path=tmp_path / "f.pt", finalize=finalize)
    assert calls == [1] and saves == [(4, {}), (6, {"shift": 1.5})]
    ckpt = checkpoints.read(tmp_path / "f.pt")
    assert ckpt.extra == {"shift": 1.5} and not next(iter(ckpt.model.values())).any()
