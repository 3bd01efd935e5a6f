"""The artifact helper: load a finished stage, resume a partial one, rebuild a stale one."""
import dataclasses
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rlhf_lite import artifacts, checkpoints, comparisons, doctor, paths, presets, stages
from rlhf_lite.checkpoints import fingerprint
from rlhf_lite.data import file_sha256, write_jsonl
from rlhf_lite.datasource import stage_recipe
from rlhf_lite.dpo import DPOConfig
from rlhf_lite.pretrain import PretrainConfig
from rlhf_lite.reward import RewardConfig
from rlhf_lite.sft import SFTConfig
from rlhf_lite.training import TrainConfig


def tiny_recipe(steps=4):
    return PretrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, batch_size=4,
                          train=TrainConfig(max_steps=steps, warmup_steps=1, eval_interval=0,
                                            desc="pretrain"))


@pytest.fixture
def tiny_preset(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path)
    sft = SFTConfig(batch_size=4, train=TrainConfig(max_steps=2, warmup_steps=1, eval_interval=0,
                                                    desc="sft"))
    monkeypatch.setitem(presets.PRESETS, "tiny",
                        presets.Preset("tiny", base=tiny_recipe(), sft=sft))
    return "tiny"


def test_missing_stage_is_built_then_loaded_without_retraining(tiny_preset, monkeypatch):
    assert artifacts.status("base", tiny_preset) == "missing"
    model = artifacts.load_model("base", tiny_preset)
    assert artifacts.status("base", tiny_preset) == "done"
    assert artifacts.checkpoint_path("base", tiny_preset).exists()
    assert not artifacts.partial_path("base", tiny_preset).exists()  # moved over the final file
    assert not model.training

    def must_not_build(*args):
        raise AssertionError("a finished stage was rebuilt")
    monkeypatch.setattr(artifacts.STAGES["base"], "build", must_not_build)
    again = artifacts.load_model("base", tiny_preset)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_changed_recipe_makes_the_stage_stale_and_rebuilds_it(tiny_preset):
    artifacts.load_model("base", tiny_preset)
    presets.PRESETS[tiny_preset].base = tiny_recipe(steps=6)
    assert artifacts.status("base", tiny_preset) == "stale"
    artifacts.load_model("base", tiny_preset)
    ckpt = checkpoints.read(artifacts.checkpoint_path("base", tiny_preset))
    assert ckpt.step == 6 and artifacts.status("base", tiny_preset) == "done"


def test_run_control_fields_do_not_make_a_stage_stale(tiny_preset):
    artifacts.load_model("base", tiny_preset)
    recipe = tiny_recipe()
    recipe.train = replace(recipe.train, desc="another label", eval_interval=1,
                           checkpoint_interval=2)
    presets.PRESETS[tiny_preset].base = recipe
    assert artifacts.status("base", tiny_preset) == "done"
    recipe.train = replace(recipe.train, lr=1e-2)  # this one changes the result
    assert artifacts.status("base", tiny_preset) == "stale"


def test_interrupted_stage_is_partial_and_resumed(tiny_preset, monkeypatch):
    artifacts.load_model("base", tiny_preset)
    final, partial = (artifacts.checkpoint_path("base", tiny_preset),
                      artifacts.partial_path("base", tiny_preset))
    ckpt = checkpoints.read(final)
    ckpt.step = 2  # as if the run had stopped halfway
    checkpoints.save(ckpt, partial)
    final.unlink()
    assert artifacts.status("base", tiny_preset) == "partial"
    calls = []
    build = artifacts.STAGES["base"].build
    monkeypatch.setattr(artifacts.STAGES["base"], "build",
                        lambda *args: (calls.append(args[4]), build(*args)))
    artifacts.load_model("base", tiny_preset)
    assert calls == [partial] and final.exists() and not partial.exists()
    assert artifacts.status("base", tiny_preset) == "done"


def test_a_failed_rebuild_keeps_the_good_checkpoint(tiny_preset, monkeypatch):
    artifacts.load_model("base", tiny_preset)
    final = artifacts.checkpoint_path("base", tiny_preset)
    before = final.read_bytes()

    def nan_build(*args):
        raise FloatingPointError("pretrain: loss is nan at step 1")
    monkeypatch.setattr(artifacts.STAGES["base"], "build", nan_build)
    for rebuild in (True, False):  # --force, and a recipe change
        presets.PRESETS[tiny_preset].base = tiny_recipe(steps=4 if rebuild else 5)
        with pytest.raises(FloatingPointError):
            artifacts.load_model("base", tiny_preset, rebuild=rebuild)
        assert final.read_bytes() == before  # the last good checkpoint is really kept


def test_changed_data_makes_every_stage_stale(tiny_preset, monkeypatch):
    artifacts.load_model("sft", tiny_preset)
    monkeypatch.setattr(checkpoints, "data_fingerprint", lambda data_dir=None: "other data")
    assert artifacts.status("base", tiny_preset) == "stale"
    assert artifacts.status("sft", tiny_preset) == "stale"


def test_flipped_bytes_in_the_weights_are_found(tiny_preset):
    artifacts.load_model("base", tiny_preset)
    path = artifacts.checkpoint_path("base", tiny_preset)
    ckpt = checkpoints.read(path)
    ckpt.model = {k: v.clone() for k, v in ckpt.model.items()}
    ckpt.model["transformer.ln_f.bias"][0] += 1.0
    recorded = ckpt.fingerprint
    torch.save(dataclasses.asdict(ckpt) | {"fingerprint": recorded}, path)  # no new checksum
    with pytest.raises(RuntimeError, match=f"{path} is damaged"):
        artifacts.status("base", tiny_preset)


def test_a_damaged_partial_file_is_set_aside_and_the_stage_trained_afresh(tiny_preset, capsys):
    straight = artifacts.load_model("base", tiny_preset)  # an uninterrupted run
    final, partial = (artifacts.checkpoint_path("base", tiny_preset),
                      artifacts.partial_path("base", tiny_preset))
    raw = torch.load(final, weights_only=True)
    raw["step"] = 2  # as if the run had been killed halfway
    raw["model"]["transformer.ln_f.bias"][0] += 1.0  # one weight changed, its checksum kept
    torch.save(raw, partial)
    final.unlink()
    assert artifacts.status("base", tiny_preset) == "partial"  # metadata only: cheap
    assert artifacts.partial_state("base", tiny_preset)[0] == "damaged"
    capsys.readouterr()
    model = artifacts.load_model("base", tiny_preset)
    aside = partial.with_name("base.partial.damaged.pt")
    assert (f"{artifacts.shown(partial)} is damaged: its weights do not match the checksum "
            f"written with them: set aside as {artifacts.shown(aside)}; training from scratch"
            in capsys.readouterr().out)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                                 model.state_dict().values()))
    assert aside.exists() and artifacts.partial_state("base", tiny_preset) == ("none", "")
    assert artifacts.status("base", tiny_preset) == "done"


def test_edited_rankings_make_dpo_stale(tiny_preset, monkeypatch):
    tiny = presets.PRESETS[tiny_preset]
    monkeypatch.setitem(presets.PRESETS, tiny_preset, replace(
        tiny, rm=RewardConfig(rounds=1, val_rounds=1, batch_size=64),
        dpo=DPOConfig(batch_size=64, train=TrainConfig(max_steps=None, warmup_steps=1,
                                                       eval_interval=0, desc="dpo"))))
    artifacts.load_model("dpo", tiny_preset)
    assert artifacts.status("dpo", tiny_preset) == "done"
    path = artifacts.rankings_path("train", tiny_preset)
    rankings = comparisons.read_rankings(path)
    write_jsonl(path, [{**r, "ranking": r["ranking"][::-1]} for r in rankings])  # all reversed
    assert artifacts.status("rm", tiny_preset) == "done"  # it wrote them, trained on its own
    assert artifacts.status("dpo", tiny_preset) == "stale"
    artifacts.load_model("dpo", tiny_preset)  # trained again, on the reversed rankings
    ckpt = checkpoints.read(artifacts.checkpoint_path("dpo", tiny_preset))
    assert ckpt.inputs["rankings_train"] == file_sha256(path)[:16]
    assert artifacts.status("dpo", tiny_preset) == "done"
    artifacts.rankings_path("validation", tiny_preset).unlink()
    assert artifacts.status("dpo", tiny_preset) == "stale"  # what it was trained on is unknown


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tiny_preset, tmp_path):
    marker = tmp_path / "payload-ran"
    path = artifacts.checkpoint_path("base", tiny_preset)
    path.parent.mkdir(parents=True)
    torch.save({"model": {}, "format": checkpoints.FORMAT, "payload": Payload(str(marker))}, path)
    for read in (lambda: artifacts.status("base", tiny_preset),
                 lambda: artifacts.load_model("base", tiny_preset),
                 lambda: doctor.check_artifacts(tiny_preset)):
        try:
            result = read()
        except RuntimeError as e:
            assert "is refused" in str(e) and str(path) in str(e)
        else:  # the doctor reports instead of raising
            assert not result.ok and "is refused" in result.detail
        assert not marker.exists()


class Payload:
    """Unpickling this object would create a file: the proof that a checkpoint ran code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_unknown_stage_and_preset_are_clear_errors():
    with pytest.raises(KeyError, match="unknown stage"):
        artifacts.load_model("nope")
    with pytest.raises(KeyError, match="unknown preset"):
        presets.get_preset("nope")


def test_a_stage_is_built_with_its_canonical_thread_count(tiny_preset, monkeypatch):
    seen = []
    build = artifacts.STAGES["base"].build
    monkeypatch.setattr(artifacts.STAGES["base"], "build",
                        lambda *args: (seen.append(torch.get_num_threads()), build(*args)))
    monkeypatch.setattr(artifacts.STAGES["base"], "threads", 2)
    torch.set_num_threads(1)
    try:
        artifacts.load_model("base", tiny_preset)
        assert seen == [2] and torch.get_num_threads() == 1  # restored afterwards
    finally:
        torch.set_num_threads(1)


def test_a_preset_sets_the_thread_count_of_every_stage():
    assert [artifacts.stage_threads(s, "toy") for s in ("base", "ppo", "dpo")] == [2, 1, 1]
    every_core = os.cpu_count() or 1  # gpt2's threads=0
    assert [artifacts.stage_threads(s, "gpt2") for s in ("base", "ppo", "dpo")] == [every_core] * 3
    pinned = replace(presets.get_preset("toy"), threads=3)
    assert [artifacts.stage_threads(s, pinned) for s in ("base", "ppo")] == [3, 3]


def test_a_stage_records_the_fingerprint_of_the_model_it_was_trained_from(tiny_preset):
    base = artifacts.load_model("base", tiny_preset)
    artifacts.load_model("sft", tiny_preset)
    ckpt = checkpoints.read(artifacts.checkpoint_path("sft", tiny_preset))
    assert ckpt.inputs == {"base": fingerprint(base)}
    assert artifacts.status("sft", tiny_preset) == "done"


def test_a_changed_input_model_makes_the_stages_after_it_stale(tiny_preset, monkeypatch):
    artifacts.load_model("sft", tiny_preset)  # builds base, then sft from it
    before = checkpoints.read(artifacts.checkpoint_path("sft", tiny_preset))
    # notebook 1 run again with another seed: same recipe, other weights
    path = artifacts.checkpoint_path("base", tiny_preset)
    base = checkpoints.read(path)
    base.model = {**base.model,
                  "transformer.ln_f.bias": base.model["transformer.ln_f.bias"] + 0.01}
    checkpoints.save(base, path)
    assert artifacts.status("base", tiny_preset) == "done"
    assert artifacts.status("sft", tiny_preset) == "stale"
    artifacts.load_model("sft", tiny_preset)  # retrained from the new base
    after = checkpoints.read(artifacts.checkpoint_path("sft", tiny_preset))
    assert after.inputs == {"base": fingerprint(base.model)}
    assert not torch.equal(after.model["transformer.ln_f.bias"],
                           before.model["transformer.ln_f.bias"])
    assert artifacts.status("sft", tiny_preset) == "done"


def test_a_stale_or_missing_input_makes_the_stage_stale(tiny_preset):
    artifacts.load_model("sft", tiny_preset)
    presets.PRESETS[tiny_preset].base = tiny_recipe(steps=6)  # base is stale, sft not rebuilt yet
    assert artifacts.status("sft", tiny_preset) == "stale"
    presets.PRESETS[tiny_preset].base = tiny_recipe()
    assert artifacts.status("sft", tiny_preset) == "done"
    artifacts.checkpoint_path("base", tiny_preset).unlink()
    assert artifacts.status("sft", tiny_preset) == "stale"


def test_a_bad_setting_stops_a_build_before_it_trains(tiny_preset, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path / "afile")  # as RLHF_ARTIFACTS_DIR

    def must_not_train(*args):
        raise AssertionError("trained, to fail at the first checkpoint save")
    monkeypatch.setattr(artifacts.STAGES["base"], "build", must_not_train)
    with pytest.raises(RuntimeError, match="RLHF_ARTIFACTS_DIR=.* is not a folder.* writable"):
        artifacts.load_model("base", tiny_preset)


def test_why_a_stage_is_stale_and_the_state_of_its_partial_file(tiny_preset, monkeypatch):
    artifacts.load_model("sft", tiny_preset)
    final, partial = (artifacts.checkpoint_path("base", tiny_preset),
                      artifacts.partial_path("base", tiny_preset))
    assert artifacts.stale_reason("base", tiny_preset) == ""
    ckpt = checkpoints.read(final)
    ckpt.step = 2
    checkpoints.save(ckpt, partial)
    assert artifacts.partial_state("base", tiny_preset) == ("resumable", "step 2 of 4")
    raw = {f.name: getattr(ckpt, f.name) for f in dataclasses.fields(ckpt)}  # checksum kept
    torch.save({**raw, "model": {k: v + 1 for k, v in ckpt.model.items()}}, partial)
    state, why = artifacts.partial_state("base", tiny_preset)
    assert state == "damaged" and why.startswith(f"{partial} is damaged: its weights do not match")
    partial.write_bytes(final.read_bytes()[:1000])  # truncated
    state, why = artifacts.partial_state("base", tiny_preset)
    assert state == "damaged" and why.startswith(f"{partial} cannot be read")
    checkpoints.save(ckpt, partial)
    recipe = tiny_recipe()
    presets.PRESETS[tiny_preset].base = replace(recipe, train=replace(recipe.train, lr=1e-2))
    assert artifacts.partial_state("base", tiny_preset) == ("stale",
                                                           "the recipe's train.lr changed")
    assert artifacts.stale_reason("base", tiny_preset) == "the recipe's train.lr changed"
    assert artifacts.stale_reason("sft", tiny_preset) == "its input 'base' is stale, trained first"
    presets.PRESETS[tiny_preset].base = recipe
    monkeypatch.setattr(checkpoints, "data_fingerprint", lambda data_dir=None: "other data")
    assert (artifacts.stale_reason("base", tiny_preset)
            == f"the files under {paths.shown(paths.DATA_DIR)} changed")


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
    with pytest.raises(RuntimeError, match=f"{path} is not a checkpoint of this version"):
        artifacts.status("base", tiny_preset)
    torch.save({"model": {}, "format": checkpoints.FORMAT}, path)  # ours, but incomplete
    with pytest.raises(RuntimeError, match=f"{path} is not a complete checkpoint .*no extra, "):
        artifacts.status("base", tiny_preset)
    preset = presets.PRESETS[tiny_preset]
    with pytest.raises(RuntimeError, match="base.pt"):  # asked through a stage that uses it
        checkpoints.save(checkpoints.Checkpoint(
            {}, step=1, max_steps=1, recipe=stage_recipe(preset.sft, preset.data),
            inputs={"base": "x"}), artifacts.checkpoint_path("sft", tiny_preset))
        artifacts.status("sft", tiny_preset)


def test_messages_show_paths_inside_the_repository_relative(tmp_path):
    # a notebook's committed output must not carry the author's home directory
    inside = paths.REPO_ROOT / "artifacts" / "toy" / "base.pt"
    assert artifacts.shown(inside) == str(Path("artifacts") / "toy" / "base.pt")
    assert artifacts.shown(tmp_path / "base.pt") == str((tmp_path / "base.pt").resolve())


def test_every_stage_has_a_recipe_field_and_no_other_field_is_a_recipe():
    assert sorted(presets.recipe_fields(presets.Preset)) == sorted(stages.STAGES)
    toy = presets.get_preset("toy")
    assert toy.recipe("sft") is toy.sft and presets.get_preset("tiny").recipe("dpo") is None
    with pytest.raises(KeyError, match="no recipe field for stage 'device'"):
        toy.recipe("device")  # a Preset field, but how stages run, not a stage's recipe
