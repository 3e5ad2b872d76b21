"""serve.py: the OpenAI API as the official `openai` client speaks it, bad input answered and survived, several
clients at once, a client that leaves, and the chat page in a real browser. Each server is a real `python serve.py`
process on 127.0.0.1 (port 0: a free one), stopped with Ctrl-C (SIGINT) at the end, which must exit cleanly."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from model import GPT, GPTConfig
from test_sample import CONVERSATION, byte_tokenizer, run_sample, save_checkpoint_dir, train_tiny

ROOT = Path(__file__).resolve().parent.parent
HTML_CHAT = [{"role": "user", "content": "html?"}, {"role": "assistant", "content": "<b>bold</b><script>window.owned=1</script>"}]

# -----------------------------------------------------------------------------
# two checkpoints and their servers


@pytest.fixture(scope="module")
def chat_ckpt(tmp_path_factory):
    """A tiny nanochat-template model that has memorised two conversations, one answering in HTML."""
    from sft import render
    torch.set_num_threads(1)
    enc = byte_tokenizer()
    docs = [render("nanochat", CONVERSATION, enc)[0], render("nanochat", HTML_CHAT, enc)[0]]
    model = train_tiny(docs, enc.n_vocab, steps=150)
    return save_checkpoint_dir(tmp_path_factory.mktemp("chat"), model, enc, "nanochat")


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory):
    """An untrained base model over bytes alone: no chat template and no end token, so it writes until its
    1,024-token context is full, slowly enough to watch."""
    torch.manual_seed(0)
    enc = byte_tokenizer(specials=[])
    model = GPT(GPTConfig(vocab_size=256, block_size=1024, n_layer=4, n_embd=128, n_head=4, pos="rope",
                          norm="rmsnorm", mlp="swiglu", bias=False)).eval()
    return save_checkpoint_dir(tmp_path_factory.mktemp("base"), model, enc)


def start_server(ckpt, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "serve.py", f"--out_dir={ckpt}", "--port=0", "--device=cpu", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
    if not match:
        proc.kill()
        pytest.fail(f"serve.py did not start: {line}{proc.stderr.read()}")
    return proc, match.group(1)


def stop_server(proc, sig=signal.SIGINT):
    """Ctrl-C (or a service manager's SIGTERM): the server ends at once, exit 0, no traceback."""
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def chat_server(chat_ckpt):
    proc, url = start_server(chat_ckpt, "--model_name=chat", "--parallel=4")  # requests really run side by side
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def base_server(base_ckpt):
    """One generation at a time, one waiting, a 1-second request timeout and an API key: the limits to test."""
    proc, url = start_server(base_ckpt, "--model_name=base", "--parallel=1", "--queue_size=1", "--request_timeout=1", "--api_key=sekrit")
    yield url
    stop_server(proc, signal.SIGTERM)


def post(url, path, body, key=None, raw=None, headers=None):
    """(status, JSON body, headers) of one request, errors included."""
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {}),
                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def health(url):
    with urllib.request.urlopen(url + "health", timeout=10) as r:
        return json.loads(r.read())


def client(url, key="unused"):
    openai = pytest.importorskip("openai", reason="the official client is a test extra: pip install openai")
    return openai.OpenAI(base_url=url + "v1", api_key=key, max_retries=0, timeout=60)

# -----------------------------------------------------------------------------
# the official client


def test_chat_completion_as_the_openai_client_reads_it(chat_server):
    c = client(chat_server)
    assert [m.id for m in c.models.list()] == ["chat"]
    r = c.chat.completions.create(model="chat", messages=CONVERSATION[:1], temperature=0)
    assert r.choices[0].message.content == "Hello! I am Tiny." and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    # the prompt is the template's own rendering; the answer is its characters plus <|assistant_end|>
    assert r.usage.completion_tokens == len("Hello! I am Tiny.") + 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    two = c.chat.completions.create(model="chat", messages=CONVERSATION[:3], temperature=0, max_tokens=100)
    assert two.choices[0].message.content == "4, of course."


def test_streamed_chat_arrives_in_pieces_that_add_up(chat_server):
    c = client(chat_server)
    chunks = list(c.chat.completions.create(model="chat", messages=CONVERSATION[:1], temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == "Hello! I am Tiny."
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == len("Hello! I am Tiny.") + 1


def test_stop_strings_and_max_tokens_end_a_reply(chat_server):
    c = client(chat_server)
    r = c.chat.completions.create(model="chat", messages=CONVERSATION[:1], temperature=0, stop=["I am"])
    assert r.choices[0].message.content == "Hello! " and r.choices[0].finish_reason == "stop"
    r = c.chat.completions.create(model="chat", messages=CONVERSATION[:1], temperature=0, max_completion_tokens=5)
    assert r.choices[0].message.content == "Hello" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5


def test_completions_of_a_base_model_streamed_and_whole(base_server):
    c = client(base_server, key="sekrit")
    whole = c.completions.create(model="base", prompt="def f(x):", max_tokens=20, temperature=1.0, seed=3)
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 20
    assert whole.usage.prompt_tokens == len("def f(x):")  # one token per byte, no start marker
    streamed = c.completions.create(model="base", prompt="def f(x):", max_tokens=20, temperature=1.0, seed=3, stream=True)
    assert "".join(ch.choices[0].text for ch in streamed) == whole.choices[0].text
    batch = c.completions.create(model="base", prompt=["a", "b"], max_tokens=3, temperature=0)
    assert [ch.index for ch in batch.choices] == [0, 1] and batch.usage.completion_tokens == 6


def test_a_seed_gives_sample_pys_text(chat_ckpt, chat_server):
    """The same prompt, seed and settings through the server and through sample.py give the same text."""
    c = client(chat_server)
    settings = dict(temperature=1.3, top_p=0.9)
    r = c.completions.create(model="chat", prompt="Hello", max_tokens=30, seed=7, extra_body={"top_k": 20}, **settings)
    s = run_sample(f"--out_dir={chat_ckpt}", "--prompt=Hello", "--max_new_tokens=30", "--seed=7", "--top_k=20",
                   *(f"--{k}={v}" for k, v in settings.items()))
    assert s.returncode == 0, s.stderr
    assert s.stdout == "Hello" + r.choices[0].text + "\n"
    again = c.completions.create(model="chat", prompt="Hello", max_tokens=30, seed=7, extra_body={"top_k": 20}, **settings)
    assert again.choices[0].text == r.choices[0].text
    chat = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], seed=11, max_tokens=40,
                                     temperature=1.5, extra_body={"top_k": 0})
    s = run_sample(f"--out_dir={chat_ckpt}", "--chat=True", "--seed=11", "--max_new_tokens=40", "--temperature=1.5",
                   "--top_k=0", stdin="hi\n")
    assert s.stdout == chat.choices[0].message.content + "\n"


def test_a_hugging_face_folder_is_served_with_its_jinja_template(chat_ckpt, tmp_path):
    import checkpoint
    import export
    model, enc, ckpt = checkpoint.load_checkpoint(chat_ckpt)
    folder = export.export(model, enc, tmp_path / "hf", template=ckpt["chat_template"], ckpt=ckpt)
    config = json.loads((folder / "config.json").read_text())
    del config["slm"]["chat_template"]  # as a model from elsewhere: its template is tokenizer_config.json's Jinja
    (folder / "config.json").write_text(json.dumps(config))
    proc, url = start_server(folder, "--parallel=1")
    try:
        r = client(url).chat.completions.create(model="hf", messages=CONVERSATION[:1], temperature=0)
        assert r.choices[0].message.content == "Hello! I am Tiny."
    finally:
        stop_server(proc)


def test_the_clients_errors_are_openais(chat_server, base_server):
    import openai
    c = client(chat_server)
    with pytest.raises(openai.NotFoundError, match="gpt-4o"):
        c.chat.completions.create(model="gpt-4o", messages=CONVERSATION[:1])
    with pytest.raises(openai.BadRequestError, match="role"):
        c.chat.completions.create(model="chat", messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        client(base_server, key="wrong").completions.create(model="base", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        client(base_server, key="sekrit").chat.completions.create(model="base", messages=CONVERSATION[:1])
    assert [m.id for m in client(base_server, key="sekrit").models.list()] == ["base"]

# -----------------------------------------------------------------------------
# bad input: one clear error each, and the server goes on


@pytest.mark.parametrize("raw, status, words", [
    (b'{"messages": [', 400, "not valid JSON"),
    (b'\xff\xfe{"messages": []}', 400, "not UTF-8"),
    (b'[1, 2]', 400, "JSON object"),
    (json.dumps({"messages": []}).encode(), 400, "non-empty array"),
    (json.dumps({"messages": "hi"}).encode(), 400, "non-empty array"),
    (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), 400, "content must be a string"),
    (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}).encode(), 400, "role \"robot\""),
    (json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}).encode(), 400, "end with a user message"),
    (json.dumps({"messages": CONVERSATION[:1], "max_tokens": 0}).encode(), 400, "at least 1"),
    (json.dumps({"messages": CONVERSATION[:1], "max_tokens": "9"}).encode(), 400, "at least 1"),
    (json.dumps({"messages": CONVERSATION[:1], "temperature": -0.5}).encode(), 400, "in [0, 2]"),
    (json.dumps({"messages": CONVERSATION[:1], "top_p": 0}).encode(), 400, "(0, 1]"),
    (json.dumps({"messages": CONVERSATION[:1], "stream": "yes"}).encode(), 400, "boolean"),
    (json.dumps({"messages": CONVERSATION[:1], "stop": [1]}).encode(), 400, "strings"),
    (json.dumps({"messages": CONVERSATION[:1], "n": 2}).encode(), 400, "'n' is not supported"),
    (json.dumps({"messages": CONVERSATION[:1], "model": "other"}).encode(), 404, "does not exist"),
])
def test_bad_requests_get_one_openai_error(chat_server, raw, status, words):
    code, body, _ = post(chat_server, "/v1/chat/completions", None, raw=raw)
    assert code == status
    assert set(body["error"]) == {"message", "type", "param", "code"} and words in body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]
    assert health(chat_server)["status"] == "ok"


def test_a_prompt_longer_than_the_context_is_refused_or_truncated(chat_server):
    long = [{"role": "user", "content": "x" * 200}]  # the tiny model's context is 128 tokens
    code, body, _ = post(chat_server, "/v1/chat/completions", {"messages": long})
    assert code == 400 and body["error"]["code"] == "context_length_exceeded" and "truncate" in body["error"]["message"]
    code, body, _ = post(chat_server, "/v1/completions", {"prompt": "x" * 200, "truncate": True, "max_tokens": 500})
    assert code == 200 and body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] <= 128
    # a long conversation forgets its oldest exchanges with truncate, as sample.py --chat does, leaving the answer
    # half the context
    history = CONVERSATION * 6 + [{"role": "user", "content": "what is 2+2?"}]
    assert post(chat_server, "/v1/chat/completions", {"messages": history})[0] == 400
    code, body, _ = post(chat_server, "/v1/chat/completions", {"messages": history, "truncate": True, "temperature": 0})
    assert code == 200 and 0 < body["usage"]["prompt_tokens"] <= 64


def test_huge_max_tokens_is_capped_at_the_context(base_server):
    code, body, _ = post(base_server, "/v1/completions", {"prompt": "x" * 1000, "max_tokens": 10**9, "temperature": 0},
                         key="sekrit")
    assert code == 200 and body["usage"]["completion_tokens"] == 1024 - 1000
    assert body["choices"][0]["finish_reason"] == "length"


def test_oversized_body_unknown_route_and_missing_key(chat_server, base_server):
    code, body, _ = post(chat_server, "/v1/chat/completions", None, raw=b"x" * 1_000_001)
    assert code == 413 and "limit" in body["error"]["message"]
    code, body, _ = post(chat_server, "/v1/embeddings", {})
    assert code == 404
    code, body, _ = post(base_server, "/v1/completions", {"prompt": "x"})
    assert code == 401 and body["error"]["code"] == "invalid_api_key"
    assert health(base_server)["api_key"] is True


def test_a_slow_client_times_out_while_others_are_served(base_server):
    host, port = base_server.split("//")[1].rstrip("/").split(":")
    slow = socket.create_connection((host, int(port)))
    slow.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\nAuthorization: Bearer sekrit\r\n\r\n{")
    t0 = time.time()
    assert health(base_server)["status"] == "ok"  # served while the slow one waits
    slow.settimeout(10)
    answer = slow.recv(4096)
    assert b"408" in answer.split(b"\r\n")[0] and 0.8 < time.time() - t0 < 5
    slow.close()
    never = socket.create_connection((host, int(port)))  # one that never sends its request line
    never.sendall(b"POS")
    never.settimeout(10)
    assert never.recv(4096) == b""  # the server hangs up after its timeout
    never.close()

# -----------------------------------------------------------------------------
# several clients


def test_concurrent_requests_never_mix(chat_server):
    prompts = ["Hello", "4, of", "hi", "what"]
    alone = [post(chat_server, "/v1/completions", {"prompt": p, "max_tokens": 25, "seed": i, "temperature": 1.0})[1]
             for i, p in enumerate(prompts)]
    together = [None] * len(prompts)

    def ask(i):
        together[i] = post(chat_server, "/v1/completions", {"prompt": prompts[i], "max_tokens": 25, "seed": i,
                                                            "temperature": 1.0})[1]
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a["choices"][0]["text"] for a in alone] == [t["choices"][0]["text"] for t in together]


def open_stream(url, body, key="sekrit"):
    """A raw streamed request: the socket, with the response's head and first event already read."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    s = socket.create_connection((host, int(port)))
    raw = json.dumps({**body, "stream": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer "
              + key.encode() + b"\r\nContent-Length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw)
    s.settimeout(30)
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    return s, got


def wait_for(condition, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_full_queue_answers_503_and_a_client_that_leaves_frees_its_place(base_server):
    first, head = open_stream(base_server, {"prompt": "a", "max_tokens": 1000, "temperature": 1.0})
    assert head.startswith(b"HTTP/1.0 200") and b"text/event-stream" in head
    waiter = threading.Thread(target=post, args=(base_server, "/v1/completions", {"prompt": "b", "max_tokens": 2}, "sekrit"))
    waiter.start()
    assert wait_for(lambda: health(base_server)["waiting"] == 1)
    code, body, headers = post(base_server, "/v1/completions", {"prompt": "c", "max_tokens": 2}, key="sekrit")
    assert code == 503 and headers["Retry-After"] == "1" and "busy" in body["error"]["message"]
    t0 = time.time()
    first.close()  # mid-stream: its generation stops, the waiter runs, and the server is idle again
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert wait_for(lambda: health(base_server)["active"] == 0, 5) and time.time() - t0 < 5

# -----------------------------------------------------------------------------
# the command itself


def test_other_hosts_are_warned_of_and_mistakes_are_one_line(chat_ckpt):
    """(Ctrl-C ending each server cleanly is stop_server's check, at every fixture's end.)"""
    import serve
    from configurator import UserError
    with pytest.raises(UserError, match="parallel=0 must be at least 1"):
        serve.configure(out_dir=str(chat_ckpt), parallel=0)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
    # started as a shell's background job is: ignoring SIGINT, which Ctrl-C must still stop
    proc = subprocess.Popen([sys.executable, "serve.py", f"--out_dir={chat_ckpt}", "--host=0.0.0.0", "--port=0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert "0.0.0.0" in proc.stdout.readline()
    err = stop_server(proc)
    assert "warning: --host=0.0.0.0 lets other machines reach this server" in err and "--api_key" in err
    r = subprocess.run([sys.executable, "serve.py", "--out_dir=/nonexistent", "--port=0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    with pytest.raises(UserError, match="unknown chat template 'chatml'"):  # refused, not served as a base model
        serve.Served(dict(serve.configurator.effective_config(vars(serve)), out_dir=str(chat_ckpt), chat_template="chatml"))


def test_importing_serve_serves_nothing():
    import serve  # a server started here would never return
    assert serve.port == 8000 and serve.host == "127.0.0.1" and serve.main.__module__ == "serve"


# -----------------------------------------------------------------------------
# the page, in a real browser


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by selenium (Debian's chromium and chromium-driver; .ci/run installs them)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test extra: pip install selenium")
    binary, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("no chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # no GPU, no sandbox (CI runs as root), and none of the browser's own traffic on an offline machine
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    from selenium.webdriver.chrome.service import Service
    b = webdriver.Chrome(options=options, service=Service(driver))
    yield b
    b.quit()


# records, at every change of the conversation, its text's length and whether the page said it was generating
WATCH = """window.trace = [];
new MutationObserver(() => trace.push([document.getElementById('log').textContent.length, document.body.dataset.state]))
  .observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});"""


def page_send(b, text):
    from selenium.webdriver.common.keys import Keys
    box = b.find_element("id", "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def wait_idle(b, seconds=30):
    assert wait_for(lambda: b.execute_script("return document.body.dataset.state") == "idle"
                    and not b.find_element("id", "send").get_attribute("disabled"), seconds)


def test_the_page_chats_and_shows_html_as_text(browser, chat_server):
    b = browser
    b.get(chat_server)
    assert wait_for(lambda: "chat" in b.find_element("id", "title").text)
    temperature = b.find_element("id", "temperature")
    temperature.clear()
    temperature.send_keys("0")  # greedy: the memorised answers, whatever seed the server draws
    page_send(b, "html?")
    wait_idle(b)
    bubbles = b.find_elements("css selector", "#log .msg")
    assert [x.get_attribute("textContent") for x in bubbles] == ["html?", HTML_CHAT[1]["content"]]
    assert not b.find_elements("css selector", "#log b, #log script")  # shown as text, never made elements
    assert b.execute_script("return window.owned") is None
    b.find_element("id", "new").click()
    assert not b.find_elements("css selector", "#log .msg")
    page_send(b, "hi")
    wait_idle(b)
    assert b.find_elements("css selector", "#log .assistant")[-1].text == "Hello! I am Tiny."
    assert re.fullmatch(r"18 tokens, [\d.]+ tokens/s", b.find_element("id", "stats").text)


def test_the_page_streams_a_base_model_and_stop_stops_it(browser, base_server):
    b = browser
    b.get(base_server)
    assert wait_for(lambda: "completion" in b.find_element("id", "title").text)
    b.find_element("id", "key").send_keys("sekrit")  # the server asks for a key; the page shows the box
    limit = b.find_element("id", "max_tokens")
    limit.clear()
    limit.send_keys("300")
    b.execute_script(WATCH)
    page_send(b, "def ")
    wait_idle(b)
    trace = b.execute_script("return trace")
    final = len(b.find_element("id", "log").get_attribute("textContent"))
    # the text grew in many steps while the page was still generating: tokens appeared as they were made
    assert len({n for n, state in trace if state == "generating" and len("def ") < n < final}) > 10
    assert re.fullmatch(r"300 tokens, [\d.]+ tokens/s", b.find_element("id", "stats").text)
    limit.clear()
    limit.send_keys("1000")  # about 3 s of writing: stopped after a moment, long before the end
    page_send(b, "def ")
    last = b.find_elements("css selector", "#log .assistant")[-1]
    assert wait_for(lambda: len(last.get_attribute("textContent")) > 20)
    b.find_element("id", "stop").click()
    wait_idle(b, 5)
    shown = len(last.get_attribute("textContent"))
    assert b.find_element("id", "stats").text == "stopped" and shown < 1000
    time.sleep(0.5)
    assert len(last.get_attribute("textContent")) == shown  # nothing more arrives
    assert wait_for(lambda: health(base_server)["active"] == 0, 5)  # the server stopped generating too

