import dataclasses

import pytest
import torch

from rlhf_lite.model import GPT, GPTConfig, KVCache, position_ids_from_mask

TINY = GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32)
ATOL = 1e-5


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(dataclasses.replace(TINY, **overrides)).eval()


def sdpa_and_math_models():
    """Two models with identical weights, one per attention implementation."""
    sdpa = make_model(use_sdpa=True)
    math = make_model(use_sdpa=False)
    math.load_state_dict(sdpa.state_dict())
    return sdpa, math


def left_padded_batch(seqs, pad_id=0):
    """Left-pad a list of 1-D LongTensors -> input_ids, attention_mask (B, P)."""
    P = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), P), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), P, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, P - len(s):] = s
        mask[i, P - len(s):] = 1
    return ids, mask


def random_seqs(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, TINY.vocab_size, (n,), generator=g) for n in lengths]


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=50, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(vocab_size=50, n_layer=-1)


def test_gpt2_parameter_names():
    names = set(make_model().state_dict())
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight",
                "transformer.ln_f.weight", "transformer.ln_f.bias"}
    for i in range(TINY.n_layer):
        for sub in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            expected |= {f"transformer.h.{i}.{sub}.weight", f"transformer.h.{i}.{sub}.bias"}
    assert names == expected


def test_tied_embeddings():
    model = make_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


@pytest.mark.parametrize("bias", [True, False])
def test_num_params_formula(bias):
    model = make_model(bias=bias)
    V, L, C, n = TINY.vocab_size, TINY.block_size, TINY.n_embd, TINY.n_layer
    # per block: c_attn 3C^2, attn c_proj C^2, c_fc 4C^2, mlp c_proj 4C^2 weights = 12 C^2;
    # biases 3C + C + 4C + C = 9C and two LayerNorms 4C = 13C (LayerNorm weights only: 2C)
    per_block = 12 * C * C + (13 * C if bias else 2 * C)
    ln_f = 2 * C if bias else C
    total = V * C + L * C + n * per_block + ln_f  # wte counted once: lm_head is tied to it
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - L * C


def test_init_scales():
    model = make_model(n_embd=128, n_layer=4)
    std = model.transformer.h[0].mlp.c_fc.weight.std().item()
    proj_std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert abs(std - 0.02) < 2e-3
    assert abs(proj_std - 0.02 / (2 * 4) ** 0.5) < 1e-3


def test_hidden_states_feed_lm_head():
    model = make_model()
    ids = torch.randint(0, TINY.vocab_size, (2, 7))
    h = model.hidden_states(ids)
    assert h.shape == (2, 7, TINY.n_embd)
    torch.testing.assert_close(model.lm_head(h), model(ids))


def test_sdpa_matches_plain_math():
    sdpa, math = sdpa_and_math_models()
    ids = torch.randint(0, TINY.vocab_size, (3, 10))
    torch.testing.assert_close(sdpa(ids), math(ids), atol=ATOL, rtol=0)

    ids, mask = left_padded_batch(random_seqs([10, 4, 7]))
    torch.testing.assert_close(sdpa(ids, mask), math(ids, mask), atol=ATOL, rtol=0)


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_causal(use_sdpa):
    model = make_model(use_sdpa=use_sdpa)
    ids = torch.randint(0, TINY.vocab_size, (1, 12))
    changed = ids.clone()
    changed[0, 8] = (ids[0, 8] + 1) % TINY.vocab_size
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=0, rtol=0)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_left_padding_matches_unpadded(use_sdpa):
    model = make_model(use_sdpa=use_sdpa)
    seqs = random_seqs([9, 3, 6, 1])
    ids, mask = left_padded_batch(seqs)
    logits = model(ids, attention_mask=mask)
    for i, s in enumerate(seqs):
        alone = model(s[None])
        torch.testing.assert_close(logits[i, -len(s):], alone[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_pad_rows_are_finite(use_sdpa):
    model = make_model(use_sdpa=use_sdpa)
    ids, mask = left_padded_batch(random_seqs([10, 1, 2]))
    assert torch.isfinite(model(ids, attention_mask=mask)).all()
    assert torch.isfinite(model.hidden_states(ids, attention_mask=mask)).all()


def test_position_ids_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])
    assert torch.equal(position_ids_from_mask(mask), expected)


@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_kv_cache_matches_full_forward(use_sdpa, padded):
    model = make_model(use_sdpa=use_sdpa)
    if padded:
        ids, mask = left_padded_batch(random_seqs([12, 5, 9]))
    else:
        ids, mask = torch.randint(0, TINY.vocab_size, (3, 12)), None
    full = model(ids, attention_mask=mask)

    cache = model.new_kv_cache()
    pieces, start = [], 0
    for end in (6, 8, 9, 10, 11, 12):  # a prompt chunk, a 2-token chunk, then one token at a time
        step_mask = None if mask is None else mask[:, :end]  # covers cached + new keys
        pieces.append(model(ids[:, start:end], attention_mask=step_mask, kv_cache=cache))
        start = end
        assert cache.length == end
    incremental = torch.cat(pieces, dim=1)
    real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    torch.testing.assert_close(incremental[real], full[real], atol=ATOL, rtol=0)
    assert cache.keys[0].shape == (3, TINY.n_head, 12, TINY.n_embd // TINY.n_head)


def test_kv_cache_constructor():
    cache = KVCache(TINY.n_layer)
    assert cache.length == 0 and len(cache.keys) == TINY.n_layer


def test_block_size_overflow_raises():
    model = make_model()
    too_long = torch.zeros(1, TINY.block_size + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(too_long)
    cache = model.new_kv_cache()
    model(torch.zeros(1, TINY.block_size, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


def test_attention_mask_shape_checked():
    model = make_model()
    cache = model.new_kv_cache()
    model(torch.zeros(2, 4, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="attention_mask"):  # must cover the 4 cached keys too
        model(torch.zeros(2, 1, dtype=torch.long), attention_mask=torch.ones(2, 1), kv_cache=cache)


def test_trains_with_dropout():
    model = make_model(dropout=0.1).train()
    ids = torch.randint(0, TINY.vocab_size, (2, 8))
    logits = model(ids)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, TINY.vocab_size),
                                             ids[:, 1:].reshape(-1))
    loss.backward()
    assert torch.isfinite(model.transformer.wte.weight.grad).all()
