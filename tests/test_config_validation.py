"""Every bad input stopped at the door: configs check their fields when built, the pipeline's
command line before any stage runs; each error is one line naming the field and its value."""
import importlib
import math
import pkgutil
import re
import typing
from dataclasses import dataclass, fields, is_dataclass, replace

import pytest

import rlhf_lite
from rlhf_lite import paths, pipeline
from rlhf_lite.dpo import DPOConfig
from rlhf_lite.model import GPTConfig
from rlhf_lite.ppo import PPOConfig
from rlhf_lite.presets import PRESETS
from rlhf_lite.pretrain import PretrainConfig
from rlhf_lite.reward import RewardConfig
from rlhf_lite.sft import SFTConfig
from rlhf_lite.training import TrainConfig
from rlhf_lite.utils import check_config, integer, rule

CONFIGS = {"TrainConfig": TrainConfig, "PretrainConfig": PretrainConfig, "SFTConfig": SFTConfig,
           "RewardConfig": RewardConfig, "PPOConfig": PPOConfig, "DPOConfig": DPOConfig,
           "GPTConfig": lambda **kw: GPTConfig(**{"vocab_size": 50, **kw})}

BY_EPOCHS = "a TrainConfig with max_steps=None (the stage's `epochs` sets the steps)"
# (config, field, bad value, what the message says is allowed)
BAD = [
    ("TrainConfig", "max_steps", -1, "None or an int >= 0"),
    ("TrainConfig", "max_steps", 2.5, "None or an int >= 0"),
    ("TrainConfig", "lr", -3e-3, "a finite number > 0"),  # gradient ascent, silently, today
    ("TrainConfig", "lr", 0.0, "a finite number > 0"),
    ("TrainConfig", "lr", math.nan, "a finite number > 0"),
    ("TrainConfig", "lr", math.inf, "a finite number > 0"),
    ("TrainConfig", "lr", "3e-3", "a finite number > 0"),
    ("TrainConfig", "min_lr_ratio", 1.5, "a number in [0, 1]"),
    ("TrainConfig", "warmup_steps", -5, "an int >= 0"),
    ("TrainConfig", "weight_decay", -0.1, "a finite number >= 0"),
    ("TrainConfig", "beta1", 1.0, "a number in [0, 1)"),
    ("TrainConfig", "beta2", -0.1, "a number in [0, 1)"),
    ("TrainConfig", "grad_clip", -1.0, "a finite number >= 0"),
    ("TrainConfig", "eval_interval", -1, "an int >= 0"),
    ("TrainConfig", "checkpoint_interval", -10, "an int >= 0"),
    ("PretrainConfig", "batch_size", 0, "an int >= 1"),
    ("PretrainConfig", "n_layer", 0, "an int >= 1"),
    ("PretrainConfig", "block_size", -8, "an int >= 1"),  # "negative dimension -8" today
    ("PretrainConfig", "dropout", 1.0, "a number in [0, 1)"),
    ("SFTConfig", "batch_size", 0, "an int >= 1"),  # "stack expects a non-empty TensorList"
    ("RewardConfig", "k", 1, "an int >= 2"),
    ("RewardConfig", "rounds", 0, "an int >= 1"),
    ("RewardConfig", "val_rounds", 0, "an int >= 1"),
    ("RewardConfig", "max_new_tokens", 0, "an int >= 1"),  # empty responses, 50% accuracy
    ("RewardConfig", "temperature", 0.0, "a finite number > 0"),
    ("RewardConfig", "batch_size", 0, "an int >= 1"),  # ZeroDivisionError today
    ("RewardConfig", "epochs", 0, "an int >= 1"),
    # a step count of its own would contradict `epochs` (it used to be silently replaced)
    ("RewardConfig", "train", TrainConfig(max_steps=50), BY_EPOCHS),
    ("DPOConfig", "train", TrainConfig(max_steps=0), BY_EPOCHS),
    ("PPOConfig", "iterations", 0, "an int >= 1"),
    ("PPOConfig", "batch_size", 0, "an int >= 1"),
    ("PPOConfig", "minibatch_size", 0, "an int >= 1"),
    ("PPOConfig", "ppo_epochs", 0, "an int >= 1"),
    ("PPOConfig", "max_new_tokens", 0, "an int >= 1"),
    ("PPOConfig", "temperature", -1.0, "a finite number > 0"),
    ("PPOConfig", "lr", -2e-5, "a finite number > 0"),
    ("PPOConfig", "value_lr", 0, "a finite number > 0"),
    ("PPOConfig", "clip_eps", 0.0, "a finite number > 0"),
    ("PPOConfig", "value_clip_eps", -0.2, "a finite number > 0"),
    ("PPOConfig", "gamma", 0.0, "a number in (0, 1]"),
    ("PPOConfig", "gamma", 1.01, "a number in (0, 1]"),
    ("PPOConfig", "lam", -0.1, "a number in [0, 1]"),
    ("PPOConfig", "lam", 1.5, "a number in [0, 1]"),
    ("PPOConfig", "beta", -0.1, "a finite number >= 0"),
    ("PPOConfig", "kl_target", 0.0, "a finite number > 0"),
    ("PPOConfig", "kl_horizon", 0, "an int >= 1"),
    ("PPOConfig", "kl_estimator", "k4", "one of ('k1', 'k2', 'k3')"),
    ("PPOConfig", "missing_eos_penalty", -2.0, "a finite number >= 0"),
    ("PPOConfig", "grad_clip", 0.0, "a finite number > 0"),  # clipping to 0 zeroes gradients
    ("PPOConfig", "ptx_coef", -0.1, "a finite number >= 0"),
    ("PPOConfig", "ptx_batch_size", 0, "an int >= 1"),
    ("PPOConfig", "reward", "gold", "one of ('rm', 'verifier')"),
    ("PPOConfig", "loss_aggregation", "mean", "one of ('token', 'sequence', 'constant')"),
    ("PPOConfig", "whiten_advantages", 0, "a bool"),
    ("PPOConfig", "kl_in", "both", "one of ('reward', 'loss')"),
    ("GPTConfig", "vocab_size", 0, "an int >= 1"),
    ("GPTConfig", "n_head", True, "an int >= 1"),  # a bool is no size
    ("GPTConfig", "dropout", -0.5, "a number in [0, 1)"),
    ("GPTConfig", "layer_norm_eps", 0.0, "a finite number > 0"),
]


@pytest.mark.parametrize("name, field, value, allowed", BAD,
                         ids=[f"{c}.{f}={v!r}" for c, f, v, _ in BAD])
def test_each_rule_rejects_a_bad_value_naming_class_field_value_and_rule(name, field, value,
                                                                         allowed):
    with pytest.raises(ValueError) as err:
        CONFIGS[name](**{field: value})
    assert str(err.value) == f"{name}.{field} must be {allowed}, got {value!r}"


@pytest.mark.parametrize("make", [
    lambda: GPTConfig(vocab_size=50, n_embd=30, n_head=4),
    lambda: PretrainConfig(n_embd=128, n_head=3),
])
def test_width_must_divide_into_heads(make):
    with pytest.raises(ValueError, match=r"^\w+Config.n_embd must be divisible by n_head = \d, "
                                         r"got \d+$"):
        make()


def test_the_edges_that_mean_something_stay_allowed():
    TrainConfig(max_steps=0)  # no training: the model as given is the finished run
    TrainConfig(max_steps=None)  # the steps of `epochs` passes, counted by the stage
    TrainConfig(warmup_steps=0, grad_clip=0.0, eval_interval=0, min_lr_ratio=0.0, lr=1)
    PPOConfig(beta=0.0, lam=0.0, gamma=1.0, ptx_coef=0.0, clip_eps=100.0, kl_estimator="k3")
    RewardConfig(k=2, train=TrainConfig(max_steps=None))


def test_replace_is_checked_too():
    with pytest.raises(ValueError, match=r"^PPOConfig.lam must be"):
        replace(PPOConfig(), lam=2.0)


def test_a_field_breaking_its_rule_is_found_whenever_the_config_is_checked():
    config = PPOConfig()
    config.lam = 2.0  # set after construction: only a new check finds it
    with pytest.raises(ValueError, match=r"^PPOConfig.lam must be a number in \[0, 1\], got 2.0$"):
        check_config(config)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_recipe_of_every_preset_keeps_its_rules(name):
    """Every recipe of the course (a preset may change one after building it), each config
    nested in it and the GPTConfig a PretrainConfig builds pass their fields' rules."""
    preset = PRESETS[name]
    configs = [c for f in fields(preset) if is_dataclass(c := getattr(preset, f.name))]
    configs += [held for c in configs for f in fields(c)
                if is_dataclass(held := getattr(c, f.name))]
    configs += [c.model_config(vocab_size=195) for c in configs if isinstance(c, PretrainConfig)]
    for config in configs:
        check_config(config)
    for kind in (PretrainConfig, SFTConfig, RewardConfig, PPOConfig, TrainConfig, GPTConfig):
        assert any(isinstance(c, kind) for c in configs), kind.__name__


def config_classes() -> set[type]:
    """Every config dataclass of the package: the classes named *Config and those with a field
    rule in any of its modules (subpackages too), and the dataclasses their fields hold."""
    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(
        rlhf_lite.__path__, "rlhf_lite.")]
    found = {cls for module in modules for cls in vars(module).values()
             if isinstance(cls, type) and is_dataclass(cls) and cls.__module__ == module.__name__
             and (cls.__name__.endswith("Config") or any("rule" in f.metadata
                                                         for f in fields(cls)))}
    todo = list(found)
    while todo:  # configs held by configs' fields (TrainConfig in SFTConfig, the data source)
        for hint in typing.get_type_hints(todo.pop()).values():
            for held in (hint, *typing.get_args(hint)):
                if is_dataclass(held) and held not in found:
                    found.add(held)
                    todo.append(held)
    return found


def test_every_field_of_every_config_has_a_rule():
    """A new field passes no check until it declares one (`utils.rule`; a config it holds:
    `utils.nested`), so a field without a rule fails here, before anyone builds the config."""
    configs = config_classes()
    assert {TrainConfig, PPOConfig, GPTConfig, PretrainConfig, SFTConfig, RewardConfig} <= configs
    without = [f"{cls.__name__}.{f.name}" for cls in configs for f in fields(cls)
               if "rule" not in f.metadata]
    assert not without, f"fields without a rule: {without}"


def test_a_field_without_a_rule_is_refused_when_built():
    @dataclass
    class Loose:
        n: int = rule(1, integer(1))
        new: int = 0  # added without a rule

        def __post_init__(self):
            check_config(self)

    with pytest.raises(TypeError, match=r"^Loose.new has no rule"):
        Loose()


# ----------------------------------------------------------------------------- the command line
@pytest.fixture
def no_run(monkeypatch):
    """pipeline.run replaced: a test that reaches it would otherwise train every stage."""
    calls = []
    monkeypatch.setattr(pipeline, "run", lambda *args: calls.append(args))
    return calls


def cli_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        pipeline.main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]  # argparse: usage, then the error


def test_unknown_preset_lists_the_presets(capsys, no_run):
    message = cli_error(capsys, ["--preset", "nope"])
    assert re.search(r"error: argument --preset: invalid choice: 'nope' \(choose from ", message)
    assert all(name in message for name in PRESETS)
    assert no_run == []


@pytest.mark.parametrize("samples", ["0", "-3"])
def test_samples_must_be_positive(capsys, no_run, samples):
    assert cli_error(capsys, ["--samples", samples]).endswith(
        f"error: argument --samples: must be >= 1, got {samples}")
    assert no_run == []


def test_out_that_is_a_file_fails_before_training(capsys, no_run, tmp_path):
    (tmp_path / "results").write_text("not a folder")
    assert cli_error(capsys, ["--out", str(tmp_path / "results")]).endswith(
        f"error: argument --out: {tmp_path / 'results'} exists and is not a folder")
    assert cli_error(capsys, ["--out", str(tmp_path / "results" / "toy")]).endswith(
        f"error: argument --out: cannot create {tmp_path / 'results' / 'toy'}: "
        f"{tmp_path / 'results'} is a file")
    assert no_run == []


def test_bad_settings_fail_before_training(capsys, no_run, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path / "afile")
    monkeypatch.setenv("RLHF_THREADS", "abc")
    with pytest.raises(SystemExit):
        pipeline.main([])
    err = capsys.readouterr().err
    assert (f"error: RLHF_ARTIFACTS_DIR='{tmp_path / 'afile'}': {tmp_path / 'afile'} exists and "
            "is not a folder, so no trained stage could be saved; set RLHF_ARTIFACTS_DIR to a "
            "writable folder") in err
    assert "RLHF_THREADS='abc' is not a thread count: set it to a whole number >= 1" in err
    assert no_run == []


def test_good_arguments_reach_the_run(no_run, tmp_path):
    pipeline.main(["--preset", "tiny", "--samples", "1", "--out", str(tmp_path / "new" / "out")])
    pipeline.main(["--out", str(tmp_path)])  # an existing folder is fine
    assert no_run == [("tiny", str(tmp_path / "new" / "out"), False, 1),
                      ("toy", str(tmp_path), False, 3)]
