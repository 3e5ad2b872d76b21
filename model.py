"""
One GPT in which every architecture of the five recipes is a flag.

    python model.py --preset=parchment_166m          # a readable summary
    python model.py --preset=picochat_335m --json    # the same, last line one JSON object

GPT-2 (card 001), LLaMA (cards 002, 003), PyCraft (card 000) and nanochat (card 004) differ only
in the fields of GPTConfig: positional encoding, norm, MLP, heads and KV heads, QK-norm and where
it sits, tied embeddings, biases, dropout, init, logit soft-capping and a norm after the embedding.
"""

import json
import math
import sys
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

import configurator
from configurator import UserError

IGNORE_INDEX = -1  # label value that contributes no loss (prompt and padding positions in SFT)


@dataclass
class GPTConfig:
    vocab_size: int = 50304
    block_size: int = 1024          # context length; also the size of the learned position table
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    n_kv_head: int = 0              # 0 means n_head (plain multi-head attention); fewer is GQA
    head_dim: int = 0               # size of each attention head; 0 means n_embd // n_head (Qwen3: 128 at any width)
    ffn_hidden: int = 0             # 0 means 4*n_embd (gelu, relu2) or 2/3*4*n_embd rounded to 64 (swiglu)
    pos: str = "learned"            # "learned" absolute positions (GPT-2) | "rope"
    rope_theta: float = 10000.0
    rope_scaling: float = 1.0       # Llama 3.1/3.2's RoPE scaling: long-wavelength frequencies / this (3.2: 32); 1 = off
    rope_low_freq_factor: float = 1.0     # scaled: wavelengths over rope_original_context / this (rope_frequencies)
    rope_high_freq_factor: float = 4.0    # kept: wavelengths under rope_original_context / this; interpolated between
    rope_original_context: int = 8192     # the context RoPE was pretrained at before the scaling (Llama 3: 8192)
    norm: str = "layernorm"         # "layernorm" | "rmsnorm"
    norm_affine: bool = True        # False: parameter-free norm (nanochat, card 004)
    norm_eps: float = 1e-5
    mlp: str = "gelu"               # "gelu" (tanh approximation, GPT-2) | "swiglu" | "relu2"
    qk_norm: str = "none"           # "none" | "before_rope" (card 000) | "after_rope" (nanochat)
    tie_embeddings: bool = True
    bias: bool = True
    qkv_bias: bool = False          # a bias on the q, k, v projection even when bias=False (Qwen2, Qwen2.5)
    dropout: float = 0.0
    init: str = "scaled_residual"   # N(0, init_std), residual projections / sqrt(2*n_layer) (GPT-2); "zero_out": also zero the LM head and output projections (nanochat)
    init_std: float = 0.02
    emb_init_std: float = 0.0       # 0 means init_std; card 003 uses n_embd**-0.5
    logit_softcap: float = 0.0      # 0 means off; nanochat caps at 15*tanh(x/15)
    embed_norm: bool = False        # a norm right after the token embedding (nanochat)
    pad_vocab_multiple: int = 1     # pad the embedding rows to a multiple (64 speeds up the matmul); the pad rows are never targets

    def __post_init__(self):
        small = [f"{k}={getattr(self, k)}" for k in ("vocab_size", "block_size", "n_layer", "n_embd", "n_head")
                 if getattr(self, k) < 1] + [f"{k}={getattr(self, k)}" for k in ("n_kv_head", "head_dim", "ffn_hidden")
                                             if getattr(self, k) < 0]
        if small:
            raise UserError(f"{', '.join(small)}: sizes must be positive (n_kv_head, head_dim and ffn_hidden may be 0 = default)")
        problems = []
        kv = self.n_kv_head or self.n_head
        if not self.head_dim and self.n_embd % self.n_head:
            problems.append(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head} (or set head_dim)")
        if self.n_head % kv:
            problems.append(f"n_head={self.n_head} must be a multiple of n_kv_head={kv}")
        for name, allowed in [("pos", ("learned", "rope")), ("norm", ("layernorm", "rmsnorm")),
                              ("mlp", ("gelu", "swiglu", "relu2")), ("init", ("scaled_residual", "zero_out")),
                              ("qk_norm", ("none", "before_rope", "after_rope"))]:
            if getattr(self, name) not in allowed:
                problems.append(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.pos == "rope" and (self.head_dim or self.n_embd // self.n_head) % 2:
            problems.append("RoPE needs an even head size (head_dim, or n_embd / n_head)")
        low, high = self.rope_low_freq_factor, self.rope_high_freq_factor
        if self.rope_scaling <= 0 or not 0 < low < high or self.rope_original_context < 1:
            problems.append(f"rope_scaling={self.rope_scaling} must be > 0 (1 = off), with 0 < rope_low_freq_factor "
                            f"({low}) < rope_high_freq_factor ({high}) and rope_original_context >= 1")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def kv_heads(self):
        return self.n_kv_head or self.n_head

    @property
    def head_size(self):
        """Each attention head's size: head_dim, or n_embd / n_head by default."""
        return self.head_dim or self.n_embd // self.n_head

    @property
    def qkv_rows(self):
        """Attention's one q, k, v projection: its rows [q | k | v] (fewer k and v heads under GQA)."""
        return [self.n_head * self.head_size, self.kv_heads * self.head_size, self.kv_heads * self.head_size]

    @property
    def mlp_width(self):
        """The MLP's hidden width: ffn_hidden, or the default for this mlp kind."""
        if self.ffn_hidden:
            return self.ffn_hidden
        if self.mlp == "swiglu":  # LLaMA: 2/3 of 4d keeps the parameter count of a 4d GELU MLP
            return 64 * math.ceil(2 * 4 * self.n_embd / 3 / 64)
        return 4 * self.n_embd

    @property
    def padded_vocab(self):
        m = self.pad_vocab_multiple
        return m * math.ceil(self.vocab_size / m)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

# -----------------------------------------------------------------------------
# building blocks


class Norm(nn.Module):
    """LayerNorm or RMSNorm over the last dimension, with or without a learnable weight."""

    def __init__(self, dim, kind, affine, eps, bias):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine and bias and kind == "layernorm" else None

    def forward(self, x):
        if self.kind == "layernorm":
            return F.layer_norm(x, (x.size(-1),), self.weight, self.bias, self.eps)
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def make_norm(config, dim=None):
    return Norm(dim or config.n_embd, config.norm, config.norm_affine, config.norm_eps, config.bias)


def rope_frequencies(config, device=None):
    """RoPE's hs/2 angular frequencies theta^(-2i/hs), Llama 3's scaling applied when rope_scaling != 1."""
    hs = config.head_size
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hs, 2, device=device, dtype=torch.float32) / hs))
    if config.rope_scaling == 1:
        return inv_freq
    # Llama 3.1 (Grattafiori et al. 2024, and transformers' "llama3" rope_type): frequencies whose wavelength exceeds
    # the pretraining context / low_freq_factor are slowed by the factor, those under context / high_freq_factor
    # kept, and those between interpolated linearly in context / wavelength
    factor, low, high = config.rope_scaling, config.rope_low_freq_factor, config.rope_high_freq_factor
    ratio = config.rope_original_context / (2 * math.pi / inv_freq)    # context / wavelength: turns in the context
    smooth = ((ratio - low) / (high - low)).clamp(0, 1)                 # 0: long wavelengths, 1: short ones
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def rope_cache(config, device=None):
    """cos and sin of shape (block_size, hs/2) for rotating pairs (i, i + hs/2), the rotate-half layout."""
    inv_freq = rope_frequencies(config, device)
    seq_len = config.block_size
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    # x: (B, nh, T, hs); cos, sin: (T, hs/2), fp32. The rotation runs in x's dtype, bf16 under autocast, as in
    # transformers' LLaMA and nanochat; upcasting to fp32 took 4-5x the time per call, eager, on an H200 (README)
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.kv_heads, config.head_size
        # q, k and v in one matmul (nanoGPT's c_attn): one launch and one larger GEMM where q and [k | v] took two
        self.qkv = nn.Linear(config.n_embd, sum(config.qkv_rows), bias=config.bias or config.qkv_bias)
        # three matrices to Muon (train.py), orthogonalized apart as nanochat's c_q, c_k and c_v are
        self.c_proj = nn.Linear(config.n_head * self.head_size, config.n_embd, bias=config.bias)
        self.qk_norm = config.qk_norm
        if config.qk_norm != "none":  # per-head norm over hs, shared across heads (OLMo 2, Qwen 3)
            self.q_norm = make_norm(config, self.head_size)
            self.k_norm = make_norm(config, self.head_size)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope, cache, layer):
        B, T, _ = x.size()
        heads = self.qkv(x).view(B, T, -1, self.head_size).transpose(1, 2)                          # (B, nh + 2 nkv, T, hs)
        q, k, v = heads.split([self.n_head, self.n_kv_head, self.n_kv_head], dim=1)                   # (B, nh | nkv | nkv, T, hs)
        if self.qk_norm == "before_rope":
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.qk_norm == "after_rope":
            q, k = self.q_norm(q), self.k_norm(k)
        if cache is not None:
            k, v = cache.update(layer, k, v)                                                 # (B, nkv, T_past+T, hs)
        # causal only when queries and keys start together; a cached step's queries see every key.
        # A chunk of several new tokens after a prefix needs an explicit offset mask.
        Tk = k.size(2)
        mask, causal = None, T == Tk
        if not causal and T > 1:
            mask = torch.ones(T, Tk, dtype=torch.bool, device=x.device).tril(diagonal=Tk - T)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=self.n_kv_head != self.n_head,
            dropout_p=self.dropout if self.training else 0.0)                               # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_size)                 # (B, T, nh * hs)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.kind = config.mlp
        width = 2 * config.mlp_width if config.mlp == "swiglu" else config.mlp_width  # gate and up in one matmul
        self.c_fc = nn.Linear(config.n_embd, width, bias=config.bias)
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        if self.kind == "gelu":
            h = F.gelu(h, approximate="tanh")       # GPT-2's "gelu_new" (card 001)
        elif self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.relu(h).square()                  # ReLU^2 (Primer; nanochat, card 004)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = Attention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rope, cache, layer):
        x = x + self.attn(self.ln_1(x), rope, cache, layer)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """Keys and values of the tokens seen so far, per layer, preallocated to `length` tokens (the context length
    by default; generate asks for what the prompt and new tokens need: a 131,072-token context is GBs)."""

    def __init__(self, config, batch_size, device, dtype, length=None):
        shape = (config.n_layer, 2, batch_size, config.kv_heads, length or config.block_size, config.head_size)
        self.kv = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # tokens already stored; advanced after the last layer

    def update(self, layer, k, v):
        T = k.size(2)
        self.kv[layer, 0, :, :, self.pos:self.pos + T] = k
        self.kv[layer, 1, :, :, self.pos:self.pos + T] = v
        end = self.pos + T
        if layer == self.kv.size(0) - 1:
            self.pos = end
        return self.kv[layer, 0, :, :, :end], self.kv[layer, 1, :, :, :end]

# -----------------------------------------------------------------------------
# the model


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos == "learned" else None
        self.emb_norm = make_norm(config) if config.embed_norm else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # one tensor, two uses (Press & Wolf 2017)
        if config.pos == "rope":
            cos, sin = rope_cache(config)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.grad_checkpointing = False  # train.py's activation_checkpointing: recompute blocks in backward (card 000)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        c = self.config
        resid_std = c.init_std / math.sqrt(2 * c.n_layer)  # GPT-2: keep the residual stream's variance flat with depth
        for name, m in self.named_modules():
            if m is self.lm_head and c.tie_embeddings:
                continue  # it is the embedding table, initialised below
            if isinstance(m, nn.Linear):
                residual = name.endswith(".c_proj")  # attention's and the MLP's projections back into the stream
                zero = c.init == "zero_out" and (residual or m is self.lm_head)
                if zero:
                    nn.init.zeros_(m.weight)
                else:
                    nn.init.normal_(m.weight, 0.0, resid_std if residual else c.init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, c.emb_init_std or c.init_std)
            elif isinstance(m, Norm):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if c.pos == "rope" and self.rope_cos.device.type != "meta":
            self.rope_cos, self.rope_sin = rope_cache(c, self.rope_cos.device)

    def forward(self, idx, targets=None, cache=None, all_logits=False):
        """idx (B, T) token ids. With targets (B, T) returns (logits, mean loss over targets != IGNORE_INDEX);
        without, the last position's logits (B, 1, V) or every position's when all_logits."""
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than the context ({self.config.block_size})")
        x = self.wte(idx)                                                       # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        x = self.drop(x)
        rope = (self.rope_cos[start:start + T], self.rope_sin[start:start + T]) if self.config.pos == "rope" else None
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, rope, cache, i, use_reentrant=False)
            else:
                x = block(x, rope, cache, i)
        x = self.ln_f(x)
        if targets is None and not all_logits:
            x = x[:, [-1], :]  # generation needs only the next token's logits
        logits = self.lm_head(x)[..., :self.config.vocab_size]                  # (B, T, V)
        if self.config.logit_softcap:
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)
        return logits, loss

    # -------------------------------------------------------------------------
    # generation

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, repetition_penalty=1.0,
                 stop_tokens=(), use_cache=True, generator=None):
        """Yields (B,) tensors of new token ids, one step at a time, so a caller can stream them.
        temperature 0 is greedy. Stops early when every row has produced a stop token."""
        if temperature < 0 or (top_p is not None and not 0 < top_p <= 1):
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1]; got {temperature}, {top_p}")
        idx = idx.clone()
        B = idx.size(0)
        if idx.size(1) + max_new_tokens > self.config.block_size and use_cache:
            max_new_tokens = self.config.block_size - idx.size(1)  # the cache holds one context; no sliding
        length = idx.size(1) + max_new_tokens
        cache = KVCache(self.config, B, idx.device, self.wte.weight.dtype, length) if use_cache else None
        stop = torch.tensor(list(stop_tokens), device=idx.device, dtype=torch.long)
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        inputs = idx
        for _ in range(max_new_tokens):
            if cache is None:
                inputs = idx[:, -self.config.block_size:]
            logits, _ = self(inputs, cache=cache)
            logits = logits[:, -1, :].float()                                   # (B, V)
            next_id = sample_next(logits, idx, temperature, top_k, top_p, repetition_penalty, generator)
            next_id = torch.where(done, stop[0] if len(stop) else next_id, next_id)
            idx = torch.cat([idx, next_id[:, None]], dim=1)
            inputs = next_id[:, None]
            yield next_id
            if len(stop):
                done |= torch.isin(next_id, stop)
                if bool(done.all()):
                    return

    # -------------------------------------------------------------------------
    # accounting

    def num_params(self):
        """(total, non-embedding): unique parameters; non-embedding leaves out the token and position tables
        (and an untied LM head), as in Kaplan et al. 2020."""
        total = sum(p.numel() for p in self.parameters())
        emb = self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe is not None else 0)
        if not self.config.tie_embeddings:
            emb += self.lm_head.weight.numel()
        return total, total - emb

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token: 6 per weight in a matmul (forward 2, backward 4), LM head included,
        plus attention's 6*2*n_layer*T*(n_head*head size) for QK^T and AV (PaLM appendix B, causal mask not discounted)."""
        c = self.config
        T = seq_len or c.block_size
        matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 6 * matmul + 12 * c.n_layer * T * c.n_head * c.head_size

    def estimate_mfu(self, tokens_per_s, device_name, seq_len=None):
        """Model FLOPs utilisation against the device's dense peak, or None if the peak is unknown."""
        peak = peak_flops(device_name)
        return None if peak is None else self.flops_per_token(seq_len) * tokens_per_s / peak


def sample_next(logits, history, temperature, top_k, top_p, repetition_penalty, generator=None):
    """One token id per row from (B, V) logits."""
    if repetition_penalty != 1.0:  # CTRL (Keskar et al. 2019): push down every token already in the row
        seen = torch.gather(logits, 1, history)
        seen = torch.where(seen > 0, seen / repetition_penalty, seen * repetition_penalty)
        logits = logits.scatter(1, history, seen)
    if not temperature:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p and top_p < 1.0:  # nucleus: keep the smallest set of tokens whose mass reaches top_p
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)

# -----------------------------------------------------------------------------
# peak dense FLOP/s (bf16 unless noted), for MFU: vendors' datasheet figures without sparsity

PEAK_FLOPS = {
    "H200": 989e12,                 # same SXM compute as H100
    "H100 PCIe": 756e12,
    "H100": 989e12,                 # SXM
    "A100": 312e12,
    "L4": 121e12,
    "RTX 4090": 165e12,             # Ada whitepaper, bf16 with fp32 accumulate (330 is with sparsity)
    "RTX 4060": 30e12,              # uncertain: 2x its 15 TFLOPS fp32, the ratio the 4090 has; laptop parts are lower
    "RTX 3090": 71e12,
    "RTX 3050": 12e12,              # uncertain: laptop part (card 000), ~2x its ~6 TFLOPS fp32, varies with power limit
    "T4": 65e12,                    # fp16 tensor cores; T4 has no bf16
    "V100": 125e12,                 # fp16
    "M2": 3.6e12,                   # uncertain: Apple M2 10-core GPU fp32 (no matrix units for bf16)
}


def peak_flops(device_name):
    """The table's peak for a device name such as torch.cuda.get_device_name(); None when unknown (CPU).
    MFU is always quoted against this low-precision peak, as nanoGPT and PaLM do, whatever dtype ran."""
    name = (device_name or "").upper()
    for key, value in PEAK_FLOPS.items():
        if key.upper() in name:
            return value
    return None

# -----------------------------------------------------------------------------
# summary: python model.py --preset=NAME


def describe(model):
    c = model.config
    total, non_emb = model.num_params()
    flops = model.flops_per_token()
    # AdamW keeps two moments per parameter; bf16 weights still keep fp32 moments in torch's AdamW
    mem = {"fp32": total * (4 + 8), "bf16": total * (2 + 8)}
    lines = [f"GPT: {c.n_layer} layers, d_model {c.n_embd}, {c.n_head} query heads / {c.kv_heads} KV heads "
             f"(head size {c.head_size}), MLP {c.mlp} hidden {c.mlp_width}, context {c.block_size}",
             f"vocab {c.vocab_size}" + (f" (padded to {c.padded_vocab} rows)" if c.padded_vocab != c.vocab_size else ""),
             "flags: " + ", ".join(f"{k}={v}" for k, v in asdict(c).items()
                                  if k not in ("vocab_size", "block_size", "n_layer", "n_embd", "n_head")),
             f"parameters: {total / 1e6:.2f}M total, {non_emb / 1e6:.2f}M non-embedding",
             f"training FLOPs per token: {flops / 1e6:.1f}M (6N + attention at T={c.block_size})",
             f"weights + AdamW state: {mem['fp32'] / 2**30:.2f} GiB fp32, {mem['bf16'] / 2**30:.2f} GiB bf16 weights"]
    return lines, dict(params_total=total, params_non_embedding=non_emb, flops_per_token=flops,
                       n_layer=c.n_layer, n_embd=c.n_embd, n_head=c.n_head, n_kv_head=c.kv_heads,
                       vocab_size=c.vocab_size, block_size=c.block_size, mlp=c.mlp, pos=c.pos, norm=c.norm)


def main(argv=None):
    """The summary of GPTConfig's defaults under --preset and --key=value (argv, else the command line)."""
    settings = {f.name: f.default for f in fields(GPTConfig)}
    settings["json_output"] = False
    argv = sys.argv[1:] if argv is None else argv
    cfg = configurator.configure(settings, [("--json_output=True" if a == "--json" else a) for a in argv])
    json_output = cfg.pop("json_output")
    with torch.device("meta"):  # no memory is spent: counts come from the shapes
        model = GPT(GPTConfig(**cfg))
    lines, summary = describe(model)
    print("\n".join(lines))
    if json_output:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
