"""transformers interop: our GPT against GPT2LMHeadModel on the same weights (offline: a tiny
random GPT-2 and a byte-level BPE tokenizer are written to a temporary folder)."""
import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, pipeline

from rlhf_lite.chat import format_prompt
from rlhf_lite.generation import generate
from rlhf_lite.hf import (
    PAD_TOKEN,
    config_from_hf,
    export,
    from_hf,
    load_pretrained,
    resize_vocab,
    save_random_gpt2,
    to_hf,
)
from rlhf_lite.model import GPT, GPTConfig, position_ids_from_mask
from rlhf_lite.pretrain import lm_loss
from rlhf_lite.tokenizer import load_tokenizer, never_generated

TEXTS = ["user : what is two plus two ? bot : four .",
         "user : name three fruits . bot : apple , pear , plum .",
         "the cat sat on the mat . the dog did not ."] * 4
TOL = 1e-4  # float32 parity asked by the course design


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Make every weight clearly non-trivial (LayerNorm gains != 1, biases != 0, large
    matrices), so a missed transpose or swapped tensor changes the logits far beyond TOL."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = save_random_gpt2(tmp_path_factory.mktemp("gpt2"), TEXTS, n_layer=2, n_head=2,
                            n_embd=32, n_positions=64)
    model = GPT2LMHeadModel.from_pretrained(path)
    _perturb(model, seed=0)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_model(folder):
    return GPT2LMHeadModel.from_pretrained(folder).eval()


def _left_padded(vocab_size: int, lengths=(9, 5, 1), seed: int = 1):
    """Random ids (B, T) left-padded to the longest row, with their mask; pad id = 0."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, T - n:] = torch.randint(1, vocab_size, (n,), generator=g)
        mask[i, T - n:] = 1
    return ids, mask


def _max_diff(ours: GPT, theirs, ids, mask=None) -> float:
    """Max |logit difference| over real positions; transformers gets explicit position ids
    under left padding (it would count pads as positions otherwise)."""
    with torch.no_grad():
        if mask is None:
            diff = ours(ids) - theirs(ids).logits
        else:
            diff = (ours(ids, attention_mask=mask)
                    - theirs(ids, attention_mask=mask,
                             position_ids=position_ids_from_mask(mask)).logits)
            diff = diff[mask.bool()]  # pad positions hold finite garbage on both sides
    return diff.abs().max().item()


def test_from_hf_logits_match_transformers(hf_model):
    ours = from_hf(hf_model).eval()
    ids = torch.randint(0, hf_model.config.vocab_size, (3, 12),
                        generator=torch.Generator().manual_seed(0))
    logits = hf_model(ids).logits
    assert logits.std() > 1.0  # the weights really matter: a wrong layout would show
    plain = _max_diff(ours, hf_model, ids)
    padded = _max_diff(ours, hf_model, *_left_padded(hf_model.config.vocab_size))
    print(f"\nfrom_hf: max |logit diff| {plain:.2e} unpadded, {padded:.2e} left-padded")
    assert plain < TOL and padded < TOL


def test_to_hf_logits_match_ours():
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()
    _perturb(ours, seed=1)
    theirs = to_hf(ours).eval()
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(2))
    plain = _max_diff(ours, theirs, ids)
    padded = _max_diff(ours, theirs, *_left_padded(97))
    print(f"\nto_hf: max |logit diff| {plain:.2e} unpadded, {padded:.2e} left-padded")
    assert plain < TOL and padded < TOL


def test_left_padding_changes_nothing_for_real_tokens(hf_model):
    """Left-padded rows give the logits of the same rows run alone (both models)."""
    ours = from_hf(hf_model).eval()
    ids, mask = _left_padded(hf_model.config.vocab_size)
    with torch.no_grad():
        batch = ours(ids, attention_mask=mask)
        for i in range(len(ids)):
            alone = ids[i][mask[i].bool()][None]  # (1, n)
            torch.testing.assert_close(batch[i][mask[i].bool()], ours(alone)[0], atol=TOL, rtol=0)
            torch.testing.assert_close(batch[i][mask[i].bool()], hf_model(alone).logits[0],
                                       atol=TOL, rtol=0)


def test_round_trip_reproduces_the_state_dict_exactly(hf_model):
    before = hf_model.state_dict()
    after = to_hf(from_hf(hf_model)).state_dict()
    assert set(after) == set(before)
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
    back = to_hf(from_hf(hf_model))
    assert back.lm_head.weight is back.transformer.wte.weight  # still tied


def test_round_trip_keeps_our_weight_tying_and_layout(hf_model):
    ours = from_hf(hf_model)
    assert ours.lm_head.weight is ours.transformer.wte.weight
    # Conv1D (in, out) became nn.Linear (out, in)
    assert torch.equal(ours.transformer.h[0].attn.c_proj.weight,
                       hf_model.transformer.h[0].attn.c_proj.weight.t())
    again = from_hf(to_hf(ours))
    for name, tensor in ours.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_greedy_generate_matches_transformers(folder):
    ours, tokenizer = load_pretrained(folder)
    theirs = to_hf(ours, tokenizer).eval()
    enc = tokenizer(["user : what is two plus two ? bot :", "the cat"], padding=True,
                    return_tensors="pt")
    assert (enc["attention_mask"][1] == 0).any()  # left padding is exercised
    kwargs = dict(max_new_tokens=12, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    mine = generate(ours, enc["input_ids"], enc["attention_mask"], greedy=True, **kwargs)
    with torch.no_grad():
        reference = theirs.generate(**enc, do_sample=False, **kwargs)
    assert torch.equal(mine, reference)


def _greedy(gpt: GPT, tokenizer, folder, prompt: str, max_new_tokens: int = 12):
    """Greedy continuations of `prompt`, (ours, a transformers pipeline's on `folder`), each as
    (token ids, new text), the pipeline's decoded by the tokenizer it loaded. Ours suppresses
    the tokens our stages never sample, as the export's generation config tells theirs."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    mine = generate(gpt, ids, max_new_tokens=max_new_tokens, greedy=True,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                    suppress_token_ids=never_generated(tokenizer))[0].tolist()
    pipe = pipeline("text-generation", model=str(folder))
    theirs = pipe(prompt, max_new_tokens=max_new_tokens, do_sample=False,
                  return_tensors=True)[0]["generated_token_ids"]
    P = ids.shape[1]
    return ((mine, tokenizer.decode(mine[P:], skip_special_tokens=True)),
            (theirs, pipe.tokenizer.decode(theirs[P:], skip_special_tokens=True)))


def test_export_runs_in_a_pipeline_like_generate_with_the_worlds_tokenizer(tmp_path):
    """A toy GPT taught one answer (ending in eos) gives the same greedy text through
    `pipeline("text-generation")` on its export: tokenizer, eos stop and pad all travel."""
    tokenizer = load_tokenizer()
    prompt, answer = format_prompt("what is two plus two ?"), "four ."
    ids = tokenizer(f"{prompt} {answer}")["input_ids"] + [tokenizer.eos_token_id]
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=32, n_layer=1, n_head=2, n_embd=32))
    optimizer = torch.optim.AdamW(gpt.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        lm_loss(gpt, (x, y)).backward()
        optimizer.step()
    gpt.eval()
    export(gpt, tokenizer, tmp_path)
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (tokenizer.eos_token_id,
                                                                      tokenizer.pad_token_id)
    ours, theirs = _greedy(gpt, tokenizer, tmp_path, prompt)
    assert ours == theirs and ours[1] == answer
    assert ours[0][-1] == tokenizer.eos_token_id  # stopped at eos (without it: eos to the cap)


def test_export_saves_and_reloads_a_gpt2_checkpoint(folder, tmp_path):
    ours, tokenizer = load_pretrained(folder)
    export(ours, tokenizer, tmp_path)
    mine, theirs = _greedy(ours, tokenizer, tmp_path, "user : name three fruits . bot :")
    assert mine == theirs and mine[1]  # random weights, but the same non-empty text
    again, tokenizer2 = load_pretrained(tmp_path)
    assert tokenizer2.pad_token_id == tokenizer.pad_token_id  # the added pad is kept, not re-added
    for name, tensor in ours.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    config = GPT2LMHeadModel.from_pretrained(tmp_path).config
    assert ((config.eos_token_id, config.pad_token_id)
            == (tokenizer.eos_token_id, tokenizer.pad_token_id))


def test_load_pretrained_adds_a_pad_distinct_from_eos(folder, hf_model):
    gpt, tokenizer = load_pretrained(folder)
    assert tokenizer.pad_token == PAD_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "left"
    assert gpt.config.vocab_size == len(tokenizer) == hf_model.config.vocab_size + 1
    assert gpt.config.dropout == 0.0 and not gpt.training
    wte = gpt.transformer.wte.weight
    torch.testing.assert_close(wte[tokenizer.pad_token_id], wte[:-1].mean(0))  # the mean row
    # the original vocabulary's logits are unchanged by the extra row
    ids = torch.randint(0, hf_model.config.vocab_size, (2, 8),
                        generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(gpt(ids)[..., :-1], hf_model(ids).logits, atol=TOL, rtol=0)
    # masks built by the tokenizer never confuse eos with pad
    enc = tokenizer(["the cat<|endoftext|>", "the cat sat on the mat<|endoftext|>"], padding=True)
    for ids_row, mask_row in zip(enc["input_ids"], enc["attention_mask"]):
        assert ids_row[-1] == tokenizer.eos_token_id and mask_row[-1] == 1
        assert all((i == tokenizer.pad_token_id) == (m == 0) for i, m in zip(ids_row, mask_row))


def test_load_pretrained_replaces_a_pad_equal_to_eos(folder, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token  # the common shortcut RLHF cannot use
    tokenizer.save_pretrained(tmp_path)
    GPT2LMHeadModel.from_pretrained(folder).save_pretrained(tmp_path)
    _, loaded = load_pretrained(tmp_path)
    assert loaded.pad_token == PAD_TOKEN and loaded.pad_token_id != loaded.eos_token_id


def test_load_pretrained_names_a_missing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="no-such-folder"):
        load_pretrained(tmp_path / "no-such-folder")


def test_resize_vocab_rejects_shrinking():
    gpt = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="smaller"):
        resize_vocab(gpt, 9)


@pytest.mark.parametrize("field, value, message", [
    ("activation_function", "relu", "activation_function"),
    ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx"),
    ("n_inner", 100, "n_inner"),
    ("attn_pdrop", 0.3, "dropouts differ"),
])
def test_unsupported_gpt2_variants_are_refused(field, value, message):
    config = GPT2Config(vocab_size=10, n_positions=8, n_layer=1, n_head=1, n_embd=8,
                        **{field: value})
    with pytest.raises(ValueError, match=message):
        config_from_hf(config)


def test_dropout_can_be_overridden():
    config = GPT2Config(vocab_size=10, n_positions=8, n_layer=1, n_head=1, n_embd=8, attn_pdrop=0.3)
    assert config_from_hf(config, dropout=0.0).dropout == 0.0


def test_to_hf_refuses_a_model_without_biases():
    gpt = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, bias=False))
    with pytest.raises(ValueError, match="bias"):
        to_hf(gpt)
