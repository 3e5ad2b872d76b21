"""export.py against the reference implementations: transformers' four classes, the `tokenizers` library, and
sft.py's own renderer. Tiny random models of each preset's flags; CPU, offline."""

import http.server
import json
import math
import os
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import torch

import checkpoint
import configurator
import bpe
import data
import sources
import export
import files
import hf
import sft
from configurator import UserError
from model import GPT, GPTConfig

transformers = pytest.importorskip("transformers", reason="the reference classes: pip install -r requirements-test.txt")
tokenizers = pytest.importorskip("tokenizers", reason="the reference tokenizer: pip install -r requirements-test.txt")

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|pad|>", "<|endofprompt|>",
            "<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
            "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]
FAMILIES = {"gpt2_50m": "GPT2LMHeadModel", "parchment_166m": "LlamaForCausalLM", "smallcoder_303m": "LlamaForCausalLM",
            "pycraft_55m": "Qwen3ForCausalLM", "picochat_335m": "NanoChatForCausalLM"}
# odd strings (minbpe's tests): empty, emoji, Korean, long digit runs, trailing spaces, whitespace runs
ODD = ["", "a", "😀👍🏽 family 👨‍👩‍👧", "안녕하세요, 세계! 한국어 텍스트", "1234567890" * 5, "3.14159 and 00042",
       "trailing spaces   ", "   leading", "tabs\t\tand\r\nnewlines\n\n\n  x", "x'S it's I'LL we'VE", "ÀÉÎõü ñ ß ﬁ"]


@pytest.fixture(scope="module")
def stdlib_sample():
    """A handful of the interpreter's own standard library files (text no test author wrote)."""
    files = [f for f in sources.stdlib_files() if Path(f).name in
             ("textwrap.py", "shlex.py", "colorsys.py", "fnmatch.py", "calendar.py", "string.py", "this.py")]
    assert len(files) >= 5
    return [Path(f).read_text(encoding="utf-8") for f in files]


@pytest.fixture(scope="module")
def enc(stdlib_sample):
    """Our own BPE with every special token any template uses."""
    return bpe.train_bpe(stdlib_sample[:2], 256 + 300 + len(SPECIALS), SPECIALS, verbose=False)


@pytest.fixture(scope="module")
def cl100k_dir(tmp_path_factory):
    """cl100k_base as tokenizer.json (the largest: ~1.5 s to build), with card 003's template."""
    out = tmp_path_factory.mktemp("cl100k")
    export.write_tokenizer(data.load_tokenizer("cl100k_base"), out, "parchment", 1024)
    return out


def preset_flags(preset, vocab_size):
    """The preset's architecture flags at a size that runs in milliseconds; GQA kept where the preset has it."""
    names = {f for f in GPTConfig.__dataclass_fields__}
    flags = {k: v for k, v in configurator.load_preset(preset).items() if k in names}
    small = dict(n_layer=2, n_embd=64, n_head=4, block_size=64, vocab_size=vocab_size, pad_vocab_multiple=64)
    small["n_kv_head"] = 2 if flags.get("n_kv_head", 0) not in (0, flags["n_head"]) or preset == "picochat_335m" else 0
    small["ffn_hidden"] = 96 if flags.get("ffn_hidden") else 0
    return {**flags, **small, "dropout": 0.0}


def random_model(flags, seed=0):
    """Weights far from the init (zero heads, unit norms) so every tensor and its layout shows in the logits."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**flags)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) / math.sqrt(p.size(-1)) if p.dim() == 2 else 1 + 0.2 * torch.randn_like(p))
    return model


def greedy_hf(theirs, prompt, n):
    """transformers' greedy decoding with its KV cache, stopping at generation_config.json's eos tokens."""
    out = theirs.generate(prompt, max_new_tokens=n, do_sample=False, use_cache=True, repetition_penalty=1.5)
    return out[0, prompt.size(1):].tolist()

# -----------------------------------------------------------------------------
# models


@pytest.mark.parametrize("preset", sorted(FAMILIES))
def test_export_agrees_with_transformers_and_imports_back_bit_identical(preset, enc, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    model = random_model(preset_flags(preset, enc.n_vocab))
    template = configurator.load_preset(preset)["chat_template"]
    out = export.export(model, enc, tmp_path / "hf", template)
    theirs = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(theirs).__name__ == FAMILIES[preset]
    assert load_file(out / "model.safetensors")[next(iter(load_file(out / "model.safetensors")))].dtype == torch.float32
    assert theirs.get_input_embeddings().weight.size(0) == enc.n_vocab  # the padding rows sliced off

    x = torch.randint(0, enc.n_vocab, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, reference = model(x, all_logits=True)[0], theirs(x).logits
    assert (ours - reference).abs().max().item() < 1e-4
    prompt = x[1:, :6]
    # a random model repeats one token; the CTRL repetition penalty (ours and transformers' alike) keeps it moving
    stop = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    mine = torch.stack(list(model.generate(prompt, 40, temperature=0.0, repetition_penalty=1.5,
                                           stop_tokens=stop if isinstance(stop, list) else [stop])), 1)[0].tolist()
    assert len(mine) == 40 and len(set(mine)) > 5 and mine == greedy_hf(theirs, prompt, 40)

    back, enc2, info = hf.load_hf(str(out))
    assert back.config == model.config and info["architecture"] == FAMILIES[preset]
    assert info["chat_template"] == template and data.tokenizer_hash(enc2) == data.tokenizer_hash(enc)
    V = model.config.vocab_size
    for name, t in model.state_dict().items():
        got = back.state_dict()[name]
        if name in ("wte.weight", "lm_head.weight"):  # padding rows come back as zeros (never targets)
            assert torch.equal(got[:V], t[:V]) and not got[V:].any()
        else:
            assert torch.equal(got, t), name
    assert (back.lm_head.weight is back.wte.weight) == model.config.tie_embeddings


def test_bfloat16_export_and_generation_config(enc, tmp_path):
    model = random_model(preset_flags("picochat_335m", enc.n_vocab))
    out = export.export(model, enc, tmp_path / "hf", "nanochat", weights_dtype="bfloat16")
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"][0] == enc.encode_single_token("<|assistant_end|>")
    back, _, _ = hf.load_hf(str(out))
    w = model.state_dict()["blocks.0.mlp.c_fc.weight"]
    assert torch.equal(back.state_dict()["blocks.0.mlp.c_fc.weight"], w.bfloat16().float())
    assert (out / "model.safetensors").stat().st_size < 0.6 * sum(t.numel() * 4 for t in model.state_dict().values())
    card = (out / "README.md").read_text()
    assert "NanoChatForCausalLM" in card and "from_pretrained" in card and f"{model.num_params()[0]:,}" in card


@pytest.mark.parametrize("kind", ["gpt2", "gpt2_base", "llama", "qwen3", "nanochat"])
def test_folders_saved_by_transformers_import(kind, enc, tmp_path):
    """Folders as the hub holds them, written by transformers' save_pretrained (sharded for llama; GPT-2's
    base model without the LM head, as openai-community/gpt2 is stored, keys without "transformer.")."""
    from transformers import AutoConfig, AutoModelForCausalLM
    size = dict(vocab_size=enc.n_vocab + 3, tie_word_embeddings=kind in ("gpt2", "gpt2_base", "llama"))
    if kind.startswith("gpt2"):
        cfg = AutoConfig.for_model("gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=64, **size)
    else:
        cfg = AutoConfig.for_model(kind, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-5,
                                   rope_parameters={"rope_type": "default", "rope_theta": 5000.0}, **size)
    torch.manual_seed(0)
    theirs = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) / math.sqrt(p.size(-1)) if p.dim() == 2 else 1 + 0.2 * torch.randn_like(p))
    (theirs.transformer if kind == "gpt2_base" else theirs).save_pretrained(tmp_path, max_shard_size="100KB" if kind == "llama" else "1GB")
    export.write_tokenizer(enc, tmp_path)
    model, _, info = hf.load_hf(str(tmp_path))
    assert info["chat_template"] is None and model.config.vocab_size == enc.n_vocab + 3
    x = torch.randint(0, enc.n_vocab, (1, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (model(x, all_logits=True)[0] - theirs(x).logits).abs().max().item() < 1e-4


@pytest.mark.parametrize("flags, flag", [
    (dict(pos="learned", norm="rmsnorm"), "norm"),
    (dict(pos="learned", n_kv_head=2), "n_kv_head"),
    (dict(pos="learned", bias=False), "bias"),
    (dict(pos="rope", norm="rmsnorm", mlp="gelu"), "mlp"),
    (dict(pos="rope", norm="rmsnorm", mlp="swiglu", qk_norm="after_rope"), "qk_norm"),
    (dict(pos="rope", norm="rmsnorm", mlp="relu2", qk_norm="after_rope", embed_norm=True), "norm_affine"),
    (dict(pos="rope", norm="rmsnorm", mlp="swiglu", logit_softcap=30.0), "logit_softcap"),
])
def test_unrepresentable_flags_are_one_error_naming_the_flag(flags, flag):
    with pytest.raises(UserError, match=rf"^error: {flag}="):
        hf.hf_class(GPTConfig(n_head=4, n_embd=64, **flags))


def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "export.py", f"--out_dir={tmp_path}/none"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1 and "no checkpoint" in r.stderr
    r = subprocess.run([sys.executable, "export.py", f"--out_dir={tmp_path}", f"--hf_dir={tmp_path}/"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "overwrite" in r.stderr
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(UserError, match="mistral"):
        hf.load_hf(str(tmp_path / "hf"))

# -----------------------------------------------------------------------------
# tokenizer and chat templates


def hf_ids(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def test_cl100k_tokenizer_json_equals_tiktoken(cl100k_dir, stdlib_sample):
    enc = data.load_tokenizer("cl100k_base")
    tok = tokenizers.Tokenizer.from_file(str(cl100k_dir / "tokenizer.json"))
    for text in stdlib_sample + ODD + ["".join(enc.special_tokens_set) + " x<|endofprompt|>y"]:
        assert hf_ids(tok, text) == enc.encode(text, allowed_special="all")
    # and back: data.py reads it as the same tiktoken encoding (same hash: bins made with cl100k still fit)
    back = data.load_tokenizer(f"hf:{cl100k_dir}")
    assert data.tokenizer_hash(back) == data.tokenizer_hash(enc)


def test_own_and_converted_tokenizers_equal_tiktoken(enc, stdlib_sample, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    theirs = Tokenizer(models.BPE())  # a StarCoder-style tokenizer (digits split off), converted by data.py
    theirs.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False)])
    theirs.train_from_iterator(stdlib_sample[2:], trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<|endoftext|>", "<fim_prefix>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    converted = bpe.encoding_from_hf(json.loads(theirs.to_str()), "hf:test")
    digits2 = bpe.train_bpe(stdlib_sample[:1], 256 + 200 + 9, SPECIALS[6:], pattern="gpt4_digits2", verbose=False)
    for e in (enc, converted, digits2):
        tok = Tokenizer.from_str(json.dumps(export.tokenizer_json(e)))
        for text in stdlib_sample + ODD + ["".join(e.special_tokens_set)]:
            assert hf_ids(tok, text) == e.encode(text, allowed_special="all"), (e.name, text[:40])
        assert tok.decode(e.encode(stdlib_sample[0]), skip_special_tokens=False) == stdlib_sample[0]


CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi there"},
     {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "def f(x):\n    return x"}],
    [{"role": "user", "content": "Spell the word: cat " * 40}, {"role": "assistant", "content": " cat:c,a,t"},
     {"role": "user", "content": "안녕 😀, and 12345?"}, {"role": "assistant", "content": "12345"},
     {"role": "user", "content": "Thanks"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "Summarise.", "input": "Dolly's context."}],
]


@pytest.mark.parametrize("template", sorted(sft.TEMPLATES))
def test_chat_template_gives_render_prompts_ids(template, enc, cl100k_dir, tmp_path):
    from transformers import AutoTokenizer
    folder, tiktok = cl100k_dir, data.load_tokenizer("cl100k_base")
    if template != "parchment":
        folder, tiktok = tmp_path, enc
        ids = export.write_tokenizer(enc, folder, template, 1024)
        stop = sft.stop_tokens(template, tiktok)  # where generate() stops: generation_config.json's eos_token_id
        assert ids["eos_token_id"] == (stop if len(stop) > 1 else stop[0])
    tok = AutoTokenizer.from_pretrained(folder)
    for conv in CONVERSATIONS:
        ids = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        assert ids == sft.render_prompt(template, conv, tiktok)
    stop = sft.stop_tokens(template, tiktok)
    # the tokenizer's eos is its own end of a document, read back on import (data.document_markers)
    assert tok.convert_tokens_to_ids(tok.eos_token) == data.end_ids(tiktok)[0]
    if template == "parchment":
        assert stop[0] == 100257 and tok.pad_token == "<|endofprompt|>"


def test_special_token_text_in_a_message_is_a_control_token_only_under_apply_chat_template(enc, tmp_path):
    """Where the two renderings part: a message that spells a special token. Hugging Face's tokenizer finds added
    tokens anywhere in the rendered text, so the user's "<|endoftext|>" becomes the control token (a user can end a
    turn early); render_prompt encodes what a message says as text, as sft.py trained on it."""
    from transformers import AutoTokenizer
    export.write_tokenizer(enc, tmp_path, "user_assistant", 1024)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    conv = [{"role": "user", "content": "What does <|endoftext|> mean?"}]
    theirs = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    ours = sft.render_prompt("user_assistant", conv, enc)
    eot = enc.encode_single_token("<|endoftext|>")
    assert eot in theirs and eot not in ours and enc.decode(theirs) == enc.decode(ours)

# -----------------------------------------------------------------------------
# import: a hub repo over HTTP, and train.py / sft.py continuing from a Hugging Face folder


def test_hub_repo_is_downloaded_then_loaded(enc, tmp_path, monkeypatch):
    model = random_model(preset_flags("pycraft_55m", enc.n_vocab))
    site = tmp_path / "site" / "someone" / "tiny" / "resolve" / "main"
    export.export(model, enc, site, "magicoder")
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            log.append(self.path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(tmp_path / "site")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setitem(files.URLS, "hf_model_file", f"http://127.0.0.1:{server.server_address[1]}/{{repo}}/resolve/main/{{path}}")
        monkeypatch.setattr(files, "CACHE_DIR", tmp_path / "cache")
        back, _, info = hf.load_hf("someone/tiny")
        assert Path(info["folder"]) == tmp_path / "cache" / "hf" / "someone" / "tiny"
        assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items() if "wte" not in k and "lm_head" not in k)
        n = len(log)
        hf.load_hf("someone/tiny")  # cached: no second download
        assert len(log) == n and any(p.endswith("model.safetensors") for p in log)
        with pytest.raises(UserError, match="someone/missing is no folder here; as a hub repo id: .*404"):
            hf.load_hf("someone/missing")
        # a sharded repo (transformers' save_pretrained): model.safetensors is a 404, the index names the shards
        from transformers import AutoModelForCausalLM
        theirs = AutoModelForCausalLM.from_pretrained(site)
        sharded = tmp_path / "site" / "someone" / "sharded" / "resolve" / "main"
        theirs.save_pretrained(sharded, max_shard_size="50KB")
        export.write_tokenizer(enc, sharded)
        again, _, _ = hf.load_hf("someone/sharded")
        assert all(torch.equal(again.state_dict()[k], v) for k, v in back.state_dict().items())
        assert sum("model-000" in p for p in log) == len(list(sharded.glob("model-*.safetensors"))) > 1
    finally:
        server.shutdown()
        server.server_close()


def damage(weights, how):
    """model.safetensors cut short (4 bytes, 100 bytes: inside the header, mid-tensor) or with a header that is
    not JSON; returns the file."""
    raw = weights.read_bytes()
    start = 8 + int.from_bytes(raw[:8], "little")  # the tensors begin after the length and the JSON header
    weights.write_bytes({"4 bytes": raw[:4], "100 bytes": raw[:100],
                         "mid-tensor": raw[:start + (len(raw) - start) // 2],
                         "header not JSON": raw[:8] + b"\xff" * (start - 8) + raw[start:]}[how])
    return weights


@pytest.mark.parametrize("how", ["4 bytes", "100 bytes", "mid-tensor", "header not JSON"])
def test_a_damaged_safetensors_file_is_one_clear_error(how, enc, tmp_path):
    out = export.export(random_model(preset_flags("pycraft_55m", enc.n_vocab)), enc, tmp_path / "hf")
    damage(out / "model.safetensors", how)
    with pytest.raises(UserError) as info:
        hf.load_hf(str(out))
    message = info.value.message
    assert message.startswith(f"{out / 'model.safetensors'} is damaged or incomplete (") and "\n" not in message
    assert message.endswith("; download or export it again")


def test_weights_of_another_shape_than_config_json_gives_are_one_clear_error(enc, tmp_path):
    out = export.export(random_model(preset_flags("pycraft_55m", enc.n_vocab)), enc, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    config["intermediate_size"] *= 2  # an edited config.json, or weights copied from another model
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"the weights do not match its config.json \(size mismatch for "):
        hf.load_hf(str(out))


def test_a_truncated_download_ends_sft_with_one_line(enc, tmp_path):
    out = export.export(random_model(preset_flags("pycraft_55m", enc.n_vocab)), enc, tmp_path / "hf")
    damage(out / "model.safetensors", "mid-tensor")
    r = subprocess.run([sys.executable, "sft.py", f"--init_from=hf:{out}", f"--out_dir={tmp_path / 'sft'}",
                        "--sft_data=simplemath:40", "--device=cpu", "--dtype=float32"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "is damaged or incomplete (tensor " in r.stderr


def test_train_and_sft_continue_from_a_hugging_face_folder(tmp_path):
    import train
    data.prepare({"dataset": "stdlib_python", "data_dir": str(tmp_path / "data"), "max_chars": 60_000, "tokenizer": "bpe",
                  "vocab_size": 300, "special_tokens": ["<|endoftext|>"], "filters": "none", "val_fraction": 0.1})
    common = [f"--data_dir={tmp_path / 'data'}", "--dataset=stdlib_python", "--n_layer=2", "--n_embd=32", "--n_head=4",
              "--n_kv_head=2", "--pos=rope", "--norm=rmsnorm", "--mlp=swiglu", "--qk_norm=before_rope", "--bias=False",
              "--block_size=32", "--batch_size=4", "--eval_iters=1", "--eval_interval=3", "--device=cpu",
              "--dtype=float32", "--warmup_iters=1"]
    configurator.configure(vars(train), common + [f"--out_dir={tmp_path / 'base'}", "--max_iters=3"])
    train.main()
    export.configure(out_dir=str(tmp_path / "base"), hf_dir=str(tmp_path / "hf"))
    out = export.main()
    card = (out / "README.md").read_text()
    assert "Qwen3ForCausalLM" in card and "val loss" in card and "stdlib_python" in card
    base, _, _ = checkpoint.load_checkpoint(tmp_path / "base")
    imported, _, _ = hf.load_hf(str(out))
    assert all(torch.equal(imported.state_dict()[k], v) for k, v in base.state_dict().items())
    # continue pretraining: the data's tokenizer hash must match the imported one (check_meta in train.main)
    configurator.configure(vars(train), common + [f"--out_dir={tmp_path / 'more'}", "--max_iters=1", f"--init_from=hf:{out}"])
    assert train.main()["iters"] == 1
    summary = sft.main([f"--init_from=hf:{out}", f"--out_dir={tmp_path / 'sft'}", "--sft_data=simplemath:40",
                        "--max_iters=1", "--batch_size=2", "--eval_iters=1", "--device=cpu", "--dtype=float32"])
    assert summary["iters"] == 1 and checkpoint.read_checkpoint(tmp_path / "sft")["chat_template"] == "user_assistant"

def test_a_small_folder_prepares_bins_that_continued_pretraining_reads(tmp_path):
    """A few dozen files and a model's own tokenizer, with data.py's defaults: the 1% draw gives val the last file
    alone, a short note. Val takes whole documents until it holds a window, so train.py --block_size=64 reads it."""
    import train
    text = Path(sources.stdlib_files()[0]).read_text()
    enc = bpe.train_bpe([text[:30000]], 300, ["<|endoftext|>"], verbose=False, num_proc=1)
    torch.manual_seed(0)
    hub = export.export(GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=128, n_layer=1, n_embd=32, n_head=2)), enc,
                        tmp_path / "gpt2")  # GPT-2's flags, tiny
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(36):
        (docs / f"part{i:02d}.py").write_text(text[600 * i:600 * (i + 1)])
    (docs / "zz_note.txt").write_text("A short note.\n")
    out = data.prepare({"dataset": f"files:{docs}", "tokenizer": f"hf:{hub}", "data_dir": str(tmp_path / "data"),
                        "filters": "none"})
    try:
        configurator.configure(vars(train), [f"--init_from=hf:{hub}", f"--dataset=files:{docs}",
                                             f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / 'out'}",
                                             "--block_size=64", "--batch_size=2", "--max_iters=1", "--eval_interval=1",
                                             "--eval_iters=1", "--warmup_iters=0", "--device=cpu", "--dtype=float32"])
        assert train.main()["iters"] == 1
    finally:
        configurator.reset(vars(train))
    assert data.read_meta(out)["val_tokens"] > 1024  # one window of data.py's block_size, whatever train.py's


# -----------------------------------------------------------------------------
# measurements: python -m pytest -m benchmark -s tests/test_export.py


def picochat_stand_in():
    """picochat's tokenizer shape without training 65,536 merges: cl100k's first 65,527 ranks (a prefix of a BPE
    is a BPE), nanochat's split (digits 1-2) and its 9 specials at 65,527-65,535."""
    cl = data.load_tokenizer("cl100k_base")
    ranks = {t: r for t, r in cl._mergeable_ranks.items() if r < 65527}
    names = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
             "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]
    import tiktoken
    return tiktoken.Encoding("picochat_stand_in", pat_str=bpe.GPT4_DIGITS2_SPLIT, mergeable_ranks=ranks,
                             special_tokens={s: 65527 + i for i, s in enumerate(names)})


@pytest.mark.benchmark
@pytest.mark.parametrize("preset", ["parchment_166m", "picochat_335m"])
def test_benchmark_full_size_export_and_load(preset, tmp_path):
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(os.cpu_count())
    flags = {k: v for k, v in configurator.load_preset(preset).items() if k in GPTConfig.__dataclass_fields__}
    enc = data.load_tokenizer("cl100k_base") if preset == "parchment_166m" else picochat_stand_in()
    torch.manual_seed(0)
    model = random_model(flags)  # the presets' own init zeroes picochat's head: random weights show every tensor
    template = configurator.load_preset(preset)["chat_template"]
    t0 = time.time()
    out = export.export(model, enc, tmp_path / preset, template)
    t_export = time.time() - t0
    t0 = time.time()
    theirs = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    t_hf = time.time() - t0
    t0 = time.time()
    back, _, _ = hf.load_hf(str(out))
    t_ours = time.time() - t0
    x = torch.tensor([enc.encode(Path(sources.stdlib_files()[0]).read_text()[:4000])[:256]])
    with torch.no_grad():
        ours, reference = model(x, all_logits=True)[0], theirs(x).logits
    diff = (ours - reference).abs().max().item()
    sizes = {f.name: f.stat().st_size / 1e6 for f in sorted(out.iterdir())}
    print(f"\n{preset}: {model.num_params()[0] / 1e6:.1f}M params, export {t_export:.1f}s, transformers from_pretrained "
          f"{t_hf:.1f}s, hf.load_hf {t_ours:.1f}s, max |logit diff| fp32 over {x.size(1)} tokens {diff:.2e} "
          f"(logits std {ours.std():.2f})")
    print("  files (MB): " + ", ".join(f"{k} {v:,.2f}" for k, v in sizes.items()))
    V = model.config.vocab_size  # parchment pads its table to 100,352 rows: the padding is not exported, comes back zero
    rows = lambda k, t: t[:V] if k in ("wte.weight", "lm_head.weight") else t  # noqa: E731
    assert diff < 1e-3 and all(torch.equal(rows(k, back.state_dict()[k]), rows(k, v)) for k, v in model.state_dict().items())


def test_midtraining_a_foreign_model_asks_for_its_pretraining_bins(tmp_path):
    """A Hugging Face folder that this project did not write names no pretraining data: one line, not a KeyError."""
    enc = bpe.train_bpe([open(sources.stdlib_files()[0]).read()[:20000]], 300, ["<|endoftext|>"], verbose=False)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=32, n_layer=1, n_embd=32, n_head=4, pos="rope",
                          norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False))
    out = export.export(model, enc, tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("slm", None)  # what a folder from the hub looks like
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="--pretrain_data="):
        sft.main([f"--init_from=hf:{out}", f"--out_dir={tmp_path / 'mid'}", "--sft_data=simplemath:40",
                  "--midtrain_ratio=0.5", "--max_iters=1", "--batch_size=2", "--device=cpu", "--dtype=float32"])
