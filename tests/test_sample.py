"""sample.py: streaming text out of tokens, the KV cache changing nothing, infilling, chat, long prompts."""

import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import tiktoken
import torch

import checkpoint
import sample
from configurator import UserError
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|pad|>", "<|bos|>",
            "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>"]
# what the tiny model memorises: one infilling document (card 000's PSM order) and one nanochat conversation
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX = "def add(a, b):\n", "    return a + b", "\n\nprint(add(1, 2))\n"
CONVERSATION = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! I am Tiny."},
                {"role": "user", "content": "what is 2+2?"}, {"role": "assistant", "content": "4, of course."}]


def byte_tokenizer(specials=SPECIALS):
    """A tiktoken Encoding with one token per byte (no merges) and the project's special tokens: a
    character outside ASCII spans several tokens, which is what the streaming decoder must handle."""
    return tiktoken.Encoding(name="bytes", pat_str=r"\s+|\S+", mergeable_ranks={bytes([i]): i for i in range(256)},
                             special_tokens={s: 256 + i for i, s in enumerate(specials)})


def fim_document(enc):
    sp = enc.encode_single_token
    return ([sp("<|fim_prefix|>")] + enc.encode_ordinary(FIM_PREFIX) + [sp("<|fim_suffix|>")]
            + enc.encode_ordinary(FIM_SUFFIX) + [sp("<|fim_middle|>")] + enc.encode_ordinary(FIM_MIDDLE)
            + [sp("<|endoftext|>")])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second thread only adds contention on a shared 2-core machine (24 s -> 1.5 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_tiny(docs, vocab_size, steps=100):
    """Over-fits a 2-layer GPT on a few token sequences (every token a target) in a few CPU seconds."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=128, n_layer=2, n_embd=64, n_head=4, pos="rope",
                          norm="rmsnorm", mlp="swiglu", bias=False))
    T = max(len(d) for d in docs) - 1
    x = torch.zeros(len(docs), T, dtype=torch.long)
    y = torch.full((len(docs), T), -1, dtype=torch.long)
    for i, d in enumerate(docs):
        x[i, :len(d) - 1], y[i, :len(d) - 1] = torch.tensor(d[:-1]), torch.tensor(d[1:])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, f"the tiny model did not memorise its data (loss {loss.item():.3f})"
    return model.eval()


def save_checkpoint_dir(out, model, enc, chat_template=None):
    """A checkpoint directory as train.py writes one: ckpt.pt beside the tokenizer files."""
    import data
    out.mkdir(parents=True, exist_ok=True)
    data.save_tokenizer(enc, out)
    checkpoint.save_checkpoint(out, {"model": model.state_dict(), "model_config": asdict(model.config), "config": {},
                                "iter_num": 0, "chat_template": chat_template})
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    from sft import render
    enc = byte_tokenizer()
    chat_ids, _ = render("nanochat", CONVERSATION, enc)
    model = train_tiny([fim_document(enc), chat_ids], enc.n_vocab)
    return model, enc, save_checkpoint_dir(tmp_path_factory.mktemp("tiny"), model, enc, "nanochat")


def run_sample(*args, stdin=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "sample.py", "--device=cpu", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120, env=env)

# -----------------------------------------------------------------------------
# text out of tokens


@pytest.mark.parametrize("text", ["plain ascii", "héllo wörld", "emoji 🐍 and 한국어", "ends mid-word"])
def test_stream_reassembles_text_split_inside_characters(text):
    enc = byte_tokenizer()
    stream, pieces = sample.TextStream(enc), []
    for t in enc.encode_ordinary(text):
        pieces.append(stream.add(t))
    pieces.append(stream.finish())
    assert "".join(pieces) == text == stream.text
    assert all("\ufffd" not in p for p in pieces)  # no half character was ever shown


@pytest.mark.parametrize("stops, expected", [
    (["STOP"], "abc "),                      # the stop string spans several tokens
    (["\n\n", "STOP"], "abc "),
    (["STOPX"], "abc STOP def"),             # a prefix of a stop string that never completes is kept
    ([], "abc STOP def"),
])
def test_stream_cuts_at_stop_strings(stops, expected):
    enc = byte_tokenizer()
    stream, shown = sample.TextStream(enc, stops), ""
    for t in enc.encode_ordinary("abc STOP def"):
        shown += stream.add(t)
    shown += stream.finish()
    assert shown == stream.text == expected


def test_stream_stops_at_stop_token_without_showing_it():
    enc = byte_tokenizer()
    eot = enc.encode_single_token("<|endoftext|>")
    stream = sample.TextStream(enc, stop_ids=[eot])
    shown = "".join(stream.add(t) for t in enc.encode_ordinary("ok") + [eot] + enc.encode_ordinary("more"))
    assert shown == "ok" and stream.done and stream.n_tokens == 3

# -----------------------------------------------------------------------------
# the KV cache


def greedy_reference(model, ids, n):
    """Greedy decoding by recomputing the whole sequence each step: no cache, no generate()."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    return ids


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_and_uncached_sampling_agree(temperature):
    enc = byte_tokenizer()
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                          pos="rope", norm="rmsnorm", mlp="swiglu", qk_norm="before_rope", init_std=0.2)).eval()
    prompt = enc.encode_ordinary("def f(x):")
    texts = {}
    for cache in (True, False):
        gen = torch.Generator().manual_seed(7)
        texts[cache], n = sample.generate_text(model, enc, torch.tensor([prompt]), 40, temperature, 20, 0.9, 1.1,
                                               use_cache=cache, generator=gen)
        assert n == 40
    assert texts[True] == texts[False]
    if temperature == 0:
        ref = greedy_reference(model, prompt, 40)[len(prompt):]  # repetition penalty off: plain argmax
        (plain,), _ = sample.generate_text(model, enc, torch.tensor([prompt]), 40, 0.0, 0, 1.0, 1.0)
        assert enc.encode_ordinary(plain) == ref or plain == enc.decode(ref)

# -----------------------------------------------------------------------------
# the command: infilling, chat, prompts that do not fit


def test_fim_puts_the_middle_between_prefix_and_suffix(tiny):
    _, _, ckpt = tiny
    r = run_sample(f"--out_dir={ckpt}", f"--fim_prefix={FIM_PREFIX}", f"--fim_suffix={FIM_SUFFIX}",
                   "--temperature=0", "--max_new_tokens=40")
    assert r.returncode == 0, r.stderr
    assert r.stdout == FIM_PREFIX + FIM_MIDDLE + FIM_SUFFIX + "\n"
    assert "tokens/s" in r.stderr


def test_fim_without_fim_tokens_is_a_clear_error():
    enc = byte_tokenizer(["<|endoftext|>"])
    with pytest.raises(UserError, match="fim_prefix"):
        sample.fim_ids(enc, "a", "b")


def test_chat_answers_each_turn_and_stops_at_the_end_token(tiny):
    _, _, ckpt = tiny
    r = run_sample(f"--out_dir={ckpt}", "--chat=True", "--temperature=0", "--max_new_tokens=60",
                   stdin="hi\nwhat is 2+2?\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hello! I am Tiny.\n4, of course.\n"
    # each reply's characters plus one <|assistant_end|>: generation ended there, not at max_new_tokens
    n = len("Hello! I am Tiny.") + 1 + len("4, of course.") + 1
    assert re.search(rf"^{n} tokens in", r.stderr, re.M), r.stderr


def test_prompt_longer_than_the_context_is_one_line_error(tiny):
    _, _, ckpt = tiny
    r = run_sample(f"--out_dir={ckpt}", "--prompt=" + "x" * 300, "--max_new_tokens=5")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "context" in lines[0]


def test_truncate_keeps_the_end_of_a_long_prompt_with_a_warning(capsys):
    ids = list(range(300))
    assert sample.fit_prompt(ids, 128, 10, truncate=True) == ids[-(128 - 10):]
    assert "warning:" in capsys.readouterr().err
    assert sample.fit_prompt(ids[:100], 128, 10, truncate=True) == ids[:100]  # a prompt that fits is left alone
    with pytest.raises(UserError, match="--truncate=True"):
        sample.fit_prompt(ids, 128, 10, truncate=False)


@pytest.mark.benchmark
def test_benchmark_tokens_per_second_with_and_without_the_kv_cache():
    """python -m pytest -m benchmark -s tests/test_sample.py: card 000's shape (8 layers, 512 wide, GQA 8/2,
    27M parameters with a small vocabulary), random weights, a 256-token prompt and 128 new tokens."""
    import time
    import configurator
    enc = byte_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_dict({**configurator.load_preset("pycraft_55m"), "vocab_size": enc.n_vocab})).eval()
    prompt = torch.tensor([enc.encode_ordinary("def main():\n" + "    x = compute(x)\n" * 14)[:256]])
    texts, rates = {}, {}
    for cache in (True, False):
        t0 = time.time()
        (texts[cache],), n = sample.generate_text(model, enc, prompt, 128, 0.0, 0, 1.0, 1.0, use_cache=cache)
        rates[cache] = n / (time.time() - t0)
    print(f"\n{model.num_params()[0] / 1e6:.1f}M params, {torch.get_num_threads()} thread(s): "
          f"{rates[True]:.1f} tokens/s with the KV cache, {rates[False]:.1f} without "
          f"({rates[True] / rates[False]:.1f}x)")
    assert texts[True] == texts[False]


@pytest.mark.parametrize("typed, meant", [(r"def f():\n    return 1", "def f():\n    return 1"),
                                          ("é\\tü", "é\tü"), (r"\u4e2d", "中"), (r"a\\n", "a\\n"), ("plain", "plain")])
def test_prompt_escapes_are_python_escapes_and_other_text_is_kept(typed, meant):
    assert sample.unescape(typed) == meant


@pytest.mark.parametrize("settings", [dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0),
                                      dict(top_k=-1), dict(repetition_penalty=0.0), dict(num_samples=0)])
def test_impossible_sampling_settings_are_a_clear_error(settings, monkeypatch, tmp_path):
    """Set by hand, as a notebook does: main() refuses them before it loads anything."""
    monkeypatch.setattr(sample, "out_dir", str(tmp_path / "no checkpoint here"))
    for key, value in settings.items():
        monkeypatch.setattr(sample, key, value)
    with pytest.raises(UserError, match=f"{key}={value!r} must be"):
        sample.main()
