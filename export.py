"""
Models out to Hugging Face format: a checkpoint directory -> a transformers model folder (hf.py reads one back).

    python export.py --out_dir=out/tiny_sft --hf_dir=hf/tiny            # writes the folder below
    python export.py --out_dir=out/parchment_166m_sft --hf_dir=hf/parchment --dtype=bfloat16
    python train.py --preset=tiny --init_from=hf:hf/tiny                 # back in: continue pretraining
    python sft.py --preset=tiny --init_from=hf:openai-community/gpt2     # a hub repo (HF_TOKEN when gated)

The folder holds config.json, model.safetensors, generation_config.json, tokenizer.json,
tokenizer_config.json (with the chat template) and a README.md model card, and loads with
`AutoModelForCausalLM.from_pretrained(dir)` / `AutoTokenizer.from_pretrained(dir)`, no remote code.
The class follows from the architecture flags, never the preset name (hf.hf_class has the table).

From a notebook: `import export; export.configure(out_dir="out/tiny"); export.main()`, and
`model, enc, info = hf.load_hf("hf/tiny")` to read the folder back.
"""

import json
import os
import re
import time
from dataclasses import asdict
from pathlib import Path

import torch

import bpe
import checkpoint
import configurator
import data
import sft
from configurator import UserError
from hf import hf_class, hf_config, to_hf, write_safetensors

# -----------------------------------------------------------------------------
# config

out_dir = "out/tiny_sft"    # the checkpoint directory to export
hf_dir = ""                 # the Hugging Face folder to write; "" means hf/<name of out_dir>
chat_template = ""          # "" means the one the checkpoint was fine-tuned with (sft.TEMPLATES), if any
dtype = "float32"           # weights as written: float32 (exact) | bfloat16 | float16 (half the file)



def configure(**overrides):
    """For notebooks: export.configure(out_dir="out/tiny_sft", hf_dir="hf/tiny"), then export.main()."""
    return configurator.configure(globals(), [], cumulative=True, **overrides)

# -----------------------------------------------------------------------------
# tokenizer: tiktoken ranks -> a byte-level BPE tokenizer.json with the same ids


def tokenizer_json(enc):
    """The `tokenizers` JSON of a tiktoken Encoding (written with plain json: the package is not needed)."""
    ranks = enc._mergeable_ranks
    to_char = bpe.bytes_to_unicode()
    text = {tok: "".join(to_char[b] for b in tok) for tok in ranks}
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        pair = bpe.merge_pair(ranks, tok) if len(tok) > 1 else None
        if pair:
            merges.append([text[pair[0]], text[pair[1]]])
    # each added token with its own flags (Qwen3's <think> is not special), else as `tokenizers` writes a special one
    flags = getattr(enc, "added_tokens", {})
    added = [{"id": i, "content": s, **{k: flags.get(s, {}).get(k, v) for k, v in bpe.ADDED_TOKEN_FLAGS.items()}}
             for s, i in sorted(enc._special_tokens.items(), key=lambda kv: kv[1])]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": enc.normal_form} if isinstance(enc, bpe.NormalizedEncoding) else None,  # Qwen's NFC
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": bpe.to_onig(enc._pat_str)}, "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": post_processor(enc),
        "decoder": {**byte_level, "use_regex": True},
        # ignore_merges: a pre-token that is itself in the vocabulary is one token, as in tiktoken
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  # the specials in the vocab too: `tokenizers` gives an added token that is not there the next
                  # free id, ignoring the one written (cl100k's specials sit after a gap, at 100257-100260, 100276)
                  "vocab": {**{text[tok]: rank for tok, rank in ranks.items()}, **enc._special_tokens}, "merges": merges},
    }


def post_processor(enc):
    """The template that puts the tokenizer's bos before every text where its own files did (data.prepended_ids:
    Llama 3's), so that transformers' encode, and lm-eval, read what they read from the published folder."""
    ids = data.prepended_ids(enc)
    if not ids:
        return None
    bos = enc.decode(ids)
    special = {bos: {"id": bos, "ids": ids, "tokens": [bos]}}
    part = lambda seq, t: [{"SpecialToken": {"id": bos, "type_id": t}}, {"Sequence": {"id": seq, "type_id": t}}]  # noqa: E731
    return {"type": "TemplateProcessing", "single": part("A", 0), "pair": part("A", 0) + part("B", 1), "special_tokens": special}


def _lit(s):
    """A Jinja string literal (JSON's escapes are Jinja's)."""
    return json.dumps(s)


def _fill(fmt, **exprs):
    """sft's str.format template as a Jinja expression: "a{x}b" -> 'a' + x + 'b'."""
    pieces = re.split(r"\{(\w+)\}", fmt)
    return " + ".join(_lit(p) if i % 2 == 0 else exprs[p] for i, p in enumerate(pieces) if p or i % 2)


def chat_template_jinja(name):
    """sft.py's template `name` in Jinja: apply_chat_template(messages, add_generation_prompt=True) gives
    sft.render_prompt's ids, except for a message that spells a special token ("<|endoftext|>"), which Hugging
    Face's tokenizer turns into the control token and render_prompt keeps as text (the safe reading, and the one
    sft.py trained on). As in sft.py the assistant cue belongs to each user turn, so the flag changes
    nothing; a system message leads (parchment) or joins the first user message (the others). An imported model's
    own Jinja template (a dict, sft.py) is written back as it came."""
    if isinstance(name, dict):
        return name["jinja"]
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
    """(bos, stops, pad) token strings: bos is the tokenizer's own (data.document_markers), the stops are the chat
    template's stop tokens, else where a document ends."""
    bos = data.document_markers(enc)["bos_token"]
    if isinstance(template, dict) and template.get("bos_token") in enc.special_tokens_set:
        bos = template["bos_token"]  # a Jinja template writes {{ bos_token }} (Llama 3's): the one it came with
    if template:  # sft.py's own lookups: a tokenizer without the template's tokens is one clear error
        stop = [enc.decode([i]) for i in sft.stop_tokens(template, enc)]
        return bos, stop, enc.decode([sft.pad_token(template, enc)])
    stop = [enc.decode([i]) for i in data.end_ids(enc)]
    return bos, stop, (data.PAD if data.PAD in enc.special_tokens_set else (stop or [None])[0])

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
    chat = (f"Chat template: `{sft.template_name(template)}` (sft.py), stop at `{ckpt['_stop']}`.\n" if template else
            "No chat template: a base (pretrained) model.\n")
    return f"""---
library_name: transformers
pipeline_tag: text-generation
---
# {Path(out).name}

A {total / 1e6:.1f}M-parameter language model trained with this repository's flat scripts, exported by
`export.py` as `{arch}` (no remote code).

- Architecture: {c.n_layer} layers, d_model {c.n_embd}, {c.n_head} query / {c.kv_heads} KV heads (head size {c.head_size}),
  {c.mlp} MLP hidden {c.mlp_width}, {c.pos} positions, {c.norm}, context {c.block_size}, vocabulary {c.vocab_size:,},
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
    # eos_token is the tokenizer's own end of a document, which import reads back (data.document_markers); the
    # chat template's stop tokens are generation_config.json's eos_token_id, where generate() looks for them
    markers = data.document_markers(enc)
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
               "clean_up_tokenization_spaces": False, "bos_token": bos,
               "eos_token": markers["eos_token"] or (stop[0] if stop else None), "pad_token": pad}
    if "add_bos" in getattr(enc, "markers", {}):
        tok_cfg["add_bos_token"] = markers["add_bos"]
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
# main


def main():
    cfg = configurator.effective_config(globals())
    target = cfg["hf_dir"] or os.path.join("hf", Path(cfg["out_dir"]).name)
    if Path(target).resolve() == Path(cfg["out_dir"]).resolve():
        raise UserError(f"hf_dir {target} is the checkpoint directory, whose tokenizer.json it would overwrite; pick another")
    if cfg["dtype"] not in ("float32", "bfloat16", "float16"):
        raise UserError(f"dtype={cfg['dtype']!r} is not one of float32, bfloat16, float16")
    model, enc, ckpt = checkpoint.load_checkpoint(cfg["out_dir"], "cpu")
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
