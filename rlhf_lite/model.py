"""GPT: a decoder-only transformer language model, written from scratch.

The architecture is GPT-2 (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners"): learned token and position embeddings, a stack of pre-LayerNorm
blocks (causal self-attention, then a GELU MLP, each in a residual branch), a final
LayerNorm and an output layer tied to the token embeddings.

InstructGPT (Ouyang et al. 2022, sec. 3.5) uses this one network four times: the
policy being trained, the frozen reference (SFT) model for the KL penalty, and, with
the unembedding swapped for a scalar head, the reward model and the PPO value function.
So besides `forward` (logits) the model exposes `hidden_states` (the final-LayerNorm
output a scalar head reads), and it handles what RLHF needs at generation time:
left-padded batches (`attention_mask`, `position_ids`) and a key/value cache.

Module and parameter names follow GPT-2 / nanoGPT (`transformer.h.0.attn.c_attn.weight`,
...) so GPT-2 checkpoints can be copied in. Hugging Face stores c_attn, c_proj and c_fc
as Conv1D, i.e. transposed relative to nn.Linear, so those weights need a `.t()`.

Shapes: B batch, T new tokens in this call, S keys (cached + new), C n_embd,
V vocab_size, nh n_head, hd head_dim = C // nh.
"""

import math
from dataclasses import MISSING, dataclass

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch.nn import functional as F

from .utils import boolean, check_config, integer, number, rule


@dataclass
class GPTConfig:
    # number of token ids: rows of wte, outputs of lm_head
    vocab_size: int = rule(MISSING, integer(1))
    # max sequence length (cached + new tokens): number of learned positions
    block_size: int = rule(64, integer(1))
    n_layer: int = rule(4, integer(1))  # number of transformer blocks
    # attention heads per block; each has head_dim = n_embd // n_head
    n_head: int = rule(4, integer(1))
    n_embd: int = rule(128, integer(1))  # width C of the residual stream
    # dropout on embeddings, attention weights and residual branches
    dropout: float = rule(0.0, number(0, 1, high_open=True))
    bias: bool = rule(True, boolean())  # biases in Linear and LayerNorm layers (GPT-2 has them)
    # LayerNorm epsilon (GPT-2 uses 1e-5)
    layer_norm_eps: float = rule(1e-5, number(0, low_open=True))
    # True: fused F.scaled_dot_product_attention; False: the same math written out
    use_sdpa: bool = rule(True, boolean())

    def __post_init__(self):
        check_config(self, divisible=("n_embd", "n_head"))


class KVCache:
    """Keys and values of the positions seen so far, per layer, for incremental decoding.

    keys[i], values[i]: (B, nh, S, hd) for layer i, where S = `length` cached positions.
    Pass the same cache to successive forward calls: each call appends its T new
    positions in place, so a step only computes attention for the new tokens.
    """

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    @property
    def length(self) -> int:
        """Number of cached positions S."""
        # the last layer is updated last, so mid-forward this still reads the length before the call
        k = self.keys[-1]
        return 0 if k is None else k.shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append new k, v (B, nh, T, hd) for `layer`; return all keys, values
        (B, nh, S + T, hd)."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting only real tokens: (B, S) mask of 1/0 -> (B, S) long position ids.

    Left padding shifts a sequence to the right; counting real tokens gives it positions
    0, 1, 2, ... exactly as if it were unpadded. Pad slots get 0 (their outputs are ignored).
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def _attend_mask(attention_mask, T: int, past: int, device) -> torch.Tensor | None:
    """Boolean (B or 1, 1, T, S) mask, True where a query may attend to a key.

    None means nothing to mask beyond causality, without padding: plain causal attention
    without cache, or a single query (T = 1), the newest token, which sees every key (the
    fast paths of SDPA).
    """
    if attention_mask is None and (past == 0 or T == 1):
        return None
    S = past + T
    q_pos = torch.arange(past, S, device=device)[:, None]  # (T, 1) absolute position of each query
    k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    allowed = k_pos <= q_pos  # (T, S) causal: no peeking at later tokens
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, :]  # (B, T, S) hide pad keys
        # A left-pad query has no real key at or before it: an all-masked softmax row is NaN.
        # Letting every token see itself keeps it finite (a real token sees itself anyway).
        allowed = allowed | (k_pos == q_pos)
    return allowed.view(-1, 1, T, S)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.use_sdpa = config.use_sdpa
        self.layer_idx = layer_idx  # which KVCache slot is ours
        # q, k, v at once
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, mask=None, kv_cache=None):
        # x: (B, T, C); mask: (B or 1, 1, T, S) bool or None (plain causal, no cache)
        B, T, C = x.shape
        hd = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)
        v = v.view(B, T, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, S, hd)

        if self.use_sdpa:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                dropout_p=self.dropout if self.training else 0.0,
            )  # (B, nh, T, hd)
        else:
            # softmax(Q K^T / sqrt(hd) + mask) V, with disallowed scores set to -inf
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)  # (B, nh, T, S)
            if mask is None:  # causal; a single query (T = 1) sees every key
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~mask, float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            y = att @ v  # (B, nh, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, mask=None, kv_cache=None):
        x = x + self.attn(self.ln_1(x), mask, kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x  # (B, T, C)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (as in GPT-2): one matrix both embeds tokens and scores the next token.
        self.transformer.wte.weight = self.lm_head.weight
        # a runtime switch, not architecture (presets set it): in training, recompute each
        # block's activations during backward instead of keeping them, less memory for ~1/3
        # more compute
        self.gradient_checkpointing = False

        self.apply(self._init_weights)
        # GPT-2: scale the init of each residual branch's output projection by 1/sqrt(2 * n_layer),
        # since 2 * n_layer branches add up in the residual stream.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (a tied matrix counts once).

        non_embedding=True leaves out the position embeddings, as GPT-2/nanoGPT report it;
        the token embeddings stay in because, tied, they are also the output layer.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def new_kv_cache(self) -> KVCache:
        """An empty cache to pass to successive forward calls."""
        return KVCache(self.config.n_layer)

    def hidden_states(self, input_ids, attention_mask=None, position_ids=None, kv_cache=None):
        """Final-LayerNorm output (B, T, C) for input_ids (B, T).

        attention_mask: (B, S) with 1 for real tokens and 0 for pad, S = kv_cache.length + T
            (it covers the cached keys too). Combined with the causal mask. Outputs at pad
            positions are finite garbage: ignore them.
        position_ids: (B, T). Default: counted from attention_mask (`position_ids_from_mask`),
            so a left-padded row gets the same positions as unpadded; without a mask,
            kv_cache.length, ..., S - 1.
        kv_cache: a KVCache, appended in place with this call's keys and values.
        """
        B, T = input_ids.shape
        past = 0 if kv_cache is None else kv_cache.length
        S = past + T
        if S > self.config.block_size:
            raise ValueError(
                f"sequence length {S} (cached {past} + new {T}) exceeds block_size "
                f"{self.config.block_size}"
            )
        if attention_mask is not None and tuple(attention_mask.shape) != (B, S):
            raise ValueError(
                f"attention_mask must have shape (B, cached + new) = {(B, S)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        if position_ids is None:
            if attention_mask is not None:
                position_ids = position_ids_from_mask(attention_mask)[:, -T:]  # (B, T)
            else:
                position_ids = torch.arange(past, S, device=input_ids.device)[None]  # (1, T)

        mask = _attend_mask(attention_mask, T, past, input_ids.device)
        tok_emb = self.transformer.wte(input_ids)  # (B, T, C)
        pos_emb = self.transformer.wpe(position_ids)  # (B or 1, T, C)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled() \
                    and kv_cache is None:  # recomputing would append to the cache twice
                x = torch.utils.checkpoint.checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask, kv_cache)
        return self.transformer.ln_f(x)  # (B, T, C)

    def forward(self, input_ids, attention_mask=None, position_ids=None, kv_cache=None):
        """Next-token logits (B, T, V); arguments as in `hidden_states`."""
        return self.lm_head(self.hidden_states(input_ids, attention_mask, position_ids, kv_cache))


def without_dropout(model: nn.Module) -> nn.Module:
    """`model` with every dropout off, also the rate attention passes to fused SDPA (RL and
    DPO: a log-prob ratio must move only when the weights move, not with dropout masks)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, CausalSelfAttention):
            m.dropout = 0.0
    return model
