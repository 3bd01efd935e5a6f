"""The artifact helper: load a finished stage, resume a partial one, rebuild a stale one."""
import pytest
import torch

from rlhf_lite import artifacts, paths, presets
from rlhf_lite.pretrain import PretrainConfig
from rlhf_lite.training import TrainConfig


def tiny_recipe(steps=4):
    return PretrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
                          train=TrainConfig(max_steps=steps, warmup_steps=1, eval_interval=0,
                                            desc="pretrain"))


@pytest.fixture
def tiny_preset(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path)
    monkeypatch.setitem(presets.PRESETS, "tiny", presets.Preset("tiny", pretrain=tiny_recipe()))
    return "tiny"


def test_missing_stage_is_built_then_loaded_without_retraining(tiny_preset, monkeypatch):
    assert artifacts.status("base", tiny_preset) == "missing"
    model = artifacts.load_model("base", tiny_preset)
    assert artifacts.status("base", tiny_preset) == "done"
    assert artifacts.checkpoint_path("base", tiny_preset).exists()
    assert not model.training

    def must_not_build(preset):
        raise AssertionError("a finished stage was rebuilt")
    monkeypatch.setattr(artifacts.STAGES["base"], "build", must_not_build)
    again = artifacts.load_model("base", tiny_preset)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_changed_recipe_makes_the_stage_stale_and_rebuilds_it(tiny_preset):
    artifacts.load_model("base", tiny_preset)
    presets.PRESETS[tiny_preset].pretrain = tiny_recipe(steps=6)
    assert artifacts.status("base", tiny_preset) == "stale"
    artifacts.load_model("base", tiny_preset)
    ckpt = torch.load(artifacts.checkpoint_path("base", tiny_preset), weights_only=False)
    assert ckpt["step"] == 6 and artifacts.status("base", tiny_preset) == "done"


def test_interrupted_stage_is_partial_and_resumed(tiny_preset, monkeypatch):
    artifacts.load_model("base", tiny_preset)
    path = artifacts.checkpoint_path("base", tiny_preset)
    ckpt = torch.load(path, weights_only=False)
    ckpt["step"] = 2  # as if the run had stopped halfway
    torch.save(ckpt, path)
    assert artifacts.status("base", tiny_preset) == "partial"
    calls = []
    build = artifacts.STAGES["base"].build
    monkeypatch.setattr(artifacts.STAGES["base"], "build", lambda p: (calls.append(p), build(p)))
    artifacts.load_model("base", tiny_preset)
    assert calls == [tiny_preset] and path.exists()  # resumed in place, not deleted first
    assert artifacts.status("base", tiny_preset) == "done"


def test_unknown_stage_and_preset_are_clear_errors():
    with pytest.raises(KeyError, match="unknown stage"):
        artifacts.load_model("nope")
    with pytest.raises(KeyError, match="unknown preset"):
        presets.get_preset("nope")


def test_a_stage_is_built_with_its_canonical_thread_count(tiny_preset, monkeypatch):
    seen = []
    build = artifacts.STAGES["base"].build
    monkeypatch.setattr(artifacts.STAGES["base"], "build",
                        lambda preset: (seen.append(torch.get_num_threads()), build(preset)))
    monkeypatch.setattr(artifacts.STAGES["base"], "threads", 2)
    torch.set_num_threads(1)
    try:
        artifacts.load_model("base", tiny_preset)
        assert seen == [2] and torch.get_num_threads() == 1  # restored afterwards
    finally:
        torch.set_num_threads(1)
