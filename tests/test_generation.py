import pytest
import torch

from rlhf_lite.generation import (
    generate,
    logprobs_from_logits,
    response_mask,
    sequence_logprobs,
    suppress_tokens,
)
from rlhf_lite.model import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32)
PAD, EOS = 0, 1


def make_model(seed=0):
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def left_padded_prompts(lengths=(5, 2, 8), seed=1):
    """Left-padded random prompts -> input_ids, attention_mask (B, P)."""
    g = torch.Generator().manual_seed(seed)
    P = max(lengths)
    ids = torch.full((len(lengths), P), PAD, dtype=torch.long)
    mask = torch.zeros(len(lengths), P, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, P - n:] = torch.randint(2, CONFIG.vocab_size, (n,), generator=g)
        mask[i, P - n:] = 1
    return ids, mask


def test_cached_equals_uncached_greedy():
    model = make_model()
    ids, mask = left_padded_prompts()
    cached = generate(model, ids, mask, max_new_tokens=12, greedy=True, use_cache=True)
    uncached = generate(model, ids, mask, max_new_tokens=12, greedy=True, use_cache=False)
    assert cached.shape == (3, 8 + 12)
    assert torch.equal(cached[:, :8], ids)  # prompt columns untouched
    assert torch.equal(cached, uncached)


def test_padded_batch_generates_like_single_prompts():
    model = make_model()
    ids, mask = left_padded_prompts()
    batch = generate(model, ids, mask, max_new_tokens=6, greedy=True)
    for i in range(len(ids)):
        alone = generate(model, ids[i:i + 1, mask[i].bool()], max_new_tokens=6, greedy=True)
        assert torch.equal(batch[i, -6:], alone[0, -6:])


def test_eos_stops_row_and_pads_after():
    model = make_model()
    ids, mask = left_padded_prompts()
    P, N = ids.shape[1], 12
    free = generate(model, ids, mask, max_new_tokens=N, greedy=True)
    eos = free[0, P + 2].item()  # a token row 0 emits early on: declare it eos
    out = generate(model, ids, mask, max_new_tokens=N, greedy=True, eos_token_id=eos,
                   pad_token_id=PAD)
    assert torch.equal(out[:, :P], ids)
    for row_free, row in zip(free[:, P:], out[:, P:]):
        hits = (row_free == eos).nonzero()
        stop = hits[0, 0].item() + 1 if len(hits) else N  # up to and including the first eos
        assert torch.equal(row[:stop], row_free[:stop])
        assert (row[stop:] == PAD).all()
    assert (out[0, P + 3:] == PAD).all() and out.shape[1] > P + 3


def test_stops_early_when_all_rows_finish():
    model = make_model()
    with torch.no_grad():
        # Zero the final LayerNorm's scale so its output is its bias for every token; set the bias
        # to a scaled-up eos embedding: the tied lm_head then scores eos highest everywhere.
        model.transformer.wte.weight[EOS] *= 10
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(model.transformer.wte.weight[EOS])
    ids, mask = left_padded_prompts()
    out = generate(model, ids, mask, max_new_tokens=10, greedy=True, eos_token_id=EOS,
                   pad_token_id=PAD)
    assert out.shape == (3, ids.shape[1] + 1)
    assert (out[:, -1] == EOS).all()


def test_seeded_sampling_is_reproducible():
    model = make_model()
    ids, mask = left_padded_prompts()
    a = generate(model, ids, mask, max_new_tokens=10, generator=torch.Generator().manual_seed(0))
    b = generate(model, ids, mask, max_new_tokens=10, generator=torch.Generator().manual_seed(0))
    c = generate(model, ids, mask, max_new_tokens=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_top_k_1_and_tiny_temperature_equal_greedy():
    model = make_model()
    ids, mask = left_padded_prompts()
    greedy = generate(model, ids, mask, max_new_tokens=10, greedy=True)
    g = torch.Generator().manual_seed(0)
    top1 = generate(model, ids, mask, max_new_tokens=10, top_k=1, generator=g)
    cold = generate(model, ids, mask, max_new_tokens=10, temperature=1e-6, generator=g)
    assert torch.equal(top1, greedy)
    assert torch.equal(cold, greedy)


def test_suppressed_tokens_are_never_generated():
    model = make_model()
    ids, mask = left_padded_prompts()
    P = ids.shape[1]
    greedy = generate(model, ids, mask, max_new_tokens=10, greedy=True)
    banned = greedy[:, P:].unique().tolist()  # every token greedy decoding chose
    again = generate(model, ids, mask, max_new_tokens=10, greedy=True, suppress_token_ids=banned)
    hot = generate(model, ids, mask, max_new_tokens=10, temperature=3.0, suppress_token_ids=banned,
                   generator=torch.Generator().manual_seed(0))  # flat: every token is likely
    for out in (again, hot):
        assert not set(out[:, P:].flatten().tolist()) & set(banned)
    # the first new token of greedy is then the runner-up of the unsuppressed logits
    logits = model(ids, mask)[:, -1]
    runner_up = logits.index_fill(-1, torch.tensor(banned), -1e9).argmax(-1)
    assert torch.equal(again[:, P], runner_up)


def test_suppress_tokens_renormalises_the_rest_and_stays_finite():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) / 0.7
    out = suppress_tokens(logits, [0, 7])
    probs = out.softmax(-1)
    keep = [i for i in range(50) if i not in (0, 7)]
    assert (probs[:, [0, 7]] == 0).all()
    assert torch.allclose(probs[:, keep], logits[:, keep].softmax(-1))
    entropy = torch.logsumexp(out, -1) - (probs * out).sum(-1)  # as PPO computes it
    assert torch.isfinite(entropy).all() and torch.isfinite(out.log_softmax(-1)).all()
    assert torch.equal(suppress_tokens(logits, []), logits)


def test_restores_training_mode():
    model = make_model().train()
    generate(model, torch.tensor([[3, 4]]), max_new_tokens=2, greedy=True)
    assert model.training
    model.eval()
    generate(model, torch.tensor([[3, 4]]), max_new_tokens=2, greedy=True)
    assert not model.training


def test_argument_errors():
    model = make_model()
    prompt = torch.tensor([[3, 4]])
    with pytest.raises(ValueError, match="pad_token_id"):
        generate(model, prompt, eos_token_id=EOS)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, temperature=0.0)
    with pytest.raises(ValueError, match="block_size"):
        generate(model, prompt, max_new_tokens=CONFIG.block_size)


def test_response_mask():
    response = torch.tensor([
        [5, 6, EOS, PAD, PAD],
        [EOS, PAD, PAD, PAD, PAD],
        [5, 6, 7, 8, 9],  # no eos: cut at max_new_tokens, all real
        [5, 6, 7, 8, EOS],
    ])
    expected = torch.tensor([
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
    ])
    assert torch.equal(response_mask(response, EOS), expected)


def test_logprobs_from_logits_matches_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    tokens = torch.randint(0, 7, (2, 5), generator=g)
    expected = torch.empty(2, 5)
    for b in range(2):
        for t in range(5):
            expected[b, t] = torch.log_softmax(logits[b, t], dim=0)[tokens[b, t]]
    torch.testing.assert_close(logprobs_from_logits(logits, tokens), expected)


def test_sequence_logprobs_score_each_token_under_the_sampling_distribution():
    model = make_model()
    ids, mask = left_padded_prompts()
    start, temperature, suppressed = 4, 0.7, [PAD, 2]
    logp, logits = sequence_logprobs(model, ids, mask, start, temperature, suppressed)
    assert logp.shape == (3, ids.shape[1] - start) and logits.shape == (*logp.shape, 50)
    with torch.no_grad():
        full = model(ids, mask)  # (B, T, V)
    for b in range(3):
        for t in range(start, ids.shape[1]):  # token t, predicted from the logits at t - 1
            dist = torch.log_softmax(suppress_tokens(full[b, t - 1] / temperature, suppressed), 0)
            assert logp[b, t - start].item() == pytest.approx(dist[ids[b, t]].item(), abs=1e-5)
    assert torch.allclose(logp, sequence_logprobs(model, ids, mask, 1, temperature,
                                                  suppressed)[0][:, start - 1:], atol=1e-6)
