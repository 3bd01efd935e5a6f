"""Saved runs (rlhf_lite.runs): a run is trained once and then loaded as the same objects;
stale when an argument changes; trained again on request or when its file is damaged; runs
trained in processes draw their progress bars in the parent."""
import copy
import dataclasses
import math

import pytest
import torch
from synthetic import marker_rankings

from rlhf_lite import checkpoints, data, dpo, labeler, paths, ppo, reward, runs, sft, utils
from rlhf_lite.checkpoints import Checkpoint
from rlhf_lite.dpo import DPOConfig
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.ppo import PPOConfig
from rlhf_lite.reward import RewardModel
from rlhf_lite.runs import train_side_by_side
from rlhf_lite.tokenizer import load_tokenizer
from rlhf_lite.training import TrainConfig

TOKENIZER = load_tokenizer()


@pytest.fixture(autouse=True)
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path)
    return tmp_path


@pytest.fixture
def trained(monkeypatch):
    """The runs trained (their names, in order), here in this process: the key's logic
    without the seconds a process costs."""
    names = []

    def here(fn, calls, processes=None, labels=None):
        names.extend(labels)
        return [fn(*call) for call in calls]
    monkeypatch.setattr(runs, "run_in_processes", here)
    return names


@dataclasses.dataclass
class Nudge:
    size: float = utils.rule(1.0, utils.number())
    desc: str = utils.rule("nudge", utils.text(), run_control=True)  # steers, never stale


@runs.saved_with(lambda model: Checkpoint(model.state_dict(), step=1, max_steps=1),
                 lambda ckpt, cfg, model, prompts: _loaded(model, ckpt))
def nudged(cfg: Nudge, model, prompts: list[dict]):
    """A run: a copy of `model` with every weight moved by cfg.size."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(cfg.size)
    return out


def _loaded(model, ckpt):
    out = copy.deepcopy(model)
    out.load_state_dict(ckpt.model)
    return out


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=len(TOKENIZER), block_size=48, n_layer=1, n_head=2,
                         n_embd=16)).eval()


def same(a, b) -> bool:
    """a == b, tensors compared with torch.equal, in dicts, lists and tuples too."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_a_run_is_trained_once_then_loaded_as_the_same_objects(monkeypatch, capsys):
    dispatched = []

    def counting(fn, calls, processes=None, labels=None):
        dispatched.extend(labels)
        return utils.run_in_processes(fn, calls, processes, labels)
    monkeypatch.setattr(runs, "run_in_processes", counting)
    sft = tiny_gpt()
    rm = RewardModel(tiny_gpt(1))
    torch.nn.init.normal_(rm.head.weight)  # a reward that depends on the response
    ppo_cfg = PPOConfig(iterations=2, batch_size=8, minibatch_size=4, max_new_tokens=6,
                        ppo_epochs=1, lr=1e-3)
    dpo_cfg = DPOConfig(beta=0.1, batch_size=8, epochs=1, train=TrainConfig(
        max_steps=None, lr=3e-3, warmup_steps=1, eval_interval=0))
    plan = {"PPO": (ppo.train_run, (ppo_cfg, sft, rm, TOKENIZER, data.load_records(
                    "prompts_train")), {"gold_judge": labeler.gold_score}),
            0.5: (dpo.train_dpo, (dpo_cfg, sft, TOKENIZER, marker_rankings(16, seed=0),
                                  marker_rankings(4, seed=1)), {})}
    first = train_side_by_side(plan, saved_as="test")
    assert dispatched == ["PPO", "0.5"] and "is missing: training it" in capsys.readouterr().out
    again = train_side_by_side(plan, saved_as="test")
    assert dispatched == ["PPO", "0.5"]  # nothing trained: both loaded
    printed = capsys.readouterr().out
    assert "run 'PPO' loaded from" in printed and "run '0.5' loaded from" in printed
    assert list(again) == ["PPO", 0.5]

    for name in ("policy", "value_model", "optimizer", "kl_ctl", "generator"):
        assert type(getattr(again["PPO"], name)) is type(getattr(first["PPO"], name))
    saved, trained_ = (ppo.policy_checkpoint(r["PPO"]) for r in (again, first))
    assert same(dataclasses.asdict(saved), dataclasses.asdict(trained_))
    assert same(again["PPO"].step(), first["PPO"].step())  # it goes on exactly as trained
    (policy, history), (policy_0, history_0) = again[0.5], first[0.5]
    assert same(policy.state_dict(), policy_0.state_dict()) and history == history_0
    assert policy.training is policy_0.training is False


def test_a_changed_argument_makes_a_run_stale_and_retrain_trains_it_again(trained, capsys):
    model, prompts = tiny_gpt(), [{"prompt": "hi"}]

    def run(cfg=Nudge(), m=model, p=prompts, retrain=False):
        return train_side_by_side({"a": (nudged, (cfg, m, p), {})}, "group", retrain)["a"]

    first = run()
    assert trained == ["a"] and runs.run_path("a", "group").exists()
    assert same(run().state_dict(), first.state_dict()) and trained == ["a"]
    run(Nudge(desc="another label"))  # a field that only steers the run: still current
    assert trained == ["a"]
    capsys.readouterr()
    run(Nudge(size=2.0))
    assert "is stale: its argument 0.size changed" in capsys.readouterr().out
    changed = tiny_gpt(seed=1)
    run(Nudge(size=2.0), changed)
    assert "its input model argument 1 changed" in capsys.readouterr().out
    run(Nudge(size=2.0), changed, [{"prompt": "hello"}])
    assert "its argument 2 changed" in capsys.readouterr().out
    assert trained == ["a"] * 4
    run(Nudge(size=2.0), changed, [{"prompt": "hello"}], retrain=True)
    assert trained == ["a"] * 5 and "is retrained on request" in capsys.readouterr().out


def test_a_damaged_saved_run_is_set_aside_and_trained_again(trained, capsys):
    plan = {"a": (nudged, (Nudge(), tiny_gpt(), []), {})}
    first = train_side_by_side(plan, "group")["a"]
    path = runs.run_path("a", "group")
    path.write_bytes(path.read_bytes()[:200])  # cut short, as by a full disk
    again = train_side_by_side(plan, "group")["a"]
    printed = capsys.readouterr().out
    assert trained == ["a", "a"]
    assert "run 'a' is damaged: it cannot be read (" in printed and "a.damaged.pt" in printed
    assert path.with_name("a.damaged.pt").exists()
    assert same(again.state_dict(), first.state_dict())
    assert checkpoints.read(path, verify=True).step == 1  # a whole file again


def test_runs_are_saved_as_one_file_each_under_the_preset(artifacts):
    assert runs.run_path("beta = 0.3", "kl_sweep") == (artifacts / "toy" / "runs" / "kl_sweep"
                                                       / "beta_0.3.pt")
    assert runs.run_path(0.1, "dpo", "tiny").name == "0.1.pt"


def test_an_argument_that_cannot_be_keyed_is_refused(trained):
    with pytest.raises(TypeError, match="argument 2"):
        train_side_by_side({"a": (nudged, (Nudge(), tiny_gpt(), object()), {})}, "group")
    assert trained == []


def test_runs_that_could_not_be_saved_are_refused_before_training(trained):
    with pytest.raises(TypeError, match="math.factorial does not say how its result is saved"):
        train_side_by_side({"a": (math.factorial, (3,), {})}, "group")
    with pytest.raises(ValueError, match="would share a file"):
        train_side_by_side({"a b": (nudged, (Nudge(), tiny_gpt(), []), {}),
                            "a_b": (nudged, (Nudge(), tiny_gpt(), []), {})}, "group")
    assert trained == []


def test_the_key_reads_tokenizers_tensors_and_functions():
    recipe, inputs = runs.run_key(nudged, (TOKENIZER, torch.arange(3)), {"judge": math.sqrt})
    assert recipe["function"] == f"{__name__}.nudged" and inputs == {}
    assert recipe["argument 0"].startswith("tokenizer ") and recipe["judge"] == "function math.sqrt"
    assert runs.run_key(nudged, (TOKENIZER, torch.arange(4)), {})[0]["argument 1"] != \
        recipe["argument 1"]


def test_train_side_by_side_runs_each_call_with_one_thread_and_keeps_the_names():
    got = train_side_by_side({"threads": (torch.get_num_threads, (), {}),
                              "factorial": (math.factorial, (5,), {}),
                              "tensor": (torch.full, ((2,), 3.0), {"dtype": torch.float64})})
    assert list(got) == ["threads", "factorial", "tensor"]
    assert got["threads"] == 1 and got["factorial"] == 120  # each process: one torch thread
    assert torch.equal(got["tensor"], torch.full((2,), 3.0, dtype=torch.float64))


def steps(n: int) -> int:
    """A job with a progress bar of n steps (module level: a spawned process imports it)."""
    for _ in utils.progress(range(n), total=n, desc="inner"):
        pass
    return n


@pytest.mark.parametrize("quiet", ["1", "0"])
def test_runs_in_processes_draw_one_bar_each_in_the_parent(monkeypatch, capfd, quiet):
    for name in ("CI", "TQDM_DISABLE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RLHF_QUIET", quiet)
    assert utils.run_in_processes(steps, [(3,), (5,)], 2, labels=["first", "second"]) == [3, 5]
    err = capfd.readouterr().err
    assert "inner" not in err  # the workers draw nothing themselves
    if quiet == "1":
        assert "first" not in err and "second" not in err
    else:
        assert "first: 100%" in err and "3/3" in err and "second: 100%" in err and "5/5" in err


def test_every_notebook_run_is_saved_and_retrained_by_the_switch_in_its_first_cell():
    import json

    for path in sorted((paths.REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        code = [c["source"] for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
                if c["cell_type"] == "code"]
        code = ["".join(source) if isinstance(source, list) else source for source in code]
        calls = [c for c in code if "train_side_by_side(" in c or "train_in_parallel(" in c]
        for cell in calls:
            assert "saved_as=" in cell and "retrain=RETRAIN" in cell, (path.name, cell)
        assert bool(calls) == ("\nRETRAIN = False\n" in code[0]), path.name


def test_reward_models_sft_and_online_dpo_runs_are_saved_and_loaded_as_trained(trained):
    base, rankings, val = tiny_gpt(), marker_rankings(8, seed=0), marker_rankings(4, seed=1)
    demos = [{"id": f"d{i}", "prompt": "name two fruits .", "response": "pear and banana ."}
             for i in range(4)]
    rm_cfg = reward.RewardConfig(batch_size=4, train=TrainConfig(
        max_steps=None, lr=3e-3, warmup_steps=1, eval_interval=0))
    sft_cfg = sft.SFTConfig(batch_size=2, train=TrainConfig(max_steps=2, lr=3e-3, warmup_steps=1,
                                                            eval_interval=0))
    online = DPOConfig(batch_size=4, pairs="online", max_new_tokens=4, train=TrainConfig(
        max_steps=None, lr=3e-3, warmup_steps=1, eval_interval=0))
    rm_args = (base, TOKENIZER, rankings, val, demos)
    judge = RewardModel(tiny_gpt(1))
    torch.nn.init.normal_(judge.head.weight)  # scores that rank the online pairs
    plan = {**{f"rm seed {s}": (reward.train_reward_model, (dataclasses.replace(
                rm_cfg, train=dataclasses.replace(rm_cfg.train, seed=s)), *rm_args), {})
               for s in (0, 1)},
            "sft": (sft.train_sft, (sft_cfg, base, TOKENIZER, demos, demos[:2]), {}),
            "online": (dpo.train_dpo, (online, base, TOKENIZER, None, val),
                       {"prompts": data.load_records("prompts_train")[:8],
                        "reward_model": judge, "gold_judge":
                        labeler.gold_score})}
    first = train_side_by_side(plan, saved_as="models")
    assert trained == list(plan)
    again = train_side_by_side(plan, saved_as="models")
    assert trained == list(plan)  # all four loaded
    for name in plan:
        (model, history), (model_0, history_0) = again[name], first[name]
        assert type(model) is type(model_0) and model.training is model_0.training is False
        assert same(model.state_dict(), model_0.state_dict()) and history == history_0
    assert not same(first["rm seed 0"][0].state_dict(), first["rm seed 1"][0].state_dict())
    assert set(again["online"][1].metrics) == {"rm_score", "tied", "gold_score"}
