"""serve.py's speed: tokens per second streamed through the server against sample.py on the same checkpoint, the
time to the first token, and the total tokens per second of 1, 2 and 4 clients at once. A measurement, not a test:

    python -m pytest -m benchmark -s tests/test_serve_benchmark.py

The checkpoint has the quick start's shape (config/tiny.py) with untrained weights, which cost the same per token as
trained ones; SERVE_BENCH_CKPT=out/tiny_sft measures a real one instead. Both processes use every core, as a user
runs them. sample.py and the server alternate, five rounds each, and the medians are compared."""

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch

import bpe
import checkpoint
import configurator
import data
from model import GPT, GPTConfig
from test_serve import ROOT, stop_server

pytestmark = pytest.mark.benchmark
PROMPT, TOKENS, ROUNDS = "def read_lines(path):\n", 200, 5


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    if os.environ.get("SERVE_BENCH_CKPT"):
        return Path(os.environ["SERVE_BENCH_CKPT"])
    tiny = configurator.load_preset("tiny")
    texts = [p.read_text(encoding="utf-8") for p in sorted(Path(os.__file__).parent.glob("[a-m]*.py"))][:40]
    enc = bpe.train_bpe(texts, tiny["vocab_size"], tiny["special_tokens"], verbose=False, num_proc=1)
    torch.manual_seed(0)
    config = GPTConfig(**{f.name: tiny[f.name] for f in fields(GPTConfig) if f.name in tiny})
    out = tmp_path_factory.mktemp("tiny")
    data.save_tokenizer(enc, out)
    checkpoint.save_checkpoint(out, {"model": GPT(config).state_dict(), "model_config": asdict(config), "config": {},
                                     "iter_num": 0, "chat_template": None})
    return out


def sample_py(ckpt, seed):
    """sample.py's own tokens/s line (the generation alone, as it times it)."""
    r = subprocess.run([sys.executable, "sample.py", f"--out_dir={ckpt}", f"--prompt={PROMPT}", f"--seed={seed}",
                        f"--max_new_tokens={TOKENS}", "--temperature=1.0"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n, seconds = re.search(r"(\d+) tokens in ([\d.]+)s", r.stderr).groups()
    return int(n) / float(seconds)


def streamed(url, seed, out=None):
    """(tokens/s of the whole request, seconds to the first text) of one streamed completion."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    body = json.dumps({"prompt": PROMPT, "max_tokens": TOKENS, "seed": seed, "temperature": 1.0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    t0 = time.perf_counter()
    s = socket.create_connection((host, int(port)))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    pieces, first, tail = [], None, b""
    while not tail.endswith(b"data: [DONE]\n\n"):  # the client reads as little as it can: it shares the cores
        piece = s.recv(65536)
        assert piece, b"".join(pieces)[-500:]
        pieces.append(piece)
        tail = (tail + piece)[-64:]
        if first is None and b'"text": "' in piece.replace(b'"text": ""', b""):
            first = time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    s.close()
    n = json.loads(b"".join(pieces).split(b"data: ")[-2])["usage"]["completion_tokens"]
    if out is not None:
        out.append(n)
    return n / seconds, first


def start(ckpt, *args):
    proc = subprocess.Popen([sys.executable, "serve.py", f"--out_dir={ckpt}", "--port=0", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = re.search(r"at (http://\S+/)", proc.stdout.readline()).group(1)
    streamed(url, 0)  # warm up: the first forward pass allocates
    return proc, url


def test_server_against_sample_py(ckpt):
    proc, url = start(ckpt)
    try:
        direct, served, first = [], [], []
        for i in range(ROUNDS):
            direct.append(sample_py(ckpt, i))
            rate, ttft = streamed(url, i)
            served.append(rate)
            first.append(ttft)
    finally:
        stop_server(proc)
    print(f"\nsample.py: median {statistics.median(direct):.1f} tokens/s {sorted(round(x, 1) for x in direct)}")
    print(f"serve.py streamed: median {statistics.median(served):.1f} tokens/s {sorted(round(x, 1) for x in served)}")
    print(f"server / sample.py: {statistics.median(served) / statistics.median(direct):.3f}")
    print(f"time to first token: median {statistics.median(first) * 1000:.1f} ms {sorted(round(x * 1000, 1) for x in first)}")


@pytest.mark.parametrize("parallel", [1, 2, 4])
def test_concurrent_clients(ckpt, parallel):
    proc, url = start(ckpt, f"--parallel={parallel}")
    try:
        for clients in (1, 2, 4):
            totals = []
            for r in range(3):
                counts = []
                threads = [threading.Thread(target=streamed, args=(url, 100 * r + i, counts)) for i in range(clients)]
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                totals.append(sum(counts) / (time.perf_counter() - t0))
            print(f"\n--parallel={parallel}, {clients} client(s): median {statistics.median(totals):.1f} tokens/s in all "
                  f"{sorted(round(x, 1) for x in totals)}")
    finally:
        stop_server(proc)
