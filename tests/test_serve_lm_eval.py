"""lm-eval's own API client, `local-completions`, evaluating a model that serve.py serves: the GSM8K answers and
scores equal eval.py's on the same exported checkpoint and documents (tests/test_lm_eval.py's, whose parity with
lm-eval's Hugging Face model is tested there)."""

from contextlib import nullcontext

import eval as ev
from test_lm_eval import GSM8K_TEST, lm_eval_tasks, offline, samples, trained, write_jsonl  # noqa: F401 (a fixture)
from test_serve import start_server, stop_server


def test_lm_evals_local_completions_scores_a_served_model_as_eval_py(trained, tmp_path, monkeypatch):  # noqa: F811
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    model, enc, folder = trained
    bench = tmp_path / "bench"
    bench.mkdir()
    write_jsonl(bench / "gsm8k_test.jsonl", GSM8K_TEST)
    monkeypatch.setattr(ev, "data_path", str(bench))
    ours = ev.gsm8k_answers(model, enc, ev.load_problems("gsm8k"), [])
    scores = ev.eval_gsm8k(model, enc, {}, nullcontext())

    proc, url = start_server(folder, f"--init_from=hf:{folder}", "--model_name=tiny")
    try:
        with offline():
            lm_eval_tasks(tmp_path)
            # the server tokenizes (tokenized_requests=False): lm-eval then needs no tokenizer of its own
            run = simple_evaluate(model="local-completions", tasks=["local_gsm8k_0"], log_samples=True, bootstrap_iters=0,
                                  model_args={"base_url": url + "v1/completions", "model": "tiny", "max_retries": 1,
                                              "tokenizer_backend": None, "tokenized_requests": False},
                                  task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    finally:
        stop_server(proc)
    assert [s["resps"][0][0] for s in samples(run, "local_gsm8k_0")] == ours
    for metric in ("exact_match,strict-match", "exact_match,flexible-extract"):
        assert run["results"]["local_gsm8k_0"][metric] == scores[metric], metric
    assert scores["exact_match,flexible-extract"] > 0  # the question it was trained on is answered
