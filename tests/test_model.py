"""model.py: every architecture flag, the KV cache, generation and the presets' sizes."""

import json
import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import configurator
from model import GPT, GPTConfig, KVCache, apply_rope, rope_cache

ROOT = Path(__file__).resolve().parent.parent

SMALL = dict(vocab_size=97, block_size=32, n_layer=2, n_embd=32, n_head=4)
VARIANTS = {
    "gpt2": dict(),
    "llama": dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=True),
    "pycraft": dict(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, qk_norm="before_rope",
                    tie_embeddings=False, bias=False),
    "nanochat": dict(pos="rope", norm="rmsnorm", norm_affine=False, mlp="relu2", qk_norm="after_rope",
                     tie_embeddings=False, bias=False, init="zero_out", logit_softcap=15.0, embed_norm=True),
    "padded_vocab": dict(pad_vocab_multiple=64),
    # imported models' flags: heads wider than n_embd / n_head (Qwen3), q/k/v bias alone (Qwen2), Llama 3's RoPE scaling
    "imported": dict(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, head_dim=16, bias=False, qkv_bias=True,
                     rope_scaling=8.0, rope_original_context=16),
}


def make(variant, **kw):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**SMALL, **VARIANTS[variant], **kw}))
    if model.config.init == "zero_out":  # zero-initialised outputs would make every test trivially pass
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2 and p.abs().sum() == 0:
                    p.normal_(0, 0.02)
    return model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_architecture_is_one_graph_for_torch_compile(variant):
    """A graph break splits the compiled step and sends the code between graphs back to Python."""
    import torch._dynamo
    torch._dynamo.reset()
    idx = torch.randint(0, 97, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(make(variant).train())(idx, idx)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_backward_shapes_and_finite_loss(variant):
    model = make(variant).train()
    idx = torch.randint(0, 97, (3, 16))
    logits, loss = model(idx, targets=idx)
    assert logits.shape == (3, 16, 97)
    assert torch.isfinite(loss) and abs(loss.item() - math.log(97)) < 1.5  # near uniform at init
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 97) and loss is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_causality(variant):
    model = make(variant)
    idx = torch.randint(0, 97, (1, 20))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 97
    a, _ = model(idx, all_logits=True)
    b, _ = model(changed, all_logits=True)
    assert torch.allclose(a[0, :12], b[0, :12], atol=1e-6)
    assert not torch.allclose(a[0, 12:], b[0, 12:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_logits_equal_uncached(variant):
    model = make(variant)
    idx = torch.randint(0, 97, (2, 24))
    full, _ = model(idx, all_logits=True)
    cache = KVCache(model.config, 2, "cpu", torch.float32)
    parts = [model(idx[:, :10], cache=cache, all_logits=True)[0]]       # a prompt,
    parts.append(model(idx[:, 10:14], cache=cache, all_logits=True)[0])  # a chunk after it,
    parts += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(14, 24)]  # then one token at a time
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_generation_same_with_and_without_cache(variant):
    model = make(variant)
    prompt = torch.randint(0, 97, (2, 5))
    with_cache = torch.stack(list(model.generate(prompt, 20, temperature=0)), dim=1)
    without = torch.stack(list(model.generate(prompt, 20, temperature=0, use_cache=False)), dim=1)
    assert torch.equal(with_cache, without)
    # and the same as arg-maxing the plain forward pass token by token
    seq = prompt.clone()
    for _ in range(20):
        seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(seq[:, 5:], with_cache)


def test_generate_stops_at_stop_token_and_sampling_is_seeded():
    model = make("llama")
    prompt = torch.randint(0, 97, (1, 4))
    greedy = [t.item() for t in model.generate(prompt, 10, temperature=0)]
    stopped = [t.item() for t in model.generate(prompt, 10, temperature=0, stop_tokens=[greedy[3]])]
    assert stopped == greedy[:greedy.index(greedy[3]) + 1]
    draw = lambda: [t.item() for t in model.generate(prompt, 10, temperature=1.0, top_k=5, top_p=0.9,
                                                     generator=torch.Generator().manual_seed(7))]
    assert draw() == draw()


def test_repetition_penalty_and_top_k():
    from model import sample_next
    logits = torch.tensor([[2.0, 1.9, -1.0, 0.5]])
    history = torch.tensor([[0]])
    assert sample_next(logits, history, 0, None, None, 1.0).item() == 0
    assert sample_next(logits, history, 0, None, None, 1.1).item() == 1  # 2.0/1.1 < 1.9
    draws = {sample_next(logits, history, 1.0, 2, None, 1.0).item() for _ in range(200)}
    assert draws <= {0, 1}


def reference_attention(attn, x, rope):
    """Grouped-query attention written out: repeat K/V per group, mask, softmax."""
    B, T, C = x.shape
    rows = [attn.n_head * attn.head_size, attn.n_kv_head * attn.head_size, attn.n_kv_head * attn.head_size]  # qkv's rows: [q | k | v]
    biases = attn.qkv.bias.split(rows) if attn.qkv.bias is not None else [None] * 3
    q, k, v = (F.linear(x, w, b).view(B, T, -1, attn.head_size).transpose(1, 2) for w, b in zip(attn.qkv.weight.split(rows), biases))
    if attn.qk_norm == "before_rope":
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    k = k.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)
    v = v.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(attn.head_size)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, attn.n_head * attn.head_size)
    return attn.c_proj(y)


@pytest.mark.parametrize("variant", ["pycraft", "imported"])
def test_gqa_matches_explicitly_repeated_kv(variant):
    model = make(variant)
    attn = model.blocks[0].attn
    x = torch.randn(2, 12, 32)
    rope = (model.rope_cos[:12], model.rope_sin[:12])
    assert torch.allclose(attn(x, rope, None, 0), reference_attention(attn, x, rope), atol=1e-5)


def test_head_dim_and_qkv_bias_shape_the_projections():
    c = make("imported").config
    attn = make("imported").blocks[0].attn
    assert c.head_size == 16 and c.qkv_rows == [64, 32, 32] and attn.c_proj.weight.shape == (32, 64)
    assert attn.qkv.bias is not None and attn.c_proj.bias is None and make("imported").blocks[0].mlp.c_fc.bias is None
    assert GPTConfig(n_embd=48, n_head=4).head_size == 12  # 0: n_embd / n_head, as every preset


def test_gqa_with_as_many_kv_heads_is_plain_mha():
    a, b = make("llama", n_kv_head=4), make("llama", n_kv_head=0)
    idx = torch.randint(0, 97, (1, 10))
    assert torch.equal(a(idx, all_logits=True)[0], b(idx, all_logits=True)[0])


def test_rope_depends_only_on_relative_position():
    cos, sin = rope_cache(GPTConfig(block_size=64, n_embd=8, n_head=1, pos="rope"))
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    dot = lambda m, n: (apply_rope(q, cos[m:m + 1], sin[m:m + 1]) * apply_rope(k, cos[n:n + 1], sin[n:n + 1])).sum()
    assert torch.allclose(dot(3, 1), dot(40, 38), atol=1e-5)
    assert not torch.allclose(dot(3, 1), dot(3, 2), atol=1e-3)
    assert torch.allclose(apply_rope(q, cos[5:6], sin[5:6]).norm(), q.norm(), atol=1e-6)


def test_rope_in_bf16_is_transformers_llama_rotation_bit_for_bit():
    """Under autocast q and k are bf16; the rotation runs in bf16 as transformers' LLaMA runs it (its cos and sin
    are our halves repeated, cast to q's dtype)."""
    llama = pytest.importorskip("transformers.models.llama.modeling_llama", reason="pip install transformers")
    cos, sin = rope_cache(GPTConfig(block_size=32, n_embd=16, n_head=1, pos="rope"))
    q, k = torch.randn(2, 4, 32, 16, dtype=torch.bfloat16), torch.randn(2, 2, 32, 16, dtype=torch.bfloat16)
    full = lambda t: torch.cat([t, t], dim=-1).to(torch.bfloat16)[None]  # noqa: E731  (1, T, hs)
    theirs = llama.apply_rotary_pos_emb(q, k, full(cos), full(sin))
    assert apply_rope(q, cos, sin).dtype == torch.bfloat16
    assert torch.equal(apply_rope(q, cos, sin), theirs[0]) and torch.equal(apply_rope(k, cos, sin), theirs[1])


def test_tied_weights_share_storage_and_untied_do_not():
    tied, untied = make("gpt2"), make("pycraft")
    assert tied.lm_head.weight.data_ptr() == tied.wte.weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.wte.weight.data_ptr()


def test_parameter_free_rmsnorm_has_no_parameters():
    model = make("nanochat")
    norms = [m for m in model.modules() if type(m).__name__ == "Norm"]
    assert norms and all(not list(m.parameters()) for m in norms)
    x = torch.randn(4, 32) * 3
    y = norms[0](x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(4), atol=1e-4)


def test_inits():
    torch.manual_seed(0)
    cfg = GPTConfig(**{**SMALL, "n_layer": 8})
    gpt2 = GPT(cfg)
    proj = gpt2.blocks[0].mlp.c_proj.weight
    assert abs(proj.std().item() - 0.02 / math.sqrt(16)) < 0.002  # GPT-2 residual scaling
    nano = GPT(GPTConfig(**SMALL, **VARIANTS["nanochat"]))
    assert nano.lm_head.weight.abs().sum() == 0 and nano.blocks[1].attn.c_proj.weight.abs().sum() == 0
    emb = GPT(GPTConfig(**SMALL, tie_embeddings=True, emb_init_std=0.5))
    assert abs(emb.wte.weight.std().item() - 0.5) < 0.05  # the tied head must not overwrite it


def test_softcap_bounds_logits():
    model = make("nanochat")
    with torch.no_grad():
        model.lm_head.weight.mul_(1000)
    logits, _ = model(torch.randint(0, 97, (1, 8)), all_logits=True)
    assert logits.abs().max() <= 15.0 and logits.abs().max() > 14.0


def test_padded_vocab_is_counted_and_never_predicted():
    model = make("padded_vocab")
    assert model.wte.weight.shape[0] == 128 and model.num_params()[0] == make("gpt2").num_params()[0] + 31 * 32
    assert model(torch.randint(0, 97, (1, 4)))[0].shape[-1] == 97


def test_flops_per_token_by_hand():
    c = GPTConfig(**SMALL)
    model = GPT(c)
    per_layer = 32 * 32 * 4 + 2 * (32 * 128)  # q, k, v, o + MLP up and down
    expected = 6 * (2 * per_layer + 97 * 32) + 12 * 2 * 32 * 32
    assert model.flops_per_token() == expected


# (preset, expected parameters, tolerance): config/README.md's computed counts; pycraft ±2% per the card's 55.3M
PRESET_SIZES = [("pycraft_55m", 55.3e6, 0.02), ("gpt2_50m", 50.9e6, 0.005), ("gpt2_150m", 123.6e6, 0.005),
                ("gpt2_225m", 225.3e6, 0.005), ("smallcoder_303m", 302.0e6, 0.005),
                ("parchment_166m", 161.97e6, 0.005), ("picochat_335m", 335.5e6, 0.005)]


@pytest.mark.parametrize("preset,expected,tol", PRESET_SIZES)
def test_preset_parameter_counts(preset, expected, tol):
    cfg = configurator.configure({f.name: f.default for f in fields(GPTConfig)}, [f"--preset={preset}"])
    with torch.device("meta"):
        model = GPT(GPTConfig(**cfg))
    total, _ = model.num_params()
    assert abs(total - expected) / expected < tol, total


def test_tiny_preset_is_small():
    cfg = configurator.configure({f.name: f.default for f in fields(GPTConfig)}, ["--preset=tiny"])
    total, _ = GPT(GPTConfig(**cfg)).num_params()
    assert 1e6 < total < 8e6


def test_model_summary_json():
    out = subprocess.run([sys.executable, "model.py", "--preset=picochat_335m", "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n_layer"] == 16 and summary["vocab_size"] == 65536 and summary["n_kv_head"] == 8
    assert 335e6 < summary["params_total"] < 336e6 and summary["flops_per_token"] > 6 * 200e6


@pytest.mark.parametrize("args,words", [
    (["--preset=nope"], "unknown preset 'nope'"),
    (["--n_layr=3"], "did you mean --n_layer"),
    (["--n_layer=abc"], "expects an integer"),
    (["--mlp=geglu"], "mlp='geglu' is not one of"),
    (["n_layer=3"], "--key=value"),
    (["--n_head=0"], "sizes must be positive"),
])
def test_config_errors_are_one_line(args, words):
    r = subprocess.run([sys.executable, "model.py", *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert words in r.stderr


def test_a_command_line_starts_from_the_file_and_a_prefix_stages():
    g = {"learning_rate": 1.0, "batch_size": 2, "n_layer": 2}
    configurator.configure(g, ["--preset=parchment_166m"])
    assert g["learning_rate"] == 3e-4 and g["n_layer"] == 12
    configurator.configure(g, ["--preset=parchment_166m", "--batch_size=3"], prefix="sft_")
    assert g["learning_rate"] == 1e-4 and g["batch_size"] == 3  # sft_learning_rate wins under the sft_ prefix
    configurator.configure(g, [])
    assert g["learning_rate"] == 1.0 and g["n_layer"] == 2
    with pytest.raises(SystemExit):
        configurator.configure(g, ["--batch_size=2.5"])
    assert g["batch_size"] == 2  # the refused value is not left behind


def test_activation_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = make("pycraft").train()
        model.grad_checkpointing = checkpointing
        idx = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(1))
        model(idx, targets=idx)[1].backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
