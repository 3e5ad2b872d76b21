"""
The Hugging Face format: our weights' names and layouts <-> each transformers class, safetensors without the
package, and reading a transformers model folder or hub repo back in (--init_from=hf: in train.py and sft.py).
export.py writes such folders; this file holds what both directions share, so that train.py can read one
without importing the exporter.

    model, enc, info = hf.load_hf("hf/tiny")          # a folder export.py wrote, or any GPT-2/Llama/Qwen2/Qwen3/NanoChat
    model, enc, info = hf.load_hf("openai-community/gpt2")   # a hub repo, downloaded once (HF_TOKEN when gated)

The class follows from the architecture flags (never the preset name):

    pos=learned, layernorm, gelu                         -> GPT2LMHeadModel  (gpt2_*)
    rope, rmsnorm, swiglu, no QK-norm                    -> LlamaForCausalLM (parchment_166m, smallcoder_303m;
                                                            SmolLM2, Llama 3.2 with rope_scaling=32)
    rope, rmsnorm, swiglu, bias=False, qkv_bias=True     -> Qwen2ForCausalLM (Qwen2.5)
    rope, rmsnorm, swiglu, qk_norm=before_rope           -> Qwen3ForCausalLM (pycraft_55m, tiny; Qwen3 with head_dim=128)
    rope, parameter-free rmsnorm, relu2, qk_norm=after_rope, embed_norm -> NanoChatForCausalLM (picochat_335m)

Writing and reading safetensors needs no package beyond torch: the format is an 8-byte header length, a JSON
header, then the raw tensors.
"""

import datetime
import functools
import json
import math
import mmap
import os
import re
import struct
from dataclasses import asdict
from pathlib import Path

import torch

import data
import files
from configurator import UserError
from model import GPT, GPTConfig, rope_cache

TRAINING_FLAGS = ("dropout", "init", "init_std", "emb_init_std", "pad_vocab_multiple")  # no HF field holds these

# -----------------------------------------------------------------------------
# weights: our names and layouts <-> each transformers class


def hf_class(c):
    """The transformers class that computes what GPTConfig c computes, or one error naming the flag."""
    def need(ok, flag, why):
        if not ok:
            raise UserError(f"{flag}={getattr(c, flag)!r}: {why}; no transformers class (GPT-2, Llama, Qwen2, Qwen3, NanoChat) "
                            "represents this combination, so it cannot be exported")
    need(c.logit_softcap == 0 or c.mlp == "relu2", "logit_softcap", "only NanoChat caps logits")
    need(not c.embed_norm or c.mlp == "relu2", "embed_norm", "only NanoChat normalises the embedding")
    if c.pos == "learned":
        need(c.norm == "layernorm", "norm", "GPT-2 uses LayerNorm")
        need(c.mlp == "gelu", "mlp", "GPT-2's MLP is GELU")
        need(c.n_kv_head in (0, c.n_head), "n_kv_head", "GPT-2 has no grouped-query attention")
        need(c.head_size * c.n_head == c.n_embd, "head_dim", "GPT-2's heads split n_embd")
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
            need(not c.qkv_bias, "qkv_bias", "Qwen3's attention has no bias")
            return "Qwen3ForCausalLM"
        if c.qkv_bias and not c.bias:  # q, k and v biased, the output projection and MLP not
            return "Qwen2ForCausalLM"
        return "LlamaForCausalLM"
    need(c.mlp == "relu2", "mlp", "GELU goes with GPT-2 (learned positions), SwiGLU with Llama/Qwen3")
    need(not c.norm_affine, "norm_affine", "NanoChat's norms have no weight")
    need(c.qk_norm == "after_rope", "qk_norm", "NanoChat normalises q and k after RoPE")
    need(c.embed_norm, "embed_norm", "NanoChat normalises the embedding")
    need(not c.bias, "bias", "NanoChat's MLP has no bias")
    need(not c.qkv_bias, "qkv_bias", "NanoChat's attention has no bias")
    need(c.rope_scaling == 1, "rope_scaling", "NanoChat's RoPE is not scaled")
    return "NanoChatForCausalLM"


def hf_config(c, arch, ids):
    """config.json's fields for GPTConfig c; ids holds bos/eos/pad token ids."""
    common = {"architectures": [arch], "vocab_size": c.vocab_size, "tie_word_embeddings": c.tie_embeddings,
              "initializer_range": c.init_std, "use_cache": True, **ids}
    if arch == "GPT2LMHeadModel":
        return {**common, "model_type": "gpt2", "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
                "n_positions": c.block_size, "n_inner": c.mlp_width, "activation_function": "gelu_new",
                "layer_norm_epsilon": c.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    scaling = {"rope_type": "default"}
    if c.rope_scaling != 1:  # Llama 3's frequency scaling, model.rope_frequencies
        scaling = {"rope_type": "llama3", "factor": c.rope_scaling, "low_freq_factor": c.rope_low_freq_factor,
                   "high_freq_factor": c.rope_high_freq_factor, "original_max_position_embeddings": c.rope_original_context}
    rope = {"hidden_size": c.n_embd, "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head,
            "num_key_value_heads": c.kv_heads, "head_dim": c.head_size, "intermediate_size": c.mlp_width,
            "max_position_embeddings": c.block_size, "rms_norm_eps": c.norm_eps, "attention_bias": c.bias,
            "rope_parameters": {**scaling, "rope_theta": c.rope_theta},
            "rope_theta": c.rope_theta,  # where transformers 4.x reads it, and the scaling:
            "rope_scaling": scaling if c.rope_scaling != 1 else None}
    if arch == "LlamaForCausalLM":
        return {**common, **rope, "model_type": "llama", "hidden_act": "silu", "mlp_bias": c.bias}
    if arch == "Qwen2ForCausalLM":  # its q, k, v always carry a bias and its o_proj and MLP never
        return {**common, **rope, "model_type": "qwen2", "hidden_act": "silu", "use_sliding_window": False,
                "max_window_layers": c.n_layer, "layer_types": ["full_attention"] * c.n_layer}
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
            # Conv1D stores (in, out): every matrix transposed; its c_attn is our qkv, [q | k | v] along the output
            names.update({ours + "attn.qkv.weight": (theirs + "attn.c_attn.weight", "T"),
                          ours + "attn.qkv.bias": (theirs + "attn.c_attn.bias", "")})
            for a in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                names.update({ours + a + ".weight": (theirs + a + ".weight", "T"), ours + a + ".bias": (theirs + a + ".bias", "")})
    else:
        names.update({"wte.weight": ("model.embed_tokens.weight", "vocab")})
        if c.norm_affine:
            names["ln_f.weight"] = ("model.norm.weight", "")
        for i in range(c.n_layer):
            ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
            parts = [("attn.qkv", "self_attn.q_proj|self_attn.k_proj|self_attn.v_proj", "qkv"),
                     ("attn.c_proj", "self_attn.o_proj", ""),
                     ("mlp.c_fc", "mlp.fc1" if hf == "nanochat" else "mlp.gate_proj|mlp.up_proj", "" if hf == "nanochat" else "split"),
                     ("mlp.c_proj", "mlp.fc2" if hf == "nanochat" else "mlp.down_proj", "")]
            for a, b, kind in parts:
                for suffix in (".weight", ".bias") if c.bias or (c.qkv_bias and a == "attn.qkv") else (".weight",):
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


def rope_signs(parts, c, arch):
    """nanochat's q and k with their rows' RoPE sign flipped (nanochat_rope_sign, its own inverse); v as it is."""
    if arch != "NanoChatForCausalLM":
        return parts
    q, k, v = parts
    return [nanochat_rope_sign(q, c.n_head, c.head_size), nanochat_rope_sign(k, c.kv_heads, c.head_size), v]


def to_hf(state, c, arch):
    """Our state dict -> {HF name: tensor}; vocabulary padding rows are dropped."""
    out = {}
    for ours, (theirs, kind) in hf_names(c, arch).items():
        t = state[ours]
        if kind == "vocab":
            t = t[:c.vocab_size]
        elif kind == "T":
            t = t.t()
        elif kind in ("split", "qkv"):
            parts = t.split(c.qkv_rows if kind == "qkv" else [c.mlp_width] * 2)  # [q | k | v] or c_fc's [gate | up]
            out.update(zip(theirs.split("|"), rope_signs(parts, c, arch) if kind == "qkv" else parts))
            continue
        out[theirs] = t
    return {k: v.contiguous() for k, v in out.items()}


def from_hf(tensors, c, arch):
    """{HF name: tensor} -> our state dict (vocabulary rows zero-padded to c.padded_vocab)."""
    state = {}
    for ours, (theirs, kind) in hf_names(c, arch).items():
        if kind in ("split", "qkv"):
            parts = [tensors[n] for n in theirs.split("|")]
            state[ours] = torch.cat(rope_signs(parts, c, arch) if kind == "qkv" else parts)
            continue
        t = tensors[theirs]
        if kind == "T":
            t = t.t()
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
    need(kind in ("gpt2", "llama", "qwen2", "qwen3", "nanochat"),
         f"model_type {kind!r} is not one of gpt2, llama, qwen2, qwen3, nanochat")
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
    # transformers 5 writes rope_parameters (theta and scaling together); 4.x wrote rope_theta and rope_scaling
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    need(rope_type in ("default", "llama3"), f"rope_type {rope_type!r} (RoPE scaling other than Llama 3's) is not computed here")
    scaling = {}
    if rope_type == "llama3":
        original = rope.get("original_max_position_embeddings") or hf.get("max_position_embeddings", 8192)
        scaling = dict(rope_scaling=float(rope.get("factor", 1.0)), rope_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
                       rope_high_freq_factor=float(rope.get("high_freq_factor", 4.0)), rope_original_context=int(original))
    head_dim = hf.get("head_dim") or 0
    if n_embd % heads == 0 and head_dim == n_embd // heads:
        head_dim = 0  # the default
    attn_bias, mlp_bias = bool(hf.get("attention_bias")), bool(hf.get("mlp_bias", hf.get("attention_bias")))
    if kind == "llama":
        need(attn_bias == mlp_bias, f"attention_bias={attn_bias} with mlp_bias={mlp_bias} (a bias on some "
                                    "projections only, q/k/v/o or the MLP)")
    else:  # Qwen2 biases q, k and v whatever attention_bias says; Qwen3 and NanoChat take none
        need(kind == "qwen2" or not attn_bias, f"attention_bias=True in a {kind} model")
    need(not hf.get("use_sliding_window"), "use_sliding_window=True (sliding-window attention)")
    act = {"llama": "silu", "qwen2": "silu", "qwen3": "silu", "nanochat": "relu2"}[kind]
    need(hf.get("hidden_act", act) == act, f"hidden_act {hf.get('hidden_act')!r} (expected {act})")
    nano = kind == "nanochat"
    return GPTConfig(
        vocab_size=hf["vocab_size"], block_size=hf.get("max_position_embeddings", 2048), n_layer=hf["num_hidden_layers"],
        n_embd=n_embd, n_head=heads, n_kv_head=hf.get("num_key_value_heads") or heads, head_dim=head_dim,
        ffn_hidden=hf["intermediate_size"], pos="rope",
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))), **scaling, norm="rmsnorm",
        norm_affine=not nano, norm_eps=hf.get("rms_norm_eps", 1e-6), mlp="swiglu" if act == "silu" else "relu2",
        qk_norm={"llama": "none", "qwen2": "none", "qwen3": "before_rope", "nanochat": "after_rope"}[kind],
        tie_embeddings=hf.get("tie_word_embeddings", False), bias=attn_bias and kind == "llama", qkv_bias=kind == "qwen2",
        init="zero_out" if nano else "scaled_residual", init_std=hf.get("initializer_range", 0.02),
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
    """{name: tensor} of a safetensors file. Every length and offset is checked against the file's size before a
    byte is used, so a truncated download or a damaged file is one clear error, never a traceback."""
    def damaged(what):
        return UserError(f"{path} is damaged or incomplete ({what}); download or export it again")
    size = os.path.getsize(path)
    if size < 8:
        raise damaged(f"{size} bytes, less than the 8 that give its header's length")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > size - 8:
            raise damaged(f"its header should take {n:,} bytes but only {size - 8:,} follow")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise damaged("its header is not JSON") from None
        # mapped, not read: pages come in as the tensors are copied into the model (copy-on-write, so writable)
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY, offset=0)
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = meta["dtype"], [int(d) for d in meta["shape"]], meta["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise damaged(f"tensor {name} lacks a dtype, shape or data_offsets") from None
        if dtype not in ST_DTYPES:
            raise UserError(f"{path}: tensor {name} has dtype {dtype}, not one of {', '.join(ST_DTYPES)}")
        nbytes = math.prod(shape) * ST_DTYPES[dtype].itemsize
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start and end - start == nbytes):
            raise damaged(f"tensor {name} of shape {shape} does not fit its data_offsets {[start, end]}")
        if 8 + n + end > size:
            raise damaged(f"tensor {name} ends at byte {8 + n + end:,} of a {size:,}-byte file")
        raw = (torch.frombuffer(buf, dtype=torch.uint8, offset=8 + n + start, count=nbytes) if nbytes
               else torch.empty(0, dtype=torch.uint8))
        out[name] = raw.view(ST_DTYPES[dtype]).reshape(shape)
    return out

# -----------------------------------------------------------------------------
# import: a folder or hub repo -> (GPT, tiktoken Encoding, info)


def hf_folder(spec):
    """A local folder, or a hub repo id whose files are downloaded once (files.download, HF_TOKEN when set)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise UserError(f"no Hugging Face model folder at {spec}, and it is not a hub repo id (OWNER/NAME)")
    folder = files.CACHE_DIR / "hf" / spec
    get = lambda name: files.download(files.URLS["hf_model_file"].format(repo=spec, path=name), folder / name, desc=f"{spec} {name}")  # noqa: E731
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
    hf = files.read_json(folder / "config.json")
    ours = hf.get("slm", {})
    stored = ours.get("model_flags", {})
    flags = {**asdict(config_from_hf(hf, str(folder))), **{k: v for k, v in stored.items() if k in TRAINING_FLAGS}}
    for key, prop in (("n_kv_head", "kv_heads"), ("head_dim", "head_size"), ("ffn_hidden", "mlp_width")):  # 0 = the default, as it was exported
        if key in stored and getattr(GPTConfig(**{**flags, key: stored[key]}), prop) == getattr(GPTConfig(**flags), prop):
            flags[key] = stored[key]
    config = GPTConfig(**{**flags, **model_overrides})
    arch = hf_class(config)
    shards = sorted(folder.glob("model*.safetensors"))
    if not shards:
        raise UserError(f"{folder} has no model.safetensors (only safetensors weights are read, never pickles)")
    tensors = {}
    for f in shards:
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
    except RuntimeError as e:  # parts that will not join (q, k, v of other widths than config.json gives)
        raise UserError(f"{folder}: the weights do not match its config.json ({str(e).splitlines()[0]})") from None
    with torch.device("meta"):  # no time spent on a random init that the weights overwrite
        model = GPT(config)
    model.to_empty(device=device)
    if config.tie_embeddings:
        model.lm_head.weight = model.wte.weight
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # a tensor of another shape than config.json gives it
        detail = next((l.strip() for l in str(e).splitlines() if "size mismatch" in l), str(e).splitlines()[-1])
        raise UserError(f"{folder}: the weights do not match its config.json ({detail.rstrip('.')})") from None
    set_rope(model)
    enc = data.load_tokenizer(str(folder / "tokenizer.json"))
    if enc.n_vocab > config.vocab_size:
        raise UserError(f"{folder}: the tokenizer has {enc.n_vocab} ids but the model only {config.vocab_size}")
    info = {"hf_config": hf, "architecture": arch, "folder": str(folder),
            "chat_template": ours.get("chat_template") or hf_chat_template(folder), "config": ours.get("train_config", {})}
    return model.eval(), enc, info


def set_rope(model):
    """The RoPE tables, which a model built on the meta device lacks."""
    c = model.config
    if c.pos == "rope":
        model.rope_cos, model.rope_sin = rope_cache(c, model.wte.weight.device)

# -----------------------------------------------------------------------------
# chat templates: a folder's own Jinja template, rendered as transformers' apply_chat_template renders it


def hf_chat_template(folder):
    """A folder's Jinja chat template as sft.py keeps it ({"jinja", "bos_token", "eos_token"}), or None: from
    chat_template.jinja (transformers >= 4.43 writes it) or tokenizer_config.json's chat_template."""
    path = Path(folder) / "tokenizer_config.json"
    tok = files.read_json(path) if path.is_file() else {}
    source = tok.get("chat_template")
    if isinstance(source, list):  # several named templates: the default one
        source = next((t["template"] for t in source if t.get("name") == "default"), None)
    if (Path(folder) / "chat_template.jinja").is_file():
        source = (Path(folder) / "chat_template.jinja").read_text(encoding="utf-8")
    token = lambda t: t.get("content") if isinstance(t, dict) else t  # noqa: E731  (an AddedToken is written as a dict)
    if not source:
        return None
    return {"jinja": source, "bos_token": token(tok.get("bos_token")), "eos_token": token(tok.get("eos_token"))}


@functools.lru_cache(maxsize=4)
def _compile_jinja(source):
    try:
        import jinja2.sandbox
    except ImportError:
        raise UserError("this model's chat template is Jinja, which needs jinja2: pip install jinja2 (or pass "
                        "--chat_template=NAME, one of sft.py's templates)") from None

    def raise_exception(message):
        raise UserError(f"the model's chat template refused the conversation: {message}")
    # the environment transformers' apply_chat_template renders with: sandboxed, blocks trimmed, loop controls
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=["jinja2.ext.loopcontrols"])
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.datetime.now().strftime(f))
    return env.from_string(source)


def render_jinja(template, messages, add_generation_prompt):
    """The text of messages in the template. enable_thinking=False: Qwen3's non-thinking mode, whose generation
    prompt holds the empty <think></think> that its template writes before the last answer, so sampling starts
    where training did; other templates ignore it."""
    return _compile_jinja(template["jinja"]).render(
        messages=messages, add_generation_prompt=add_generation_prompt, enable_thinking=False,
        bos_token=template.get("bos_token") or "", eos_token=template.get("eos_token") or "")


def _split_specials(text, enc, trained):
    """(piece, trained) with the special tokens the template wrote as ids, the text between as strings: what
    `tokenizers` does with a rendered template (added tokens first, then the pre-tokenizer between them)."""
    names = sorted(enc.special_tokens_set, key=len, reverse=True)
    for i, piece in enumerate(re.split("(" + "|".join(map(re.escape, names)) + ")", text) if names else [text]):
        if piece:
            yield (enc.encode_single_token(piece) if i % 2 else piece), trained


def chat_segments(template, messages, enc):
    """(piece, trained) of a conversation in a model's own template, pieces as sft.render takes them (text, or a
    special token's id). Trained: each assistant message's text, found in the rendering in order, and what follows
    it up to and including the first special token (its end of turn, <|im_end|> or <|eot_id|>)."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    text = render_jinja(template, messages, add_generation_prompt=messages[-1]["role"] == "user")
    specials = re.compile("|".join(map(re.escape, sorted(enc.special_tokens_set, key=len, reverse=True))) or "$^")
    pos = 0
    for m in messages:
        if m["role"] != "assistant":
            continue
        content = m["content"] if m["content"] in text[pos:] else m["content"].strip()  # Llama 3 trims it
        at = text.find(content, pos)
        if at < 0 or not content:
            raise UserError("the model's chat template changes an assistant message, so its tokens cannot be found "
                            "for the loss; pass --chat_template=NAME (one of sft.py's templates)")
        close = specials.search(text, at + len(content))
        end = close.end() if close else at + len(content)
        yield from _split_specials(text[pos:at], enc, 0)
        yield from _split_specials(text[at:end], enc, 1)
        pos = end
    yield from _split_specials(text[pos:], enc, 0)
