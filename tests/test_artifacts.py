"""The artifact helper: load a finished stage, resume a partial one, rebuild a stale one."""
import pytest
import torch

from rlhf_lite import artifacts, paths, presets
from rlhf_lite.pretrain import PretrainConfig
from rlhf_lite.sft import SFTConfig
from rlhf_lite.training import TrainConfig
from rlhf_lite.utils import fingerprint


def tiny_recipe(steps=4):
    return PretrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, batch_size=4,
                          train=TrainConfig(max_steps=steps, warmup_steps=1, eval_interval=0,
                                            desc="pretrain"))


@pytest.fixture
def tiny_preset(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path)
    sft = SFTConfig(batch_size=4, train=TrainConfig(max_steps=2, warmup_steps=1, eval_interval=0,
                                                    desc="sft"))
    monkeypatch.setitem(presets.PRESETS, "tiny", presets.Preset("tiny", pretrain=tiny_recipe(), sft=sft))
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


def test_a_stage_records_the_fingerprint_of_the_model_it_was_trained_from(tiny_preset):
    base = artifacts.load_model("base", tiny_preset)
    artifacts.load_model("sft", tiny_preset)
    ckpt = torch.load(artifacts.checkpoint_path("sft", tiny_preset), weights_only=False)
    assert ckpt["extra_state"]["inputs"] == {"base": fingerprint(base)}
    assert artifacts.status("sft", tiny_preset) == "done"


def test_a_changed_input_model_makes_the_stages_after_it_stale(tiny_preset, monkeypatch):
    artifacts.load_model("sft", tiny_preset)  # builds base, then sft from it
    before = torch.load(artifacts.checkpoint_path("sft", tiny_preset), weights_only=False)
    # notebook 1 run again with another seed: same recipe, other weights
    path = artifacts.checkpoint_path("base", tiny_preset)
    base = torch.load(path, weights_only=False)
    base["model"]["transformer.ln_f.bias"] = base["model"]["transformer.ln_f.bias"] + 0.01
    torch.save(base, path)
    assert artifacts.status("base", tiny_preset) == "done"
    assert artifacts.status("sft", tiny_preset) == "stale"
    artifacts.load_model("sft", tiny_preset)  # retrained from the new base
    after = torch.load(artifacts.checkpoint_path("sft", tiny_preset), weights_only=False)
    assert after["extra_state"]["inputs"] == {"base": fingerprint(base["model"])}
    assert not torch.equal(after["model"]["transformer.ln_f.bias"], before["model"]["transformer.ln_f.bias"])
    assert artifacts.status("sft", tiny_preset) == "done"


def test_a_stale_or_missing_input_makes_the_stage_stale(tiny_preset):
    artifacts.load_model("sft", tiny_preset)
    presets.PRESETS[tiny_preset].pretrain = tiny_recipe(steps=6)  # base is stale, sft not rebuilt yet
    assert artifacts.status("sft", tiny_preset) == "stale"
    presets.PRESETS[tiny_preset].pretrain = tiny_recipe()
    assert artifacts.status("sft", tiny_preset) == "done"
    artifacts.checkpoint_path("base", tiny_preset).unlink()
    assert artifacts.status("sft", tiny_preset) == "stale"


def test_fingerprint_depends_on_every_weight_and_name():
    model = torch.nn.Linear(3, 2)
    same = torch.nn.Linear(3, 2)
    same.load_state_dict(model.state_dict())
    assert fingerprint(model) == fingerprint(same) == fingerprint(model.state_dict())
    with torch.no_grad():
        same.bias[1] += 1e-6
    assert fingerprint(same) != fingerprint(model)
    renamed = {f"x.{k}": v for k, v in model.state_dict().items()}
    assert fingerprint(renamed) != fingerprint(model)


def test_a_damaged_or_foreign_checkpoint_is_an_error_naming_the_file(tiny_preset):
    path = artifacts.checkpoint_path("base", tiny_preset)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    with pytest.raises(RuntimeError, match=f"{path} cannot be read .*delete it to retrain"):
        artifacts.status("base", tiny_preset)
    torch.save({"weights": {}}, path)  # a torch file, but not one of ours
    with pytest.raises(RuntimeError, match=f"{path} is not a stage checkpoint .*no model, step"):
        artifacts.status("base", tiny_preset)
    with pytest.raises(RuntimeError, match="base.pt"):  # asked through a stage that uses it
        torch.save({"model": {}, "step": 1, "config": {"max_steps": 1}, "extra_state": {
            "recipe": presets.PRESETS[tiny_preset].sft.as_dict(), "inputs": {"base": "x"}}},
            artifacts.checkpoint_path("sft", tiny_preset))
        artifacts.status("sft", tiny_preset)
