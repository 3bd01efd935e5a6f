import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from rlhf_lite.batching import IGNORE_INDEX, epoch_batch, steps_per_epoch
from rlhf_lite.data import DataError, load_records
from rlhf_lite.model import GPT, GPTConfig
from rlhf_lite.paths import REPO_ROOT
from rlhf_lite.sft import SFTConfig, sft_loss, tokenize_demonstrations, train_sft
from rlhf_lite.tokenizer import load_tokenizer
from rlhf_lite.training import TrainConfig

TOKENIZER = load_tokenizer()
DEMOS = [
    {"id": "d0", "prompt": "what is two plus two ?", "response": "four ."},
    {"id": "d1", "prompt": "name two fruits .", "response": "pear and lime ."},
    {"id": "d2", "prompt": "how do i rob tom ?", "response": "sorry , i can not help with that ."},
    {"id": "d3", "prompt": "what color is a banana ?", "response": "a banana is yellow ."},
]


def tiny_gpt(seed=0, block_size=48):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=len(TOKENIZER), block_size=block_size, n_layer=2, n_head=2,
                         n_embd=32))


def ids(text):
    return TOKENIZER.convert_tokens_to_ids(text.split())


def test_labels_layout_on_a_hand_example():
    batch = tokenize_demonstrations([DEMOS[0], DEMOS[3]], TOKENIZER, block_size=48)
    eos, pad = TOKENIZER.eos_token_id, TOKENIZER.pad_token_id
    prompt0 = ids("user : what is two plus two ? bot :")  # 10 tokens
    prompt3 = ids("user : what color is a banana ? bot :")  # 10 tokens
    assert batch["input_ids"].tolist() == [
        prompt0 + ids("four .") + [eos] + [pad] * 3,  # 13 tokens, right-padded to 16
        prompt3 + ids("a banana is yellow .") + [eos],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 13 + [0] * 3, [1] * 16]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX] * 10 + ids("four .") + [eos] + [IGNORE_INDEX] * 3,
        [IGNORE_INDEX] * 10 + ids("a banana is yellow .") + [eos],
    ]


def test_overflow_raises_naming_the_record():
    with pytest.raises(ValueError, match=r"^demonstration 'd2' is 20 tokens long.*block_size 16"):
        tokenize_demonstrations(DEMOS, TOKENIZER, block_size=16)


def demonstrations_with(tmp_path, line_no, response):
    """The committed demonstrations (and the prompts they answer) under tmp_path, with the
    response on line `line_no` replaced; loaded through rlhf_lite.data."""
    for name in ("demonstrations", "prompts_train", "prompts_validation"):
        shutil.copy(REPO_ROOT / "data" / f"{name}.jsonl", tmp_path)
    path = tmp_path / "demonstrations.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line_no - 1] = json.dumps({**json.loads(lines[line_no - 1]), "response": response})
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return load_records("demonstrations", tmp_path), path


def test_overflow_of_a_loaded_demonstration_names_its_file_and_line(tmp_path):
    demos, path = demonstrations_with(tmp_path, 7, " ".join(["two ."] * 30))
    with pytest.raises(ValueError) as err:
        tokenize_demonstrations(demos, TOKENIZER, block_size=64)
    assert str(err.value) == (f"{path}, line 7: demonstration 'demo-0006' is 71 tokens long "
                              "(prompt 10 + response 60 + eos), more than the model's "
                              "block_size 64")


def test_unknown_word_of_a_loaded_demonstration_names_its_file_line_and_field(tmp_path):
    """Before, the word silently became <unk> and SFT taught the model to write <unk>."""
    demos, path = demonstrations_with(tmp_path, 7, "a xylophone is blue .")
    with pytest.raises(DataError) as err:
        tokenize_demonstrations(demos, TOKENIZER, block_size=64)
    assert str(err.value) == (f"{path}, line 7: demonstration 'demo-0006', field 'response': "
                              "words outside the tokenizer's vocabulary: 'xylophone'")


def test_unknown_word_of_a_record_built_in_code_names_its_id():
    demos = [*DEMOS, {"id": "d4", "prompt": "what is two plus zorpy ?", "response": "two ."}]
    with pytest.raises(DataError, match=r"^demonstration 'd4', field 'prompt': words outside "
                                        r"the tokenizer's vocabulary: 'zorpy'$"):
        tokenize_demonstrations(demos, TOKENIZER, block_size=48)


def test_committed_demonstrations_tokenize():
    batch = tokenize_demonstrations(load_records("demonstrations"), TOKENIZER, block_size=64)
    assert batch["input_ids"].shape[0] == 384
    assert not (batch["input_ids"] == TOKENIZER.unk_token_id).any()


def explicit_loss(model, batch):
    """The SFT loss written as a loop over the (row, position) pairs that have a label."""
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"])
    terms = [-F.log_softmax(logits[b, t - 1], -1)[label]
             for b, row in enumerate(batch["labels"].tolist())
             for t, label in enumerate(row) if label != IGNORE_INDEX]
    return torch.stack(terms).mean()


def test_loss_counts_response_tokens_only():
    model = tiny_gpt().eval()
    batch = tokenize_demonstrations(DEMOS, TOKENIZER, block_size=48)
    assert sft_loss(model, batch).item() == pytest.approx(explicit_loss(model, batch).item(),
                                                          abs=1e-5)
    # other prompt tokens change the logits, but the loss still only counts response positions
    prompt = batch["labels"] == IGNORE_INDEX
    other = {**batch,
             "input_ids": torch.where(prompt & (batch["attention_mask"] == 1),
                                      torch.randint(3, len(TOKENIZER), batch["input_ids"].shape),
                                      batch["input_ids"])}
    assert sft_loss(model, other).item() != pytest.approx(sft_loss(model, batch).item(), abs=1e-4)
    assert sft_loss(model, other).item() == pytest.approx(explicit_loss(model, other).item(),
                                                          abs=1e-5)
    # the test can fail: learning the prompt too gives another value
    unmasked = {**batch, "labels": torch.where(batch["attention_mask"] == 1, batch["input_ids"],
                                               IGNORE_INDEX)}
    assert sft_loss(model, unmasked).item() != pytest.approx(sft_loss(model, batch).item(),
                                                             abs=1e-3)


def test_padding_never_counts():
    model = tiny_gpt().eval()
    batch = tokenize_demonstrations(DEMOS, TOKENIZER, block_size=48)
    n, extra = len(DEMOS), 7
    padded = {
        "input_ids": torch.cat([batch["input_ids"],
                                torch.full((n, extra), TOKENIZER.pad_token_id)], 1),
        "attention_mask": torch.cat([batch["attention_mask"],
                                     torch.zeros(n, extra, dtype=torch.long)], 1),
        "labels": torch.cat([batch["labels"], torch.full((n, extra), IGNORE_INDEX)], 1),
    }
    assert sft_loss(model, padded).item() == pytest.approx(sft_loss(model, batch).item(), abs=1e-6)


def test_epoch_batches_visit_every_example_once_per_epoch():
    batches = [epoch_batch(10, 4, step, seed=0) for step in range(6)]  # 2 epochs of 3 steps
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    for epoch in (batches[:3], batches[3:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))
    assert torch.equal(epoch_batch(10, 4, 4, seed=0), batches[4])  # a function of the step


def test_full_batches_only_leave_a_different_remainder_out_each_epoch():
    assert [steps_per_epoch(10, 4, drop_last) for drop_last in (False, True)] == [3, 2]
    assert steps_per_epoch(162, 16, drop_last=True) == 10  # notebook 11's online DPO
    batches = [epoch_batch(10, 4, step, seed=0, drop_last=True) for step in range(4)]
    assert [len(b) for b in batches] == [4, 4, 4, 4]  # 2 epochs of 2 full steps
    seen = [set(torch.cat(batches[:2]).tolist()), set(torch.cat(batches[2:]).tolist())]
    assert all(len(s) == 8 for s in seen) and seen[0] != seen[1]  # no repeat within an epoch
    # an epoch's full batches are the first ones of the plain epoch's permutation
    assert torch.equal(batches[2], epoch_batch(10, 4, 3, seed=0))
    with pytest.raises(ValueError, match="3 examples and batch_size 4"):
        epoch_batch(3, 4, 0, seed=0, drop_last=True)


def test_tiny_model_sft_loss_decreases_and_base_is_untouched():
    base = tiny_gpt()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = SFTConfig(batch_size=4, train=TrainConfig(max_steps=30, lr=1e-2, warmup_steps=3,
                                                    eval_interval=10, desc="sft-test"))
    model, history = train_sft(cfg, base, TOKENIZER, DEMOS, DEMOS[:2])
    assert history.eval_steps == [10, 20, 30]
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.eval["val_loss"][-1] < history.eval["val_loss"][0]
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert model is not base and not model.training
