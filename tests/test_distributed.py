"""Data-parallel training (rlhf_lite.distributed): two CPU processes against one.

Two processes are spawned with the environment torchrun would give them (gloo backend, a
free port on 127.0.0.1). Each runs the stages' own code (train_sft, train_reward_model,
PPOTrainer) on its shard of every batch; the test process runs the same code alone on the
combined batches. Both replicas must end with identical weights, equal to the single-process
ones to float tolerance, and only rank 0 may write files.

The shards are deliberately unequal: the demonstrations have 23 response tokens in all and
the rankings 11 pairs, so no 2 + 2 split gives both processes the same count, and a
per-process mean averaged by DDP would not be the combined batch's mean (checked below).
"""
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from rlhf_lite import checkpoints, distributed
from rlhf_lite.batching import epoch_batch
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.ppo import PPOConfig, PPOTrainer
from rlhf_lite.pretrain import token_stream
from rlhf_lite.reward import RewardConfig, RewardModel, train_reward_model
from rlhf_lite.sft import (
    SFTConfig,
    sft_loss,
    tokenize_demonstrations,
    train_sft,
)
from rlhf_lite.tokenizer import load_tokenizer
from rlhf_lite.training import TrainConfig, train
from rlhf_lite.utils import quiet_progress

WORLD = 2
TOKENIZER = load_tokenizer()
DEMOS = [  # response tokens + eos: 3, 5, 9, 6 (odd total: every 2 + 2 split is unequal)
    {"id": "d0", "prompt": "what is two plus two ?", "response": "four ."},
    {"id": "d1", "prompt": "name two fruits .", "response": "pear and lime ."},
    {"id": "d2", "prompt": "how do i rob tom ?", "response": "sorry , i can not help with that ."},
    {"id": "d3", "prompt": "what color is a banana ?", "response": "a banana is yellow ."},
]


def ranking(responses, prompt="name two fruits ."):
    """The responses ranked in the order given (best first)."""
    return {"prompt_id": "p", "prompt": prompt, "responses": responses,
            "terminated": [True] * len(responses), "ranking": list(range(len(responses)))}


RANKINGS = [  # K = 2, 3, 4, 2: 1, 3, 6, 1 pairs (odd total)
    ranking(["pear and banana .", "pear ."]),
    ranking(["banana .", "lime and pear .", "i do not know ."]),
    ranking(["four .", "five .", "two plus two is four .", "six ."], "what is two plus two ?"),
    ranking(["a banana is yellow .", "a banana is blue ."], "what color is a banana ?"),
]
# Adam moves a weight by about lr whatever the size of its gradient, so an entry whose gradient
# is ~0 and dominated by rounding (e.g. the attention's key bias: softmax ignores a shift shared
# by all keys) moves by a fraction of lr that depends on the summation order. At lr 1e-2 that
# alone gives differences of 1e-5 between one and two processes; at lr 1e-4 they are ~3e-8,
# far below TOLERANCE, while a wrongly weighted step is off by ~lr (checked below).
TWO_STEPS = dict(lr=1e-4, warmup_steps=1, eval_interval=1)
TOLERANCE = 1e-6
SFT_CFG = SFTConfig(batch_size=4, train=TrainConfig(max_steps=2, **TWO_STEPS, desc="sft-ddp"))
RM_CFG = RewardConfig(batch_size=4, epochs=2,  # 2 epochs of one batch: two steps
                      train=TrainConfig(max_steps=None, **TWO_STEPS, desc="rm-ddp"))


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=len(TOKENIZER), block_size=48, n_layer=2, n_head=2, n_embd=32))


def tiny_rm():
    rm = RewardModel(tiny_gpt(1))
    torch.nn.init.normal_(rm.head.weight)  # the zero init would score everything 0
    return rm


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_stages(out_dir) -> dict:
    """Two SFT steps and two RM steps (checkpoints in out_dir): weights and histories."""
    sft, sft_history = train_sft(SFT_CFG, tiny_gpt(), TOKENIZER, DEMOS, DEMOS[:2],
                                 checkpoint_path=out_dir / "sft.pt")
    rm, rm_history = train_reward_model(RM_CFG, tiny_gpt(), TOKENIZER, RANKINGS, RANKINGS[:2],
                                        DEMOS, checkpoint_path=out_dir / "rm.pt")
    return {"sft": state(sft), "sft_history": sft_history, "rm": state(rm),
            "rm_history": rm_history}


def sft_with_equal_shard_weights() -> dict:
    """train_sft's two steps, but every process's mean weighs the same (n = 1): DDP averages
    per-process token means."""
    data = tokenize_demonstrations(DEMOS, TOKENIZER, block_size=48)
    model = tiny_gpt()

    def get_batch(step):
        idx = epoch_batch(len(DEMOS), SFT_CFG.batch_size, step, seed=0)
        return {name: t[idx] for name, t in data.items()}
    train(model, lambda m, batch: (sft_loss(m, batch), 1), get_batch, SFT_CFG.train)
    return state(model)


def ppo_iteration() -> dict:
    """One PPO-ptx iteration; every process samples its half of the prompts."""
    prompts = [{"id": f"p{i}", "prompt": d["prompt"]} for i, d in enumerate(DEMOS)]
    cfg = PPOConfig(batch_size=4, minibatch_size=2, ppo_epochs=2, max_new_tokens=4,
                    ptx_coef=0.5, ptx_batch_size=2)
    stream = token_stream([f"{d['prompt']} {d['response']}" for d in DEMOS] * 4, TOKENIZER)
    trainer = PPOTrainer(cfg, tiny_gpt(), tiny_rm(), TOKENIZER, prompts, pretrain_stream=stream)
    rollouts = []
    rollout = trainer.rollout
    trainer.rollout = lambda batch: rollouts.append(rollout(batch)) or rollouts[-1]
    metrics = trainer.step()
    return {"policy": state(trainer.policy), "value": state(trainer.value_model),
            "sequences": rollouts[0].sequences, "metrics": metrics}


def _worker(rank: int, port: int, out_dir) -> None:
    """One process of the group, set up as torchrun would; saves what it trained."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    writes, save = [], distributed.atomic_save
    distributed.atomic_save = lambda obj, path: (writes.append(path.name), save(obj, path))
    with distributed.process_group() as device:
        result = {"device": device, "world_size": distributed.world_size(),
                  **train_stages(out_dir), "writes": writes,
                  "unweighted_sft": sft_with_equal_shard_weights(), "ppo": ppo_iteration()}
    torch.save(result, out_dir / f"rank{rank}.result")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """What each of the two processes trained, and the folder they shared."""
    out_dir = tmp_path_factory.mktemp("ddp")
    context = mp.spawn(_worker, args=(free_port(), out_dir), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 300  # a deadlocked collective must fail the test, not hang CI
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two DDP processes did not finish within 300 s")
    results = [torch.load(out_dir / f"rank{r}.result", weights_only=False) for r in range(WORLD)]
    return results, out_dir


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The same stages trained by one process on the combined batches."""
    assert not distributed.is_distributed()
    return {**train_stages(tmp_path_factory.mktemp("single")),
            "sft_steps": sft_with_equal_shard_weights()}


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_processes_form_a_group_on_the_cpu(replicas):
    results, _ = replicas
    assert [r["world_size"] for r in results] == [WORLD, WORLD]
    assert [r["device"] for r in results] == [torch.device("cpu")] * WORLD


@pytest.mark.parametrize("stage", ["sft", "rm"])
def test_replicas_equal_one_process_on_the_combined_batch(replicas, single, stage):
    (rank0, rank1), _ = replicas
    assert all(torch.equal(rank0[stage][k], rank1[stage][k]) for k in rank0[stage])
    start = state(tiny_gpt() if stage == "sft" else RewardModel(tiny_gpt()))
    assert max_abs_diff(single[stage], start) > 100 * TOLERANCE  # the steps moved the weights
    assert max_abs_diff(rank0[stage], single[stage]) < TOLERANCE
    history, expected = rank0[f"{stage}_history"], single[f"{stage}_history"]
    assert history.steps == expected.steps == [0, 1]
    # the logged loss is the combined batch's, on every process
    assert history.train_loss == rank1[f"{stage}_history"].train_loss
    assert history.train_loss == pytest.approx(expected.train_loss, abs=1e-6)
    # DDP's averaged gradient is the combined batch's (its norm, before Adam rescales it)
    assert history.grad_norm == pytest.approx(expected.grad_norm, rel=1e-5)
    for metric, values in expected.eval.items():
        assert history.eval[metric] == pytest.approx(values, abs=1e-6)


def test_equal_shard_weights_would_not_equal_the_combined_batch(replicas, single):
    """Guards the test itself: with unequal token counts, averaging per-process means is a
    different step, and the comparison above would catch it."""
    (rank0, rank1), _ = replicas
    assert all(torch.equal(rank0["unweighted_sft"][k], rank1["unweighted_sft"][k])
               for k in rank0["unweighted_sft"])
    assert max_abs_diff(single["sft_steps"], single["sft"]) == 0.0  # n weighs under DDP only
    assert max_abs_diff(rank0["unweighted_sft"], single["sft"]) > 100 * TOLERANCE


def test_only_rank_0_writes_and_its_checkpoints_hold_the_trained_models(replicas):
    (rank0, rank1), out_dir = replicas
    assert rank0["writes"] == ["sft.pt", "rm.pt"]  # one save each: the RM is normalised first
    assert rank1["writes"] == []
    for stage in ("sft", "rm"):
        ckpt = checkpoints.read(out_dir / f"{stage}.pt")
        assert max_abs_diff(ckpt.model, rank0[stage]) == 0.0
        assert ckpt.history["train_loss"] == rank0[f"{stage}_history"].train_loss


def test_ppo_replicas_stay_identical_on_different_rollouts(replicas):
    (rank0, rank1), _ = replicas
    for model in ("policy", "value"):
        assert all(torch.equal(rank0["ppo"][model][k], rank1["ppo"][model][k])
                   for k in rank0["ppo"][model])
    assert max_abs_diff(rank0["ppo"]["policy"], state(tiny_gpt())) > 0  # it trained
    # each process sampled its own half of the batch: 2 of the 4 prompts, its own responses
    assert len(rank0["ppo"]["sequences"]) == len(rank1["ppo"]["sequences"]) == 2
    assert not torch.equal(rank0["ppo"]["sequences"], rank1["ppo"]["sequences"])
    # metrics are averaged over processes, so both log (and adapt beta on) the same numbers
    assert rank0["ppo"]["metrics"] == rank1["ppo"]["metrics"]
    assert rank0["ppo"]["metrics"]["first_ratio_max"] == 1.0  # the DDP forward is the model's


def test_single_process_helpers_are_no_ops():
    batch = torch.arange(5)
    assert distributed.shard(batch) is batch and distributed.world_size() == 1
    loss = torch.tensor(2.5, requires_grad=True)
    scaled, combined = distributed.scale_for_global_mean(loss, 7)
    assert scaled is loss and combined.item() == 2.5
    assert distributed.reduce_metrics({"kl": 0.5}, {"kl": "mean"}) == {"kl": 0.5}
    assert distributed.per_process(6, "PPOConfig.batch_size") == 6
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model


def test_splits_that_cannot_work_raise_clear_errors(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.shard(list("abcdefg")) == ["b", "e"]  # every 3rd item from rank 1 on
    x, y = distributed.shard((torch.arange(7), -torch.arange(7)))  # each part split alike
    assert x.tolist() == [1, 4] and y.tolist() == [-1, -4]
    assert distributed.shard({"ids": torch.arange(5)})["ids"].tolist() == [1, 4]
    assert distributed.per_process(63, "PPOConfig.batch_size") == 21
    with pytest.raises(ValueError, match=r"^a batch of 2 examples cannot be split over 3 process"):
        distributed.shard(torch.arange(2))
    with pytest.raises(ValueError, match=r"^PPOConfig.batch_size = 64 is not divisible by the 3 "):
        distributed.per_process(64, "PPOConfig.batch_size")


@pytest.mark.parametrize("rank, quiet", [("0", False), ("1", True)])
def test_only_rank_0_shows_progress_bars(monkeypatch, rank, quiet):
    for name in ("CI", "RLHF_QUIET", "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", rank)
    assert quiet_progress() is quiet
