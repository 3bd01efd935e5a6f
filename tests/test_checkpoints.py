"""The one checkpoint format: round trip, what makes it stale, and what it refuses to do."""
import dataclasses
import errno
import shutil
from dataclasses import replace

import pytest
import torch

from rlhf_lite import checkpoints, paths, utils
from rlhf_lite.checkpoints import Checkpoint
from rlhf_lite.ppo import PPOConfig
from rlhf_lite.sft import SFTConfig
from rlhf_lite.training import TrainConfig


def weights(value=1.0):
    return {"w": torch.full((2, 3), value), "b": torch.zeros(3)}


def test_a_checkpoint_round_trips_with_plain_data_only(tmp_path):
    path = tmp_path / "x.pt"
    saved = Checkpoint(weights(), step=3, max_steps=4, model_config={"n_layer": 1},
                       recipe={"lr": 0.1}, inputs={"sft": "abc"},
                       history={"steps": [0], "seconds": 1.5}, extra={"bias_shift": -0.25},
                       resume={"rng": torch.get_rng_state()})
    checkpoints.save(saved, path)
    got = checkpoints.read(path)
    assert got.fingerprint == checkpoints.fingerprint(weights()) == saved.fingerprint
    assert (got.step, got.max_steps, got.done) == (3, 4, False)
    assert (got.recipe, got.inputs, got.history, got.extra) == (
        {"lr": 0.1}, {"sft": "abc"}, {"steps": [0], "seconds": 1.5}, {"bias_shift": -0.25})
    assert got.seconds == 1.5
    assert all(torch.equal(got.model[k], v) for k, v in weights().items())
    torch.load(path, weights_only=True)  # what read does: no code can run
    assert checkpoints.verified_fingerprint(path) == saved.fingerprint


def test_non_finite_weights_are_never_written(tmp_path):
    path = tmp_path / "x.pt"
    checkpoints.save(Checkpoint(weights(), step=1, max_steps=1), path)
    before = path.read_bytes()
    bad = weights(float("nan"))
    with pytest.raises(FloatingPointError, match=r"not saving .*x.pt: 6 of 9 weights are NaN"):
        checkpoints.save(Checkpoint(bad, step=2, max_steps=2), path)
    assert path.read_bytes() == before


def test_run_control_fields_are_not_part_of_the_result():
    cfg = SFTConfig(train=TrainConfig(desc="sft"))
    saved = dataclasses.asdict(cfg)  # as a checkpoint stores it
    steered = replace(cfg, train=replace(cfg.train, eval_interval=7, checkpoint_interval=3,
                                         desc="other"))
    assert checkpoints.result_fields(saved, cfg) == checkpoints.result_fields(
        dataclasses.asdict(steered), steered)
    assert "desc" not in checkpoints.result_fields(saved, cfg)["train"]
    assert checkpoints.changed_fields(saved, steered) == []
    lr = replace(cfg, train=replace(cfg.train, lr=1.0))
    assert checkpoints.changed_fields(saved, lr) == ["train.lr"]  # what makes it stale
    assert checkpoints.changed_fields(saved, replace(cfg, batch_size=5)) == ["batch_size"]
    ppo = PPOConfig()
    assert not checkpoints.changed_fields(dataclasses.asdict(ppo),
                                          replace(ppo, checkpoint_interval=1))


def test_a_field_steers_the_run_because_its_config_says_so_not_by_its_name():
    steering = {f"{cls.__name__}.{f.name}" for cls in (TrainConfig, PPOConfig, SFTConfig)
                for f in dataclasses.fields(cls) if f.metadata.get("run_control")}
    assert steering == {"TrainConfig.eval_interval", "TrainConfig.checkpoint_interval",
                        "TrainConfig.desc", "PPOConfig.checkpoint_interval"}

    @dataclasses.dataclass
    class Recipe:  # a result field that happens to share a run-control field's name
        desc: str = utils.rule("a", utils.text())

    assert checkpoints.changed_fields({"desc": "a"}, Recipe(desc="b")) == ["desc"]
    # a field the saved recipe has and the config no longer has: another recipe
    assert checkpoints.changed_fields({"desc": "a", "gone": 1}, Recipe()) == ["gone"]


def test_damaged_weights_fail_the_checksum(tmp_path):
    path = tmp_path / "x.pt"
    checkpoints.save(Checkpoint(weights(), step=1, max_steps=1), path)
    raw = torch.load(path, weights_only=True)
    raw["model"]["w"][0, 0] = 2.0  # flipped bytes, the recorded fingerprint unchanged
    torch.save(raw, path)
    with pytest.raises(RuntimeError, match="x.pt is damaged"):
        checkpoints.verified_fingerprint(path)
    assert checkpoints.read(path).step == 1  # its metadata still reads (`artifacts.status`)
    with pytest.raises(checkpoints.DamagedCheckpoint, match="x.pt is damaged: its weights do not "
                       "match the checksum written with them; delete it to retrain the stage"):
        checkpoints.read(path, verify=True)  # what every read that loads weights asks
    assert checkpoints.set_aside(path) == tmp_path / "x.damaged.pt"
    assert list(tmp_path.iterdir()) == [tmp_path / "x.damaged.pt"]


def test_a_full_disk_is_reported_as_such_with_the_file_and_the_old_file_stays(
        tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    checkpoints.save(Checkpoint(weights(), step=1, max_steps=1), path)
    before = path.read_bytes()

    def full_disk(obj, f):  # what torch.save says when the disk fills up mid-write
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos 620224 vs 620116")
    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(utils.shutil, "disk_usage", lambda d: type("U", (), {"free": 512})())
    with pytest.raises(OSError, match=r"could not write .*x.pt: the disk is full") as info:
        checkpoints.save(Checkpoint(weights(2.0), step=1, max_steps=1), path)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]  # no temp file


def test_text_files_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    utils.atomic_write_text(path, "old\n")

    class Interrupted(Exception):
        pass

    class KilledMidWrite:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, text):
            raise Interrupted
    monkeypatch.setattr(utils, "open", lambda *args, **kw: KilledMidWrite(), raising=False)
    with pytest.raises(Interrupted):
        utils.atomic_write_text(path, "new\n" * 1000)
    monkeypatch.undo()
    assert path.read_text() == "old\n" and list(tmp_path.iterdir()) == [path]


def test_the_data_fingerprint_changes_with_any_data_file(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(paths.DATA_DIR, data)
    before = checkpoints.data_fingerprint(data)
    assert before == checkpoints.data_fingerprint(paths.DATA_DIR)
    demos = data / "demonstrations.jsonl"
    demos.write_text("".join(demos.read_text().splitlines(keepends=True)[:-1]))  # one deleted
    assert checkpoints.data_fingerprint(data) != before
    shutil.copy(paths.DATA_DIR / "demonstrations.jsonl", demos)
    assert checkpoints.data_fingerprint(data) == before
    vocab = data / "tokenizer" / "tokenizer.json"
    vocab.write_text(vocab.read_text().replace('"four"', '"fuor"'))  # a swapped token
    assert checkpoints.data_fingerprint(data) != before
    saved = Checkpoint(weights(), step=1, max_steps=1)
    checkpoints.save(saved, tmp_path / "x.pt")
    assert checkpoints.read(tmp_path / "x.pt").data == checkpoints.data_fingerprint()


def test_the_data_fingerprint_changes_with_the_judge(monkeypatch):
    """A new gold labeler makes every trained stage stale, like new data files do."""
    before = checkpoints.data_fingerprint()
    monkeypatch.setattr(checkpoints, "JUDGE_VERSION", checkpoints.JUDGE_VERSION + 1)
    assert checkpoints.data_fingerprint() != before
    monkeypatch.undo()
    assert checkpoints.data_fingerprint() == before
