"""
Models out to and in from Hugging Face format: a checkpoint directory <-> a transformers model folder.

    python export.py --out_dir=out/tiny_sft --hf_dir=hf/tiny            # writes the folder below
    python export.py --out_dir=out/parchment_166m_sft --hf_dir=hf/parchment --dtype=bfloat16
    python train.py --preset=tiny --init_from=hf:hf/tiny                 # back in: continue pretraining
    python sft.py --preset=tiny --init_from=hf:openai-community/gpt2     # a hub repo (HF_TOKEN when gated)

The folder holds config.json, model.safetensors, generation_config.json, tokenizer.json,
tokenizer_config.json (with the chat template) and a README.md model card, and loads with
`AutoModelForCausalLM.from_pretrained(dir)` / `AutoTokenizer.from_pretrained(dir)`, no remote code.
The class follows from the architecture flags (never the preset name):

    pos=learned, layernorm, gelu                         -> GPT2LMHeadModel  (gpt2_*)
    rope, rmsnorm, swiglu, no QK-norm                    -> LlamaForCausalLM (parchment_166m, smallcoder_303m)
    rope, rmsnorm, swiglu, qk_norm=before_rope           -> Qwen3ForCausalLM (pycraft_55m, tiny)
    rope, parameter-free rmsnorm, relu2, qk_norm=after_rope, embed_norm -> NanoChatForCausalLM (picochat_335m)

From a notebook: `import export; export.configure(out_dir="out/tiny"); export.main()`, and
`model, enc, info = export.load_hf("hf/tiny")`. Writing and reading safetensors needs no package
beyond torch: the format is an 8-byte header length, a JSON header, then the raw tensors.
"""

import json
import mmap
import os
import re
import struct
import time
from dataclasses import asdict
from pathlib import Path

import torch

import configurator
import data
from configurator import UserError
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# config

out_dir = "out/tiny_sft"    # the checkpoint directory to export
hf_dir = ""                 # the Hugging Face folder to write; "" means hf/<name of out_dir>
chat_template = ""          # "" means the one the checkpoint was fine-tuned with (sft.TEMPLATES), if any
dtype = "float32"           # weights as written: float32 (exact) | bfloat16 | float16 (half the file)

HF_URL = "https://huggingface.co/{repo}/resolve/main/{path}"  # a file of a hub model repo (--init_from=hf:OWNER/NAME)
TRAINING_FLAGS = ("dropout", "init", "init_std", "emb_init_std", "pad_vocab_multiple")  # no HF field holds these


def configure(**overrides):
    """For notebooks: export.configure(out_dir="out/tiny_sft", hf_dir="hf/tiny"), then export.main()."""
    return configurator.configure(globals(), [], **overrides)

# -----------------------------------------------------------------------------
# tokenizer: tiktoken ranks -> a byte-level BPE tokenizer.json with the same ids


def merge_pair(ranks, token):
    """The two tokens tiktoken joins last when it encodes `token` alone, or None if it never forms it.

    tiktoken merges the adjacent pair whose concatenation has the lowest rank. Inside any text, the bytes
    of a token are merged exactly as when the token is encoded alone (a merge across its edge would have
    changed the edge), so this one pair per token is every merge tiktoken ever makes: listed in rank order
    they are a `tokenizers` BPE that encodes like tiktoken."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], float("inf")))
        if parts[best] + parts[best + 1] not in ranks:
            return None  # only reachable as a whole pre-token (ignore_merges below covers that)
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts[0], parts[1]


def tokenizer_json(enc):
    """The `tokenizers` JSON of a tiktoken Encoding (written with plain json: the package is not needed)."""
    ranks = enc._mergeable_ranks
    to_char = data.bytes_to_unicode()
    text = {tok: "".join(to_char[b] for b in tok) for tok in ranks}
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        pair = merge_pair(ranks, tok) if len(tok) > 1 else None
        if pair:
            merges.append([text[pair[0]], text[pair[1]]])
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for s, i in sorted(enc._special_tokens.items(), key=lambda kv: kv[1])]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": data.to_onig(enc._pat_str)}, "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": None,
        "decoder": {**byte_level, "use_regex": True},
        # ignore_merges: a pre-token that is itself in the vocabulary is one token, as in tiktoken
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  # the specials in the vocab too: `tokenizers` gives an added token that is not there the next
                  # free id, ignoring the one written (cl100k's specials sit after a gap, at 100257-100260, 100276)
                  "vocab": {**{text[tok]: rank for tok, rank in ranks.items()}, **enc._special_tokens}, "merges": merges},
    }


def _lit(s):
    """A Jinja string literal (JSON's escapes are Jinja's)."""
    return json.dumps(s)


def _fill(fmt, **exprs):
    """sft's str.format template as a Jinja expression: "a{x}b" -> 'a' + x + 'b'."""
    pieces = re.split(r"\{(\w+)\}", fmt)
    return " + ".join(_lit(p) if i % 2 == 0 else exprs[p] for i, p in enumerate(pieces) if p or i % 2)


def chat_template_jinja(name):
    """sft.py's template `name` in Jinja: apply_chat_template(messages, add_generation_prompt=True) gives
    sft.render_prompt's ids. As in sft.py the assistant cue belongs to each user turn, so the flag changes
    nothing; a system message leads (parchment) or joins the first user message (the others)."""
    import sft
    if name not in sft.TEMPLATES:
        raise UserError(f"unknown chat template '{name}'; choose one of {', '.join(sft.TEMPLATES)}")
    merge = name != "parchment"
    user, answer, head = {
        "alpaca": ("{% if m.input %}{{ " + _fill(sft.ALPACA_INPUT, instruction="c", input="m.input") + " }}"
                   "{% else %}{{ " + _fill(sft.ALPACA_NO_INPUT, instruction="c") + " }}{% endif %}",
                   "m.content + '<|endoftext|>'", ""),
        "user_assistant": ("{{ 'User: ' + u + '\\nAssistant:' }}",
                           "' ' + (m.content[1:] if m.content.startswith(' ') else m.content) + '<|endoftext|>'", ""),
        "magicoder": ("{{ '# Task: ' + u[:400] + '\\n\\n' }}", "m.content + '<|endoftext|>'", ""),
        "nanochat": ("{{ '<|user_start|>' + u + '<|user_end|><|assistant_start|>' }}",
                     "m.content + '<|assistant_end|>'", "{{ '<|bos|>' }}"),
        "parchment": ("{{ 'user\\n' + u + '<|endoftext|>\\nassistant\\n' }}", "m.content + '<|endoftext|>\\n'",
                      "{{ 'system\\n' + (sys if sys else " + _lit(sft.PARCHMENT_SYSTEM) + ") + '<|endoftext|>\\n' }}"),
    }[name]
    return ("{% if messages[0].role == 'system' %}{% set sys = messages[0].content %}{% set rest = messages[1:] %}"
            "{% else %}{% set sys = none %}{% set rest = messages %}{% endif %}" + head +
            "{% for m in rest %}{% if m.role == 'user' %}"
            + ("{% set c = sys + '\\n\\n' + m.content if loop.first and sys is not none else m.content %}" if merge
               else "{% set c = m.content %}") +
            "{% set u = c + ('\\n\\n' + m.input if m.input else '') %}" + user +
            "{% else %}{{ " + answer + " }}{% endif %}{% endfor %}")


def token_names(enc, template):
    """(bos, eos, pad) token strings: eos is the chat template's stop token, else the end of a document."""
    import sft
    bos = data.BOS if data.BOS in enc.special_tokens_set else None
    if template:  # sft.py's own lookups: a tokenizer without the template's tokens is one clear error
        stop = [enc.decode([i]) for i in sft.stop_tokens(template, enc)]
        return bos, stop, enc.decode([sft.pad_token(template, enc)])
    stop = [t for t in (data.EOT, data.BOS) if t in enc.special_tokens_set]
    return bos, stop, (data.PAD if data.PAD in enc.special_tokens_set else (stop or [None])[0])

# -----------------------------------------------------------------------------
# weights: our names and layouts <-> each transformers class


def hf_class(c):
    """The transformers class that computes what GPTConfig c computes, or one error naming the flag."""
    def need(ok, flag, why):
        if not ok:
            raise UserError(f"{flag}={getattr(c, flag)!r}: {why}; no transformers class (GPT-2, Llama, Qwen3, NanoChat) "
                            "represents this combination, so it cannot be exported")
    need(c.logit_softcap == 0 or c.mlp == "relu2", "logit_softcap", "only NanoChat caps logits")
    need(not c.embed_norm or c.mlp == "relu2", "embed_norm", "only NanoChat normalises the embedding")
    if c.pos == "learned":
        need(c.norm == "layernorm", "norm", "GPT-2 uses LayerNorm")
        need(c.mlp == "gelu", "mlp", "GPT-2's MLP is GELU")
        need(c.n_kv_head in (0, c.n_head), "n_kv_head", "GPT-2 has no grouped-query attention")
        need(c.qk_norm == "none", "qk_norm", "GPT-2 has no QK-norm")
        need(c.bias, "bias", "GPT-2 always has biases")
        need(c.norm_affine, "norm_affine", "GPT-2's LayerNorm has a weight and bias")
        return "GPT2LMHeadModel"
    need(c.norm == "rmsnorm", "norm", "the RoPE models (Llama, Qwen3, NanoChat) use RMSNorm")
    if c.mlp == "swiglu":
        need(c.norm_affine, "norm_affine", "Llama and Qwen3 norms have a weight")
        need(c.qk_norm != "after_rope", "qk_norm", "Qwen3 normalises q and k before RoPE, and Llama not at all")
        if c.qk_norm == "before_rope":
            need(not c.bias, "bias", "Qwen3's MLP has no bias")
            return "Qwen3ForCausalLM"
        return "LlamaForCausalLM"
    need(c.mlp == "relu2", "mlp", "GELU goes with GPT-2 (learned positions), SwiGLU with Llama/Qwen3")
    need(not c.norm_affine, "norm_affine", "NanoChat's norms have no weight")
    need(c.qk_norm == "after_rope", "qk_norm", "NanoChat normalises q and k after RoPE")
    need(c.embed_norm, "embed_norm", "NanoChat normalises the embedding")
    need(not c.bias, "bias", "NanoChat's MLP has no bias")
    return "NanoChatForCausalLM"


def hf_config(c, arch, ids):
    """config.json's fields for GPTConfig c; ids holds bos/eos/pad token ids."""
    common = {"architectures": [arch], "vocab_size": c.vocab_size, "tie_word_embeddings": c.tie_embeddings,
              "initializer_range": c.init_std, "use_cache": True, **ids}
    if arch == "GPT2LMHeadModel":
        return {**common, "model_type": "gpt2", "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
                "n_positions": c.block_size, "n_inner": c.hidden, "activation_function": "gelu_new",
                "layer_norm_epsilon": c.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    rope = {"hidden_size": c.n_embd, "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head,
            "num_key_value_heads": c.kv_heads, "head_dim": c.head_dim, "intermediate_size": c.hidden,
            "max_position_embeddings": c.block_size, "rms_norm_eps": c.norm_eps, "attention_bias": c.bias,
            "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
            "rope_theta": c.rope_theta}  # where transformers 4.x reads it
    if arch == "LlamaForCausalLM":
        return {**common, **rope, "model_type": "llama", "hidden_act": "silu", "mlp_bias": c.bias}
    if arch == "Qwen3ForCausalLM":  # head_dim and rope_theta explicit: Qwen3's defaults are 128 and 1e6
        return {**common, **rope, "model_type": "qwen3", "hidden_act": "silu", "use_sliding_window": False,
                "layer_types": ["full_attention"] * c.n_layer}
    return {**common, **rope, "model_type": "nanochat", "hidden_act": "relu2",
            "final_logit_softcapping": c.logit_softcap or None}


def nanochat_rope_sign(w, n_heads, hs):
    """Negates the second half of each head's rows. Our RoPE turns the pair (x_i, x_{i+hs/2}) by +angle,
    nanochat's by -angle; with those rows negated its rotation yields ours with the second half negated, for q
    and k alike, so q.k, and the parameter-free QK-norm that follows, are unchanged. Its own inverse."""
    sign = torch.ones(n_heads, hs, 1, dtype=w.dtype)
    sign[:, hs // 2:] = -1
    return (w.view(n_heads, hs, -1) * sign).view_as(w)


def hf_names(c, arch):
    """{our tensor name: (HF name, kind)} for every tensor; kind says how the layout differs."""
    hf = {"GPT2LMHeadModel": "gpt2", "NanoChatForCausalLM": "nanochat"}.get(arch, "llama")
    names = {}
    if hf == "gpt2":
        names.update({"wte.weight": ("transformer.wte.weight", "vocab"), "wpe.weight": ("transformer.wpe.weight", ""),
                      "ln_f.weight": ("transformer.ln_f.weight", ""), "ln_f.bias": ("transformer.ln_f.bias", "")})
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
            for a, b in [("ln_1", "ln_1"), ("ln_2", "ln_2")]:
                names.update({ours + a + ".weight": (theirs + b + ".weight", ""), ours + a + ".bias": (theirs + b + ".bias", "")})
            # Conv1D stores (in, out): every matrix transposed; c_attn = [q|k|v] fused along the output
            names.update({ours + "attn.q_proj.weight": (theirs + "attn.c_attn.weight", "qkv"),
                          ours + "attn.q_proj.bias": (theirs + "attn.c_attn.bias", "qkv"),
                          ours + "attn.kv_proj.weight": (theirs + "attn.c_attn.weight", "qkv"),
                          ours + "attn.kv_proj.bias": (theirs + "attn.c_attn.bias", "qkv")})
            for a in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                names.update({ours + a + ".weight": (theirs + a + ".weight", "T"), ours + a + ".bias": (theirs + a + ".bias", "")})
    else:
        names.update({"wte.weight": ("model.embed_tokens.weight", "vocab")})
        if c.norm_affine:
            names["ln_f.weight"] = ("model.norm.weight", "")
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
            rot = "rope_sign" if hf == "nanochat" else ""
            parts = [("attn.q_proj", "self_attn.q_proj", rot), ("attn.kv_proj", "self_attn.k_proj|self_attn.v_proj", "kv"),
                     ("attn.c_proj", "self_attn.o_proj", ""),
                     ("mlp.c_fc", "mlp.fc1" if hf == "nanochat" else "mlp.gate_proj|mlp.up_proj", "" if hf == "nanochat" else "split"),
                     ("mlp.c_proj", "mlp.fc2" if hf == "nanochat" else "mlp.down_proj", "")]
            for a, b, kind in parts:
                for suffix in (".weight", ".bias") if c.bias else (".weight",):
                    names[ours + a + suffix] = ("|".join(theirs + x + suffix for x in b.split("|")), kind)
            if c.norm_affine:
                names.update({ours + "ln_1.weight": (theirs + "input_layernorm.weight", ""),
                              ours + "ln_2.weight": (theirs + "post_attention_layernorm.weight", "")})
                if c.qk_norm != "none":
                    names.update({ours + "attn.q_norm.weight": (theirs + "self_attn.q_norm.weight", ""),
                                  ours + "attn.k_norm.weight": (theirs + "self_attn.k_norm.weight", "")})
    if not c.tie_embeddings:
        names["lm_head.weight"] = ("lm_head.weight", "vocab")
    return names


def to_hf(state, c, arch):
    """Our state dict -> {HF name: tensor}; vocabulary padding rows are dropped."""
    out = {}
    for ours, (theirs, kind) in hf_names(c, arch).items():
        t = state[ours]
        if kind == "vocab":
            t = t[:c.vocab_size]
        elif kind == "T":
            t = t.t()
        elif kind == "split":                                       # c_fc = [gate | up]
            for name, part in zip(theirs.split("|"), t.chunk(2, dim=0)):
                out[name] = part
            continue
        elif kind == "kv":                                          # kv_proj = [k | v]
            k, v = t.split(c.kv_heads * c.head_dim, dim=0)
            if arch == "NanoChatForCausalLM":
                k = nanochat_rope_sign(k, c.kv_heads, c.head_dim)
            for name, part in zip(theirs.split("|"), (k, v)):
                out[name] = part
            continue
        elif kind == "rope_sign":
            t = nanochat_rope_sign(t, c.n_head, c.head_dim)
        elif kind == "qkv":                                         # GPT-2's c_attn = [q | k | v]
            if ours.endswith(("q_proj.weight", "q_proj.bias")):
                kv = state[ours.replace("q_proj", "kv_proj")]
                t = torch.cat([t, kv])
                out[theirs] = t.t() if t.dim() == 2 else t
            continue
        out[theirs] = t
    return {k: v.contiguous() for k, v in out.items()}


def from_hf(tensors, c, arch):
    """{HF name: tensor} -> our state dict (vocabulary rows zero-padded to c.padded_vocab)."""
    state = {}
    for ours, (theirs, kind) in hf_names(c, arch).items():
        if kind in ("split", "kv"):
            a, b = (tensors[n] for n in theirs.split("|"))
            if kind == "kv" and arch == "NanoChatForCausalLM" and ours.endswith("weight"):
                a = nanochat_rope_sign(a, c.kv_heads, c.head_dim)
            state[ours] = torch.cat([a, b])
            continue
        if kind == "qkv":
            t = tensors[theirs]
            t = t.t() if t.dim() == 2 else t
            q_rows = c.n_head * c.head_dim
            state[ours] = t[:q_rows] if "q_proj" in ours else t[q_rows:]
            continue
        t = tensors[theirs]
        if kind == "T":
            t = t.t()
        elif kind == "rope_sign" and ours.endswith("weight"):
            t = nanochat_rope_sign(t, c.n_head, c.head_dim)
        elif kind == "vocab" and c.padded_vocab > c.vocab_size:
            t = torch.cat([t, t.new_zeros(c.padded_vocab - c.vocab_size, t.size(1))])
        state[ours] = t.contiguous()
    if c.tie_embeddings:
        state["lm_head.weight"] = state["wte.weight"]
    return state


def config_from_hf(hf, name):
    """The GPTConfig of a transformers config.json, or one error saying what it cannot represent."""
    kind = hf.get("model_type")

    def need(ok, what):
        if not ok:
            raise UserError(f"{name}: {what}; this model cannot be loaded into GPTConfig")
    need(kind in ("gpt2", "llama", "qwen3", "nanochat"),
         f"model_type {kind!r} is not one of gpt2, llama, qwen3, nanochat")
    if kind == "gpt2":
        need(hf.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh"), "GPT-2 with another activation")
        need(not hf.get("add_cross_attention") and not hf.get("scale_attn_by_inverse_layer_idx"), "GPT-2 variant options")
        n_embd = hf["n_embd"]
        return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"], n_embd=n_embd,
                         n_head=hf["n_head"], ffn_hidden=hf.get("n_inner") or 4 * n_embd, pos="learned",
                         norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5), mlp="gelu",
                         tie_embeddings=hf.get("tie_word_embeddings", True), bias=True,
                         init_std=hf.get("initializer_range", 0.02))
    heads, n_embd = hf["num_attention_heads"], hf["hidden_size"]
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    need(rope.get("rope_type", rope.get("type", "default")) == "default", f"RoPE scaling {rope.get('rope_type')!r}")
    need((hf.get("head_dim") or n_embd // heads) * heads == n_embd, "head_dim * num_attention_heads != hidden_size")
    need(hf.get("attention_bias", False) == hf.get("mlp_bias", hf.get("attention_bias", False)) and
         (kind == "llama" or not hf.get("attention_bias")), "biases on some projections only")
    need(not hf.get("use_sliding_window"), "sliding-window attention")
    act = {"llama": "silu", "qwen3": "silu", "nanochat": "relu2"}[kind]
    need(hf.get("hidden_act", act) == act, f"hidden_act {hf.get('hidden_act')!r} (expected {act})")
    nano = kind == "nanochat"
    return GPTConfig(
        vocab_size=hf["vocab_size"], block_size=hf.get("max_position_embeddings", 2048), n_layer=hf["num_hidden_layers"],
        n_embd=n_embd, n_head=heads, n_kv_head=hf.get("num_key_value_heads") or heads, ffn_hidden=hf["intermediate_size"],
        pos="rope", rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))), norm="rmsnorm",
        norm_affine=not nano, norm_eps=hf.get("rms_norm_eps", 1e-6), mlp="swiglu" if act == "silu" else "relu2",
        qk_norm={"llama": "none", "qwen3": "before_rope", "nanochat": "after_rope"}[kind],
        tie_embeddings=hf.get("tie_word_embeddings", False), bias=bool(hf.get("attention_bias")),
        init="zero_out" if nano else "gpt2", init_std=hf.get("initializer_range", 0.02),
        logit_softcap=float(hf.get("final_logit_softcapping") or 0.0) if nano else 0.0, embed_norm=nano)

# -----------------------------------------------------------------------------
# safetensors, without the package: u64 header length, JSON header, raw little-endian tensors

ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def write_safetensors(tensors, path, metadata=None):
    header, offset = {"__metadata__": {"format": "pt", **(metadata or {})}}, 0
    names = {v: k for k, v in ST_DTYPES.items()}
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the spec pads the header so the tensors start 8-byte aligned
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for t in tensors.values():
            f.write(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    os.replace(tmp, path)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        # mapped, not read: pages come in as the tensors are copied into the model (copy-on-write, so writable)
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY, offset=0)
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in ST_DTYPES:
            raise UserError(f"{path}: tensor {name} has dtype {meta['dtype']}, not one of {', '.join(ST_DTYPES)}")
        start, end = meta["data_offsets"]
        raw = (torch.frombuffer(buf, dtype=torch.uint8, offset=8 + n + start, count=end - start) if end > start
               else torch.empty(0, dtype=torch.uint8))
        out[name] = raw.view(ST_DTYPES[meta["dtype"]]).reshape(meta["shape"])
    return out

# -----------------------------------------------------------------------------
# export


def model_card(model, arch, ckpt, out, template, metrics):
    c, cfg = model.config, ckpt.get("config", {})
    total, non_emb = model.num_params()
    losses = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items() if v is not None) or "not recorded"
    trained = (f"`{'sft.py' if template else 'train.py'} --preset={cfg.get('preset') or '(none)'}` from "
               f"`{cfg.get('init_from', 'scratch')}` on `{cfg.get('sft_data') or cfg.get('dataset', '?')}`, "
               f"{ckpt.get('iter_num', 0):,} steps, learning rate {cfg.get('learning_rate', '?')}; "
               f"{ckpt.get('tokens_seen', 0):,} tokens in this stage" if cfg else "not recorded (no checkpoint)")
    chat = (f"Chat template: `{template}` (sft.py), stop at `{ckpt['_stop']}`.\n" if template else
            "No chat template: a base (pretrained) model.\n")
    return f"""---
library_name: transformers
pipeline_tag: text-generation
---
# {Path(out).name}

A {total / 1e6:.1f}M-parameter language model trained with this repository's flat scripts, exported by
`export.py` as `{arch}` (no remote code).

- Architecture: {c.n_layer} layers, d_model {c.n_embd}, {c.n_head} query / {c.kv_heads} KV heads (head_dim {c.head_dim}),
  {c.mlp} MLP hidden {c.hidden}, {c.pos} positions, {c.norm}, context {c.block_size}, vocabulary {c.vocab_size:,},
  {'tied' if c.tie_embeddings else 'untied'} embeddings{', logits soft-capped at ' + str(c.logit_softcap) if c.logit_softcap else ''}.
- Parameters: {total:,} ({non_emb:,} non-embedding).
- Training: {trained}.
- Final losses: {losses}.
- Tokenizer: `{ckpt['_tokenizer']}` (tiktoken ranks as a byte-level BPE tokenizer.json, same ids).
- {chat}
## Load

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{out}")
model = AutoModelForCausalLM.from_pretrained("{out}")
ids = tok.apply_chat_template([{{"role": "user", "content": "Hello"}}], add_generation_prompt=True, return_tensors="pt")
```

Back into this repository: `python sft.py --init_from=hf:{out}` (or `train.py`).
"""


def last_losses(folder, ckpt):
    """The last evaluation's train and val loss from metrics.jsonl, else the checkpoint's val loss."""
    path = Path(folder) / "metrics.jsonl"
    rows = [json.loads(r) for r in path.read_text().splitlines()] if path.exists() else []
    evals = [r for r in rows if "val_loss" in r or "train_loss" in r]
    if evals:
        return {"train_loss": evals[-1].get("train_loss"), "val_loss": evals[-1].get("val_loss")}
    return {"val_loss": ckpt.get("val_loss")}


def write_tokenizer(enc, out, template="", block_size=None):
    """tokenizer.json and tokenizer_config.json (with the chat template); returns the token ids of bos/eos/pad."""
    bos, stop, pad = token_names(enc, template)
    tid = lambda s: enc.encode_single_token(s) if s else None  # noqa: E731
    eos_ids = [tid(s) for s in stop]
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json(enc), ensure_ascii=False) + "\n")
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
               "clean_up_tokenization_spaces": False, "bos_token": bos, "eos_token": stop[0] if stop else None,
               "pad_token": pad}
    if template:
        tok_cfg["chat_template"] = chat_template_jinja(template)
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")
    return {"bos_token_id": tid(bos), "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else (eos_ids or None),
            "pad_token_id": tid(pad)}


def export(model, enc, hf_dir, template="", ckpt=None, weights_dtype="float32", losses=None):
    """Writes the Hugging Face folder for model (and its tokenizer, chat template); returns its path."""
    c = model.config
    arch = hf_class(c)
    if c.vocab_size < enc.n_vocab:
        raise UserError(f"the tokenizer has {enc.n_vocab} ids but the model only vocab_size={c.vocab_size}")
    out = Path(hf_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = write_tokenizer(enc, out, template, c.block_size)
    extra = asdict(c)  # only this repository reads it back (load_hf): the flags no HF field holds
    config = {**hf_config(c, arch, ids), "dtype": weights_dtype, "torch_dtype": weights_dtype, "slm": {"model_flags": extra, "chat_template": template,
              "train_config": {k: v for k, v in (ckpt or {}).get("config", {}).items()
                               if k in ("preset", "dataset", "data_dir", "sft_data")}}}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps({**ids, "do_sample": False}, indent=2) + "\n")
    tensors = {k: v.to(getattr(torch, weights_dtype)) for k, v in to_hf(model.state_dict(), c, arch).items()}
    write_safetensors(tensors, out / "model.safetensors")
    stop = token_names(enc, template)[1]
    card = {"_stop": "`, `".join(stop), "_tokenizer": enc.name, **(ckpt or {})}
    (out / "README.md").write_text(model_card(model, arch, card, out, template, losses or {}))
    return out

# -----------------------------------------------------------------------------
# import: a folder or hub repo -> (GPT, tiktoken Encoding, info)


def hf_folder(spec):
    """A local folder, or a hub repo id whose files are downloaded once (data.download, HF_TOKEN when set)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise UserError(f"no Hugging Face model folder at {spec}, and it is not a hub repo id (OWNER/NAME)")
    folder = data.CACHE_DIR / "hf" / spec
    get = lambda name: data.download(HF_URL.format(repo=spec, path=name), folder / name, desc=f"{spec} {name}")  # noqa: E731
    try:
        get("config.json")
    except UserError as e:
        raise UserError(f"{spec} is no folder here; as a hub repo id: {e.message}") from None
    get("tokenizer.json")
    for name in ("tokenizer_config.json", "generation_config.json"):
        try:
            get(name)
        except UserError:
            pass  # optional files
    try:
        get("model.safetensors")
    except UserError as single:
        try:  # a large model is sharded: an index names the files
            index = json.loads(get("model.safetensors.index.json").read_text())
        except UserError:
            raise single from None
        for shard in sorted(set(index["weight_map"].values())):
            get(shard)
    return folder


def load_hf(spec, device="cpu", **model_overrides):
    """(model in eval mode, tokenizer, info) from a Hugging Face folder or hub repo id; info holds the HF config,
    the class, the folder, the chat template and training config when this repository exported it."""
    folder = hf_folder(spec)
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    hf = data._read_json(folder / "config.json")
    ours = hf.get("slm", {})
    stored = ours.get("model_flags", {})
    flags = {**asdict(config_from_hf(hf, str(folder))), **{k: v for k, v in stored.items() if k in TRAINING_FLAGS}}
    for key, prop in (("n_kv_head", "kv_heads"), ("ffn_hidden", "hidden")):  # 0 = the default, as it was exported
        if key in stored and getattr(GPTConfig(**{**flags, key: stored[key]}), prop) == getattr(GPTConfig(**flags), prop):
            flags[key] = stored[key]
    config = GPTConfig(**{**flags, **model_overrides})
    arch = hf_class(config)
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise UserError(f"{folder} has no model.safetensors (only safetensors weights are read, never pickles)")
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(f))
    # a checkpoint saved from the base model (openai-community/gpt2) has no "transformer."/"model." prefix
    prefix = "transformer." if arch == "GPT2LMHeadModel" else "model."
    tensors = {(k if k.startswith(prefix) or k.startswith("lm_head.") else prefix + k): v.float() for k, v in tensors.items()}
    if config.tie_embeddings and "lm_head.weight" in tensors and "model.embed_tokens.weight" not in tensors:
        tensors["model.embed_tokens.weight"] = tensors["lm_head.weight"]
    try:
        state = from_hf(tensors, config, arch)
    except KeyError as e:
        raise UserError(f"{folder}: the weights lack {e.args[0]}, which a {arch} of this config has") from None
    with torch.device("meta"):  # no time spent on a random init that the weights overwrite
        model = GPT(config)
    model.to_empty(device=device)
    if config.tie_embeddings:
        model.lm_head.weight = model.wte.weight
    model.load_state_dict(state)
    set_rope(model)
    enc = data.load_tokenizer(str(folder / "tokenizer.json"))
    if enc.n_vocab > config.vocab_size:
        raise UserError(f"{folder}: the tokenizer has {enc.n_vocab} ids but the model only {config.vocab_size}")
    info = {"hf_config": hf, "architecture": arch, "folder": str(folder), "chat_template": ours.get("chat_template") or None,
            "config": ours.get("train_config", {})}
    return model.eval(), enc, info


def set_rope(model):
    """The RoPE tables, which a model built on the meta device lacks."""
    c = model.config
    if c.pos == "rope":
        from model import rope_cache
        model.rope_cos, model.rope_sin = rope_cache(c.block_size, c.head_dim, c.rope_theta, model.wte.weight.device)

# -----------------------------------------------------------------------------
# main


def main():
    cfg = configurator.effective_config(globals())
    target = cfg["hf_dir"] or os.path.join("hf", Path(cfg["out_dir"]).name)
    if Path(target).resolve() == Path(cfg["out_dir"]).resolve():
        raise UserError(f"hf_dir {target} is the checkpoint directory, whose tokenizer.json it would overwrite; pick another")
    if cfg["dtype"] not in ("float32", "bfloat16", "float16"):
        raise UserError(f"dtype={cfg['dtype']!r} is not one of float32, bfloat16, float16")
    import train
    model, enc, ckpt = train.load_checkpoint(cfg["out_dir"], "cpu")
    template = cfg["chat_template"] or ckpt.get("chat_template") or ""
    t0 = time.time()
    out = export(model, enc, target, template, ckpt, cfg["dtype"], last_losses(cfg["out_dir"], ckpt))
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"exported {cfg['out_dir']} as {hf_class(model.config)} to {out} ({size:,.1f} MB, {time.time() - t0:.1f}s); "
          f"load it with AutoModelForCausalLM.from_pretrained('{out}')")
    return out


if __name__ == "__main__":
    configurator.configure(globals())
    main()
