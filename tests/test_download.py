"""files.download against a local HTTP server: streaming, resume with Range, cache hits, HTTP errors."""

import http.server
import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import data  # noqa: E402
import files  # noqa: E402
from configurator import UserError  # noqa: E402

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # several 1 MiB chunks, and not a multiple of one


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /file.bin with Range support; the first `drops` responses stop halfway."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        server = self.server
        server.log.append((self.path, self.headers.get("Range"), self.headers.get("Authorization")))
        if self.path == "/gated":
            return self.send_error(401)
        if self.path != "/file.bin":
            return self.send_error(404)
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.drops > 0:
            server.drops -= 1
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True  # the client sees fewer bytes than Content-Length
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.log, srv.drops = [], 0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_streams_to_file(server, tmp_path):
    path = files.download(f"{server.url}/file.bin", tmp_path / "sub" / "file.bin", desc="test")
    assert path == tmp_path / "sub" / "file.bin"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "file.bin.part").exists()
    assert server.log == [("/file.bin", None, None)]


def test_cache_hit_makes_no_request(server, tmp_path):
    dest = tmp_path / "file.bin"
    files.download(f"{server.url}/file.bin", dest)
    files.download(f"{server.url}/file.bin", dest)
    assert len(server.log) == 1


def test_resume_after_a_cut(server, tmp_path):
    dest = tmp_path / "file.bin"
    server.drops = 1
    with pytest.raises(UserError, match="run the same command again to resume"):
        files.download(f"{server.url}/file.bin", dest, retries=0)
    part = tmp_path / "file.bin.part"
    have = part.stat().st_size
    assert 0 < have < len(PAYLOAD) and not dest.exists()
    assert PAYLOAD.startswith(part.read_bytes())
    files.download(f"{server.url}/file.bin", dest, retries=0)  # the second call asks only for the rest
    assert server.log[-1][1] == f"bytes={have}-"
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_retries_resume_within_one_call(server, tmp_path):
    server.drops = 2
    path = files.download(f"{server.url}/file.bin", tmp_path / "file.bin")
    assert path.read_bytes() == PAYLOAD
    assert [r for _, r, _ in server.log][0] is None and all(r.startswith("bytes=") for _, r, _ in server.log[1:])
    assert len(server.log) == 3


@pytest.mark.parametrize("path, message", [("/missing", "HTTP 404"), ("/gated", "HF_TOKEN")])
def test_http_error_is_one_clear_user_error(server, tmp_path, path, message):
    with pytest.raises(UserError, match=message) as info:
        files.download(f"{server.url}{path}", tmp_path / "x")
    assert "\n" not in info.value.message
    assert not (tmp_path / "x").exists()


def test_hf_token_is_sent_to_the_hub_only(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret")
    files.download(f"{server.url}/file.bin", tmp_path / "a")
    assert server.log[-1][2] is None  # not a huggingface.co URL: the token stays home
    files.download(f"{server.url}/file.bin", tmp_path / "b", headers={"Authorization": "Bearer mine"})
    assert server.log[-1][2] == "Bearer mine"
