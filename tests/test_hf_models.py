"""--init_from=hf: on the small models people download: GPT-2 124M, SmolLM2-135M/360M, Qwen2.5-0.5B/1.5B,
Qwen3-0.6B/1.7B and Llama-3.2-1B/3B. Each published config.json is written below; transformers builds a
random-weight model of it, save_pretrained writes the folder, and our import must compute what transformers
computes, generate the same greedy tokens, fine-tune, and export back to the same class bit for bit.

Shrunk for speed (a 2-core CPU, seconds per model): num_hidden_layers -> 2; vocab_size -> 2048; the widths
(hidden_size, intermediate_size, the head counts) by one factor per model that leaves one KV head; bos/eos ids past
the vocabulary dropped. Kept: head_dim, query heads per KV head (GQA), head_dim * heads / hidden_size,
intermediate_size / hidden_size (rounded), rope_theta and rope_scaling, norm eps, tying, biases, activation. The
README recipe's test keeps SmolLM2-135M's config whole but for its depth.

The tokenizers are stand-ins: byte-level BPEs trained here with the `tokenizers` library using each family's
published pre-tokenizer, normalizer and special tokens (at their published ids), converted to tiktoken by the
project's own path (data.load_tokenizer) and compared id for id with `tokenizers`."""

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bpe
import data
import sources
import export
import hf
import sft
from configurator import UserError
from model import GPTConfig, rope_frequencies

transformers = pytest.importorskip("transformers", reason="the reference classes: pip install -r requirements-test.txt")
tokenizers = pytest.importorskip("tokenizers", reason="the reference tokenizer: pip install -r requirements-test.txt")

ROOT = Path(__file__).resolve().parent.parent

# -----------------------------------------------------------------------------
# the published configs (config.json on the hub, the fields that shape the computation)

LLAMA3_ROPE = {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
               "original_max_position_embeddings": 8192, "rope_type": "llama3"}
PUBLISHED = {
    "gpt2": dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=50257, n_positions=1024, n_ctx=1024,
                 n_embd=768, n_layer=12, n_head=12, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                 resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, initializer_range=0.02, bos_token_id=50256,
                 eos_token_id=50256),
    "smollm2_135m": dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=49152, hidden_size=576,
                         intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0, rope_scaling=None,
                         attention_bias=False, mlp_bias=False, tie_word_embeddings=True, hidden_act="silu",
                         initializer_range=0.041666666666666664, bos_token_id=0, eos_token_id=0),
    "smollm2_360m": dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=49152, hidden_size=960,
                         intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0, rope_scaling=None,
                         attention_bias=False, mlp_bias=False, tie_word_embeddings=True, hidden_act="silu",
                         initializer_range=0.02, bos_token_id=0, eos_token_id=0),
    "qwen2.5_0.5b": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=151936, hidden_size=896,
                         intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0, sliding_window=32768,
                         use_sliding_window=False, max_window_layers=24, tie_word_embeddings=True, hidden_act="silu",
                         initializer_range=0.02, bos_token_id=151643, eos_token_id=151643),
    "qwen3_0.6b": dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], vocab_size=151936, hidden_size=1024,
                       intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
                       rope_scaling=None, attention_bias=False, use_sliding_window=False, sliding_window=None,
                       max_window_layers=28, tie_word_embeddings=True, hidden_act="silu", initializer_range=0.02,
                       bos_token_id=151643, eos_token_id=151645),
    "llama3.2_1b": dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=128256, hidden_size=2048,
                        intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                        head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                        rope_scaling=LLAMA3_ROPE, attention_bias=False, mlp_bias=False, tie_word_embeddings=True,
                        hidden_act="silu", initializer_range=0.02, bos_token_id=128000, eos_token_id=128001),
    "llama3.2_3b": dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=128256, hidden_size=3072,
                        intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                        head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                        rope_scaling=LLAMA3_ROPE, attention_bias=False, mlp_bias=False, tie_word_embeddings=True,
                        hidden_act="silu", initializer_range=0.02, bos_token_id=128000, eos_token_id=128001),
}
# a family's larger size differs from its smaller one in these fields alone
PUBLISHED["qwen2.5_1.5b"] = dict(PUBLISHED["qwen2.5_0.5b"], hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                 num_attention_heads=12, max_position_embeddings=131072, sliding_window=131072,
                                 max_window_layers=28)
PUBLISHED["qwen3_1.7b"] = dict(PUBLISHED["qwen3_0.6b"], hidden_size=2048, intermediate_size=6144)
CLASS = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def shrunk(name, vocab_size=2048, n_layer=2):
    """The published config at test size: 2 layers, a 2048-id vocabulary, one KV head (see the docstring)."""
    cfg = dict(PUBLISHED[name], vocab_size=vocab_size)
    cfg.update({k: None for k in ("bos_token_id", "eos_token_id") if cfg[k] >= vocab_size})  # ids past the vocabulary
    if cfg["model_type"] == "gpt2":
        head_dim = cfg["n_embd"] // cfg["n_head"]
        return {**cfg, "n_layer": n_layer, "n_head": 2, "n_embd": 2 * head_dim}
    heads, kv, hidden = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // heads
    scale = kv  # one KV head: the widths shrink by the number of KV heads, every ratio stays
    return {**cfg, "num_hidden_layers": n_layer, "num_attention_heads": heads // scale, "num_key_value_heads": 1,
            "hidden_size": hidden // scale, "intermediate_size": round(cfg["intermediate_size"] / scale),
            "head_dim": head_dim, **({"max_window_layers": n_layer} if "max_window_layers" in cfg else {})}


def save_random_model(cfg, folder, seed=0):
    """transformers' model of config.json fields `cfg`, its weights far from the init (zero biases, unit norms
    would hide a misplaced tensor), written by save_pretrained; returns the model in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM
    fields = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
    config = AutoConfig.for_model(cfg["model_type"], **fields)
    torch.manual_seed(seed)
    theirs = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) / math.sqrt(p.size(-1)) if p.dim() == 2 else 1 + 0.2 * torch.randn_like(p))
    theirs.save_pretrained(folder)
    return theirs

# -----------------------------------------------------------------------------
# tokenizer stand-ins: each family's published pre-tokenizer, normalizer and special tokens, a BPE trained here

QWEN_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SMOLLM2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
                    "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>",
                    "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>"]
# (content, id, special): added after the trained vocabulary, at the published ids
LATE_SPECIALS = {
    "gpt2": [("<|endoftext|>", 50256, True)],
    "smollm2": [],  # ids 0-16, before the bytes: given to the trainer
    "qwen2.5": [("<|endoftext|>", 151643, True), ("<|im_start|>", 151644, True), ("<|im_end|>", 151645, True),
                ("<|object_ref_start|>", 151646, True), ("<|vision_pad|>", 151654, True), ("<tool_call>", 151657, False),
                ("</tool_call>", 151658, False), ("<|fim_prefix|>", 151659, False), ("<|file_sep|>", 151664, False)],
    "qwen3": [("<|endoftext|>", 151643, True), ("<|im_start|>", 151644, True), ("<|im_end|>", 151645, True),
              ("<tool_call>", 151657, False), ("</tool_call>", 151658, False), ("<think>", 151667, False),
              ("</think>", 151668, False)],
    "llama3": [("<|begin_of_text|>", 128000, True), ("<|end_of_text|>", 128001, True),
               ("<|reserved_special_token_0|>", 128002, True), ("<|start_header_id|>", 128006, True),
               ("<|end_header_id|>", 128007, True), ("<|eom_id|>", 128008, True), ("<|eot_id|>", 128009, True),
               ("<|python_tag|>", 128010, True), ("<|reserved_special_token_247|>", 128255, True)],
}
FAMILY = {"gpt2": "gpt2", "smollm2_135m": "smollm2", "smollm2_360m": "smollm2", "qwen2.5_0.5b": "qwen2.5",
          "qwen2.5_1.5b": "qwen2.5", "qwen3_0.6b": "qwen3", "qwen3_1.7b": "qwen3", "llama3.2_1b": "llama3",
          "llama3.2_3b": "llama3"}

# the varied text set: code, English, digits, whitespace runs, CJK, emoji, contractions, accents (NFC and not)
TEXTS = [
    "", "a", "Hello, world! The quick brown fox jumps over the lazy dog.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\nprint(fib(30))\n",
    "for (int i = 0; i < 10; ++i) {\n\tsum += a[i] * 2;\n}",
    "12345678901234567890 3.14159 1,000,000 2024-06-01 x1y22z333 ½ ²",
    "spaces    between   words\n\n\n   and\ttabs\t\t\r\nCRLF  \n  ", "trailing   ", "   leading", "\n\n\n",
    "I'm sure they'LL say it's fine, we've DONE it, I'd think",
    "日本語のテキストと中文文本，混合。한국어 텍스트도 있습니다!",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 ✨",
    "café naïve Ångström ß ﬁ — “quotes” «guillemets»", "cafe\u0301 decomposed e\u0301 and A\u030a",
    "<html><body class=\"x\">&amp; &#x27;</body></html>", "    indented = {'key': [1, 2, 3]}  # comment",
    "ALL CAPS SHOUTING and MiXeD cAsE", "...!!!???---___===+++", "a\u00a0b\u2009c\u3000d",
]


def corpus():
    """Training text for the stand-ins: a few standard-library files and the text set's alphabet."""
    names = ("textwrap.py", "shlex.py", "string.py", "calendar.py")
    files = [f for f in sources.stdlib_files() if Path(f).name in names]
    return [Path(f).read_text(encoding="utf-8") for f in files] + TEXTS * 5


def standin_tokenizer(family, vocab_size=700, late_specials=None, pad_to=0):
    """tokenizer.json (a dict) of a byte-level BPE with the family's published pre-tokenizer, normalizer and
    special tokens (or late_specials, [(content, id, special)]), trained on corpus(). pad_to fills the vocabulary
    up to that many ids with tokens no text here holds (private-use characters), as a real vocabulary's size."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(ignore_merges=family == "llama3"))  # Llama 3 ships ignore_merges: true
    byte_level = dict(add_prefix_space=False, trim_offsets=family != "qwen2.5" and family != "qwen3")
    if family == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(**byte_level, use_regex=True)
    elif family == "smollm2":  # StarCoder's: every digit its own pre-token
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(**byte_level, use_regex=True)])
    else:
        split = QWEN_SPLIT if family.startswith("qwen") else LLAMA3_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
                                                     pre_tokenizers.ByteLevel(**byte_level, use_regex=False)])
    if family.startswith("qwen"):
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=SMOLLM2_SPECIALS if family == "smollm2" else [])
    tok.train_from_iterator(corpus(), trainer)
    info = json.loads(tok.to_str())
    vocab, to_char = info["model"]["vocab"], bpe.bytes_to_unicode()
    for i in range(len(vocab), pad_to):
        vocab["".join(to_char[b] for b in chr(0xF0000 + i).encode())] = i
    for content, i, special in LATE_SPECIALS[family] if late_specials is None else late_specials:
        info["model"]["vocab"][content] = i
        info["added_tokens"].append({"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                                     "normalized": False, "special": special})
    return info


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """{family: tokenizer.json path}."""
    out = {}
    for family in LATE_SPECIALS:
        path = tmp_path_factory.mktemp(family.replace(".", "_")) / "tokenizer.json"
        path.write_text(json.dumps(standin_tokenizer(family), ensure_ascii=False))
        out[family] = path
    return out


@pytest.mark.parametrize("family", sorted(LATE_SPECIALS))
def test_tokenizer_stand_ins_convert_to_tiktoken_with_the_same_ids(family, standins):
    from tokenizers import Tokenizer
    theirs = Tokenizer.from_file(str(standins[family]))
    enc = data.load_tokenizer(str(standins[family]))
    specials = [c for c, _, _ in LATE_SPECIALS[family]] or SMOLLM2_SPECIALS
    texts = TEXTS + [f"{specials[-1]}{t}{specials[0]}" for t in TEXTS[2:6]] + ["".join(corpus()[:2])]
    same = [theirs.encode(t, add_special_tokens=False).ids == enc.encode(t, allowed_special="all") for t in texts]
    print(f"{family}: {sum(same)}/{len(same)} texts give the same ids")
    assert all(same), [t for t, ok in zip(texts, same) if not ok]
    back = Tokenizer.from_str(json.dumps(export.tokenizer_json(enc)))  # and out again, as export.py writes it
    assert all(back.encode(t, add_special_tokens=False).ids == enc.encode(t, allowed_special="all") for t in texts)
    for content, i, _ in LATE_SPECIALS[family]:
        assert enc.encode_single_token(content) == i
    assert enc.decode(enc.encode(TEXTS[12])) == TEXTS[12]

# -----------------------------------------------------------------------------
# the models


def greedy(theirs, prompt, n):
    theirs.generation_config.eos_token_id = None  # n tokens whatever they are
    return theirs.generate(prompt, max_new_tokens=n, do_sample=False, use_cache=True)[0, prompt.size(1):].tolist()


@pytest.fixture(scope="module")
def small_tokenizer():
    """A GPT-2 stand-in whose ids, <|endoftext|> included, fit the shrunk 2048-id vocabulary."""
    return json.dumps(standin_tokenizer("gpt2", 600, [("<|endoftext|>", 600, True)]), ensure_ascii=False)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_config_imports_equal_to_transformers_fine_tunes_and_exports_back(name, small_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM
    cfg = shrunk(name)
    theirs = save_random_model(cfg, tmp_path / "hub")
    (tmp_path / "hub" / "tokenizer.json").write_text(small_tokenizer)
    model, enc, info = hf.load_hf(str(tmp_path / "hub"))
    assert info["architecture"] == CLASS[cfg["model_type"]] == cfg["architectures"][0]
    c = model.config
    if cfg["model_type"] != "gpt2":  # the flags this import needs, as published
        published = PUBLISHED[name]
        assert c.head_size == cfg["head_dim"]
        assert c.n_head // c.kv_heads == published["num_attention_heads"] // published["num_key_value_heads"]
        assert c.qkv_bias == (cfg["model_type"] == "qwen2") and not c.bias and c.tie_embeddings
        assert c.rope_scaling == (32.0 if name.startswith("llama3") else 1.0)

    x = torch.randint(0, cfg["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (model(x, all_logits=True)[0] - theirs(x).logits).abs().max().item()
    print(f"{name}: max |logit difference| {diff:.2e} (fp32)")
    assert diff < 2e-5
    prompt = x[:1, :5]
    mine = torch.stack(list(model.generate(prompt, 12, temperature=0.0)), 1)[0].tolist()
    assert mine == greedy(theirs, prompt, 12)

    model.train()  # a few AdamW steps on one batch: the loss falls and every tensor moves
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items())

    out = export.export(model.eval(), enc, tmp_path / "out")
    back, _, info2 = hf.load_hf(str(out))
    assert info2["architecture"] == info["architecture"] and back.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(reloaded).__name__ == info["architecture"]
    with torch.no_grad():
        assert (back(x, all_logits=True)[0] - reloaded(x).logits).abs().max().item() < 2e-5


def test_llama3_rope_frequencies_equal_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    cfg = dict(PUBLISHED["llama3.2_3b"])
    theirs, scaling = ROPE_INIT_FUNCTIONS["llama3"](LlamaConfig(**{k: v for k, v in cfg.items() if k != "architectures"}), "cpu")
    config = hf.config_from_hf(cfg, "Llama-3.2-3B")
    assert scaling == 1.0 and config.head_size == 128 and config.rope_scaling == 32.0
    ours = rope_frequencies(config)
    assert torch.equal(ours, theirs.float())
    plain = rope_frequencies(GPTConfig(n_embd=3072, n_head=24, pos="rope", rope_theta=500000.0))
    assert torch.equal(ours[:20], plain[:20]) and torch.allclose(ours[-10:], plain[-10:] / 32)  # high kept, low / 32


@pytest.mark.parametrize("change, words", [
    (dict(model_type="llama", rope_scaling={"rope_type": "yarn", "factor": 4.0}), ["rope_type 'yarn'"]),
    (dict(model_type="llama", attention_bias=True, mlp_bias=False), ["attention_bias=True", "mlp_bias=False"]),
    (dict(model_type="qwen2", use_sliding_window=True), ["use_sliding_window"]),
    (dict(model_type="qwen3", attention_bias=True), ["attention_bias=True", "qwen3"]),
    (dict(model_type="mistral"), ["model_type 'mistral'"]),
])
def test_configs_still_not_computable_are_one_error_naming_the_option_and_model(change, words):
    cfg = {**PUBLISHED["qwen2.5_0.5b"], **change}
    with pytest.raises(UserError) as e:
        hf.config_from_hf(cfg, "some/Model-1B")
    message = str(e.value)
    assert "\n" not in message and "some/Model-1B" in message and all(w in message for w in words), message


def test_flags_no_class_holds_are_one_error_naming_the_flag():
    with pytest.raises(UserError, match=r"^error: qkv_bias="):
        hf.hf_class(GPTConfig(n_head=4, n_embd=64, pos="rope", norm="rmsnorm", mlp="swiglu", qk_norm="before_rope",
                              bias=False, qkv_bias=True))
    with pytest.raises(UserError, match=r"^error: head_dim="):
        hf.hf_class(GPTConfig(n_head=4, n_embd=64, head_dim=32))

# -----------------------------------------------------------------------------
# chat templates: the model's own Jinja template, rendered as transformers renders it, the loss on the answers

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
          "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")  # SmolLM2-Instruct's
LLAMA3_CHAT = (  # Llama-3.2-Instruct's, without its tool-calling branches
    "{{- bos_token }}\n{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    "{%- set date_string = strftime_now(\"%d %b %Y\") %}{%- else %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}"
    "{%- endif %}\n{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}{{- system_message }}{{- \"<|eot_id|>\" }}\n"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}\n")
CHATS = {"smollm2": (CHATML, "<|im_start|>", "<|im_end|>"), "qwen2.5": (CHATML, None, "<|endoftext|>"),
         "llama3": (LLAMA3_CHAT, "<|begin_of_text|>", "<|eot_id|>")}
CONVERSATION = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "2 + 3 = 5."}, {"role": "user", "content": "And 日本 times 2? 😀"},
                {"role": "assistant", "content": " Two Japans.  "}]


def write_tokenizer_config(folder, family):
    source, bos, eos = CHATS[family]
    (Path(folder) / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos, "chat_template": source}))


@pytest.mark.parametrize("family", sorted(CHATS))
def test_model_chat_template_renders_as_transformers_and_trains_only_the_answers(family, standins, tmp_path):
    pytest.importorskip("jinja2", reason="rendering a model's own template: pip install jinja2")
    from transformers import AutoTokenizer
    folder = tmp_path / family
    folder.mkdir()
    (folder / "tokenizer.json").write_text(standins[family].read_text())
    write_tokenizer_config(folder, family)
    theirs = AutoTokenizer.from_pretrained(folder)
    enc = data.load_tokenizer(str(folder / "tokenizer.json"))
    template = hf.hf_chat_template(folder)
    for n in (2, 4):  # the prompt of each user turn, then the whole conversation
        prompt = theirs.apply_chat_template(CONVERSATION[:n], add_generation_prompt=True, tokenize=True, return_dict=True)
        assert sft.render_prompt(template, CONVERSATION[:n], enc) == prompt["input_ids"]
    ids, mask = sft.render(template, CONVERSATION, enc)
    assert ids == theirs.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]
    end = CHATS[family][2] if family != "qwen2.5" else "<|im_end|>"
    answers = [enc.decode([t for t, _ in run]) for m, run in itertools.groupby(zip(ids, mask), key=lambda p: p[1]) if m]
    trim = family == "llama3"  # its template trims each message
    assert answers == [(m["content"].strip() if trim else m["content"]) + end for m in CONVERSATION if m["role"] == "assistant"]
    stops = sft.stop_tokens(template, enc)
    assert enc.decode(stops[:1]) == end and (family != "qwen2.5" or enc.decode(stops) == "<|im_end|><|endoftext|>")
    assert sft.checkpoint_template({"chat_template": template}) == template


def test_a_template_that_rewrites_answers_is_one_clear_error(standins):
    enc = data.load_tokenizer(str(standins["smollm2"]))
    pytest.importorskip("jinja2")
    upper = {"jinja": CHATML.replace("message['content']", "message['content'] | upper"), "bos_token": None, "eos_token": None}
    with pytest.raises(UserError, match="changes an assistant message.*--chat_template=NAME"):
        sft.render(upper, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], enc)


def test_without_jinja2_the_error_names_the_install(monkeypatch, standins):
    enc = data.load_tokenizer(str(standins["smollm2"]))
    hf._compile_jinja.cache_clear()
    monkeypatch.setitem(sys.modules, "jinja2", None)
    monkeypatch.setitem(sys.modules, "jinja2.sandbox", None)
    with pytest.raises(UserError, match="pip install jinja2.*--chat_template=NAME"):
        sft.render({"jinja": CHATML + " ", "bos_token": None, "eos_token": None}, CONVERSATION[1:3], enc)

# -----------------------------------------------------------------------------
# the README recipe, end to end on a CPU: sft.py --init_from=hf:, sample.py --chat, eval.py, export.py


def run(*args, stdin=None):
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, input=stdin,
                       env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


def test_readme_recipe_on_smollm2_135m_shrunk_only_in_depth(tmp_path):
    """SmolLM2-135M's published config (vocabulary, width, heads, context 8192) with 2 layers instead of 30,
    random weights saved by transformers, its tokenizer a stand-in, its chat template SmolLM2-Instruct's."""
    pytest.importorskip("jinja2", reason="rendering a model's own template: pip install jinja2")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    hub, out, exported = tmp_path / "SmolLM2-135M", tmp_path / "smollm2_sft", tmp_path / "hf_smollm2_sft"
    save_random_model(dict(PUBLISHED["smollm2_135m"], num_hidden_layers=2), hub)
    (hub / "tokenizer.json").write_text(json.dumps(standin_tokenizer("smollm2", pad_to=49152), ensure_ascii=False))
    write_tokenizer_config(hub, "smollm2")

    run("sft.py", f"--init_from=hf:{hub}", f"--out_dir={out}", "--sft_data=simplemath:40", "--max_iters=2",
        "--batch_size=2", "--eval_iters=1", "--eval_interval=2", "--warmup_iters=1", "--device=cpu", "--dtype=float32")
    ckpt = torch.load(out / "ckpt.pt", weights_only=True, map_location="cpu")
    assert ckpt["chat_template"]["jinja"] == CHATML and ckpt["iter_num"] == 2
    chat = run("sample.py", f"--out_dir={out}", "--chat=True", "--temperature=0", "--max_new_tokens=8", "--device=cpu",
               stdin="What is 2 + 3?\n")
    assert "model's own (Jinja)" in chat.stderr and "tokens/s" in chat.stderr
    (tmp_path / "held_out.py").write_text("def add(a, b):\n    return a + b\n\n\nprint(add(2, 3))\n" * 4)
    ev = run("eval.py", f"--out_dir={out}", "--tasks=file_ppl", f"--files={tmp_path / 'held_out.py'}", "--device=cpu")
    assert "file_ppl" in ev.stdout
    run("export.py", f"--out_dir={out}", f"--hf_dir={exported}")

    theirs = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    back, enc, info = hf.load_hf(str(exported))
    assert type(theirs).__name__ == "LlamaForCausalLM" and info["chat_template"]["jinja"] == CHATML
    tuned = {k: v for k, v in ckpt["model"].items()}
    assert all(torch.equal(back.state_dict()[k], tuned[k.replace("_orig_mod.", "")]) for k in back.state_dict())
    conv = CONVERSATION[1:2]
    tok = AutoTokenizer.from_pretrained(exported)
    assert tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"] == \
        sft.render_prompt(info["chat_template"], conv, enc)
    x = torch.tensor([sft.render_prompt(info["chat_template"], conv, enc)])
    with torch.no_grad():
        assert (back(x, all_logits=True)[0] - theirs(x).logits).abs().max().item() < 2e-5

# -----------------------------------------------------------------------------
# measurement: python -m pytest -m benchmark -s tests/test_hf_models.py  (about a minute on 2 cores, ~11 GB)

PEAK = """
import json, resource, sys, time
import torch
import hf, train
from model import GPT
name, cfg, T, steps = json.loads(sys.argv[1])
torch.manual_seed(0)
model = GPT(hf.config_from_hf(cfg, name)).train()  # random weights: the memory is the same as the published ones'
model.grad_checkpointing = True                     # train.py's activation_checkpointing
opt = train.configure_optimizer(model, 0.0, 1e-5, (0.9, 0.95), 1e-8, "cpu")   # fp32 AdamW, as sft.py on a CPU
x = torch.randint(0, cfg["vocab_size"], (1, T + 1))
times = []
for _ in range(steps):
    t0 = time.time()
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(round(time.time() - t0, 1))
print(json.dumps({"params": model.num_params()[0], "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "step_s": times}))
"""


@pytest.mark.benchmark
def test_benchmark_fine_tuning_peak_memory_qwen3_0_6b():
    """Peak resident memory of fine-tuning Qwen3-0.6B's full published config on this CPU in fp32 with AdamW and
    activation checkpointing, a 256-token sequence, 2 steps. The largest of the nine that fits a shared 24 GB
    machine with room: weights, gradients and AdamW's two moments are 16 bytes per parameter (8.9 GiB here;
    Llama-3.2-1B would need 18.4 GiB before activations)."""
    name, T, steps = "qwen3_0.6b", 256, 2
    r = subprocess.run([sys.executable, "-c", PEAK, json.dumps([name, PUBLISHED[name], T, steps])], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    state = 16 * result["params"] / 2**30
    print(f"{name}: {result['params'] / 1e6:.0f}M parameters, 16 B/parameter = {state:.1f} GiB; peak RSS "
          f"{result['peak_rss_gib']:.1f} GiB with batch 1 x {T} tokens; step times {result['step_s']} s")
    assert state < result["peak_rss_gib"] < state + 4
