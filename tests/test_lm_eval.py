"""eval.py against lm-eval 0.4 itself. A tiny model is trained here on a few seconds of text, exported with
export.py, and scored twice on the same small documents, written here in the formats of the datasets lm-eval's
tasks read: once by lm-eval's Hugging Face model (in-process, offline, lm-eval's own task files pointed at the
local documents) and once by eval.py. Every number, every document's log-likelihood and every generation agree."""

import json
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
import torch

import bpe
import benchmarks
import eval as ev
import export
from model import GPT, GPTConfig

pytest.importorskip("transformers", reason="lm-eval's HF model runs transformers: pip install -r requirements-test.txt")
pytest.importorskip("lm_eval", reason="lm-eval (requirements-test.txt) is absent")
pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval's HF model needs its extra: pip install 'lm-eval[hf]'")

# -----------------------------------------------------------------------------
# the documents, in the upstream datasets' formats (allenai/ai2_arc, Rowan/hellaswag, openai/gsm8k,
# google-research-datasets/mbpp, EleutherAI/wikitext_document_level)

ARC = [
    {"id": "Mercury_1", "question": "Which of these is a liquid at room temperature?", "answerKey": "B",
     "choices": {"text": ["ice", "water", "steam", "sand"], "label": ["A", "B", "C", "D"]}},
    {"id": "Mercury_2", "question": "What do plants need to make their food?", "answerKey": "1",
     "choices": {"text": ["sunlight", "darkness", "loud music"], "label": ["1", "2", "3"]}},
    {"id": "Mercury_3", "question": "Which tool measures the temperature of water?", "answerKey": "D",
     "choices": {"text": ["a ruler", "a scale", "a clock", "a thermometer"], "label": ["A", "B", "C", "D"]}},
    {"id": "Mercury_4", "question": "What happens to ice when it is heated?", "answerKey": "A",
     "choices": {"text": ["it melts", "it grows", "it sings", "it freezes"], "label": ["A", "B", "C", "D"]}},
]
# ctx_b "[title]" leaves the context ending in a space after lm-eval's preprocessing: that space is scored with
# the choice (lm-eval's _encode_pair), not with the context
HELLASWAG = [
    {"ind": 4, "activity_label": "Home and Garden", "ctx_a": "How to clean a frying pan.", "ctx_b": "[title]",
     "ctx": "How to clean a frying pan. [title]", "source_id": "wikihow~1", "split": "val", "split_type": "indomain",
     "label": "1", "endings": ["Fill the pan with sand and sing.", "Fill the sink with warm soapy water.",
                               "[step] Throw the pan out of the window.", "Paint the pan blue and wait."]},
    {"ind": 5, "activity_label": "Cooking", "ctx_a": "A man cracks two eggs into a bowl.", "ctx_b": "he",
     "ctx": "A man cracks two eggs into a bowl. he", "source_id": "activitynet~2", "split": "val",
     "split_type": "indomain", "label": "0",
     "endings": ["whisks them with a fork.", "throws the bowl at a wall.", "sleeps on the floor.", "sings a song."]},
    {"ind": 6, "activity_label": "Sports", "ctx_a": "A girl runs towards the net.", "ctx_b": "she",
     "ctx": "A girl runs towards the net. she", "source_id": "activitynet~3", "split": "val",
     "split_type": "indomain", "label": "2",
     "endings": ["eats a cake.", "reads a book [title] quietly.", "jumps and hits the ball.", "paints a wall."]},
    {"ind": 7, "activity_label": "Health", "ctx_a": "How to sleep better. [title] Keep a routine.", "ctx_b": "[title]",
     "ctx": "How to sleep better. [title] Keep a routine. [title]", "source_id": "wikihow~4", "split": "val",
     "split_type": "indomain", "label": "3", "endings": [
         "Drink coffee at night.", "Run a marathon at midnight.", "Watch a scary film.",
         "Go to bed at the same time each night."]},
]
GSM8K_TRAIN = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have now?",
                "answer": f"Tom has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}
               for a, b in [(3, 4), (10, 5), (7, 8), (2, 9), (12, 1), (6, 6), (4, 11)]]
GSM8K_TEST = [{"question": f"Ann has {a} pens and gets {b} more. How many pens does she have?",
               "answer": f"Ann has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} pens.\n#### {a + b}"}
              for a, b in [(5, 3), (1, 1)]] + GSM8K_TRAIN[:1]  # one question it was trained on, to get right
MBPP_TEST = [
    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character.",
     "code": "def remove_Occ(s, ch):\r\n    return s.replace(ch, '', 1)[::-1].replace(ch, '', 1)[::-1]",
     "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\"", "assert remove_Occ(\"abcda\",\"a\") == \"bcd\"",
                   "assert remove_Occ(\"PHP\",\"P\") == \"H\""], "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function to add two numbers.", "code": "def add(a, b):\r\n    return a + b",
     "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"],
     "test_setup_code": "", "challenge_test_list": []},
]
# wiki.test.raw's shape: a blank first line, level-1 headings " = T = " start pages, " = = S = = " sections
SENTENCE = ("The river runs past the old mill , where 1 @,@ 200 people lived in 1850 . Its water is cold ; "
            "the fish are \" small \" and quick . ")
PAGES = [
    [" = Alder Mill = ", " ", " Alder Mill is a village on the river Alder . " + SENTENCE * 3, " ",
     " = = History = = ", " ", " " + SENTENCE * 14, " ", " = = = Later years = = = ", " ",
     " The mill closed in 1901 @-@ 1902 and the village ( now a town ) grew . ", " "],
    [" = Birch Hill = ", " ", " Birch Hill is a hill of 300 m ; its top is bare . " + SENTENCE, " ", ""],
]
WIKI_RAW = "\n".join([" "] + [line for page in PAGES for line in page])

# -----------------------------------------------------------------------------
# the model: a tokenizer and 150 steps on the documents' own text, so that it answers in their shapes


def corpus():
    """Text in the documents' shapes; half the multiple-choice answers are left out, so that some are missed."""
    arc = [f"Question: {r['question']}\nAnswer: {r['choices']['text'][r['choices']['label'].index(r['answerKey'])]}"
           for r in ARC[:2]]
    hs = [f"{r['activity_label']}: {r['ctx_a']} {r['endings'][int(r['label'])]}" for r in HELLASWAG[:2]]
    gsm = [f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in GSM8K_TRAIN]
    mbpp = [f"{r['text']}\n[BEGIN]\n{r['code']}\n[DONE]\n\n" for r in MBPP_TEST]
    return arc + hs + gsm + mbpp + ["\n".join(p) for p in PAGES]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, tokenizer, exported folder): Llama-shaped, context 320 (lm-eval generates only where the context
    exceeds its 256 new tokens), trained for a few seconds on the documents' text."""
    texts = corpus()
    enc = bpe.train_bpe(texts, 256 + 200 + 1, ["<|endoftext|>"], verbose=False, num_proc=1)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=320, n_layer=2, n_embd=64, n_head=4, pos="rope",
                          norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False, dropout=0.0))
    eot = enc.encode_single_token("<|endoftext|>")
    stream = torch.tensor([t for text in texts for t in [eot] + enc.encode_ordinary(text)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(0, len(stream) - 129, (8,), generator=gen)
        batch = torch.stack([stream[s:s + 129] for s in starts.tolist()])
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = export.export(model, enc, tmp_path_factory.mktemp("hf") / "tiny")
    return model, enc, out

# -----------------------------------------------------------------------------
# lm-eval's side: its own task files, each pointed at a local copy of the documents


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def lm_eval_tasks(folder):
    """Task files that include lm-eval's own (arc_easy, hellaswag, wikitext, gsm8k, mbpp) and change only where
    the documents come from; JSON is YAML, so they are written with json.dumps."""
    import lm_eval.tasks
    upstream = Path(lm_eval.tasks.__file__).parent
    docs = folder / "docs"
    docs.mkdir()
    local = lambda **files: {"dataset_path": "json", "dataset_name": None,  # noqa: E731
                             "dataset_kwargs": {"data_files": files, "cache_dir": str(folder / "hf_cache")}}
    tasks = {
        "local_arc_easy": {"include": str(upstream / "arc" / "arc_easy.yaml"),
                           **local(test=write_jsonl(docs / "arc.jsonl", ARC)),
                           "training_split": None, "validation_split": None},
        "local_hellaswag": {"include": str(upstream / "hellaswag" / "hellaswag.yaml"),
                            **local(validation=write_jsonl(docs / "hellaswag.jsonl", HELLASWAG)),
                            "training_split": None},
        "local_wikitext": {"include": str(upstream / "wikitext" / "wikitext.yaml"),
                           **local(test=write_jsonl(docs / "wikitext.jsonl", [{"page": "\n".join(p)} for p in PAGES])),
                           "training_split": None, "validation_split": None},
        "local_mbpp": {"include": str(upstream / "mbpp" / "mbpp.yaml"),
                       **local(test=write_jsonl(docs / "mbpp.jsonl", MBPP_TEST)),
                       "metric_list": [{"metric": "bypass"}]},  # pass@1 runs code: compared on the generations
    }
    gsm8k = local(train=write_jsonl(docs / "gsm8k_train.jsonl", GSM8K_TRAIN),
                  test=write_jsonl(docs / "gsm8k_test.jsonl", GSM8K_TEST))
    for shots in (0, 5):
        tasks[f"local_gsm8k_{shots}"] = {"include": str(upstream / "gsm8k" / "gsm8k.yaml"), **gsm8k,
                                         "num_fewshot": shots, "tag": []}
    for name, config in tasks.items():
        (folder / f"{name}.yaml").write_text(json.dumps({"task": name, **config}))
    return list(tasks)


@contextmanager
def offline():
    """lm-eval, datasets and the hub kept off the network for the block."""
    import datasets
    import evaluate
    import huggingface_hub
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            mp.setenv(name, "1")  # read when a library is imported; the flags below are those already read
        for module, name in ((huggingface_hub.constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"),
                             (datasets.config, "HF_DATASETS_OFFLINE")):
            mp.setattr(module, name, True)
        # lm-eval's mbpp/utils.py loads the code_eval metric from the hub when it is imported; pass@1 is not
        # compared here (it needs the sandbox), so a stand-in lets the task file load offline
        mp.setattr(evaluate, "load", lambda *args, **kwargs: type("CodeEval", (), {
            "compute": staticmethod(lambda **kw: [{"pass@1": 0.0}])})())
        yield


@pytest.fixture(scope="module")
def lm_eval_run(trained, tmp_path_factory):
    """lm-eval's results and per-document samples for every task, offline."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    folder = tmp_path_factory.mktemp("lm_eval")
    with offline():
        names = lm_eval_tasks(folder)
        model = HFLM(pretrained=str(trained[2]), device="cpu", dtype="float32", batch_size=8)
        run = simple_evaluate(model=model, tasks=names, log_samples=True, bootstrap_iters=0,
                              task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                              confirm_run_unsafe_code=True)  # mbpp is marked unsafe; its metric is bypassed
    # MBPP's shots (ids 2-4) as lm-eval holds them, from the module its task file loaded
    return dict(run, mbpp_shots=sys.modules["lm_eval.tasks.mbpp.utils"].list_fewshot_samples())

# -----------------------------------------------------------------------------
# eval.py's side: the same documents in the files eval.py reads


@pytest.fixture
def eval_py(trained, lm_eval_run, tmp_path, monkeypatch):
    """eval.py configured to read the documents from one --data_path folder (its own file names and formats)."""
    bench = tmp_path / "bench"
    bench.mkdir()
    write_jsonl(bench / "ARC-Easy-Test.jsonl", [  # the original ARC release's layout
        {"id": r["id"], "answerKey": r["answerKey"], "question": {"stem": r["question"], "choices": [
            {"label": label, "text": text} for label, text in zip(r["choices"]["label"], r["choices"]["text"])]}}
        for r in ARC])
    write_jsonl(bench / "hellaswag_val.jsonl", HELLASWAG)
    write_jsonl(bench / "gsm8k_test.jsonl", GSM8K_TEST)
    write_jsonl(bench / "gsm8k_train.jsonl", GSM8K_TRAIN)
    write_jsonl(bench / "mbpp.jsonl", lm_eval_run["mbpp_shots"] + MBPP_TEST)
    (bench / "wiki.test.raw").write_text(WIKI_RAW, encoding="utf-8")
    for key, value in dict(data_path=str(bench), tasks="arc_easy,hellaswag,wikitext2,gsm8k,mbpp",
                           batch_size=8, gen_batch_size=1, max_new_tokens=512, temperature=0.2, top_p=0.95).items():
        monkeypatch.setattr(ev, key, value)  # the sampling settings are eval.py's defaults, which mbpp must ignore
    return trained


def samples(run, task):
    """lm-eval's logged documents in order, one each (a task with two filters, gsm8k, logs every document twice)."""
    return list({s["doc_id"]: s for s in sorted(run["samples"][task], key=lambda s: s["doc_id"])}.values())

# -----------------------------------------------------------------------------
# the comparisons


def test_wikitext_pages_are_eleuthers_document_level_split(tmp_path):
    (tmp_path / "wiki.test.raw").write_text(WIKI_RAW, encoding="utf-8")
    assert benchmarks.wikitext_documents(str(tmp_path / "wiki.test.raw")) == ["\n".join(p) for p in PAGES]


@pytest.mark.parametrize("task, lm_task", [("arc_easy", "local_arc_easy"), ("hellaswag", "local_hellaswag")])
def test_multiple_choice_equals_lm_eval(eval_py, lm_eval_run, task, lm_task):
    model, enc, _ = eval_py
    items = ev.multiple_choice_items(task)
    theirs = samples(lm_eval_run, lm_task)
    assert [[a[0] for a in s["arguments"]] for s in theirs] == [[c] * len(ks) for c, ks, _ in items]
    assert [[a[1] for a in s["arguments"]] for s in theirs] == [[" " + k for k in ks] for _, ks, _ in items]
    lls = ev.loglikelihoods(model, ev.choice_requests(enc, items), 8)
    assert lls == pytest.approx([r[0][0] for s in theirs for r in s["resps"]], abs=1e-4)
    ours, result = ev.score_multiple_choice(model, enc, items, 8), lm_eval_run["results"][lm_task]
    assert (ours["acc"], ours["acc_norm"]) == (result["acc,none"], result["acc_norm,none"])


def test_hellaswag_scores_a_contexts_trailing_space_with_the_choice(trained):
    _, enc, _ = trained
    context = "Home and Garden: How to clean a frying pan.. "
    ctx_ids, cont_ids = ev.encode_pair(enc, context, " Fill the sink.")
    assert enc.decode(ctx_ids) == context.rstrip() and enc.decode(cont_ids) == "  Fill the sink."


def test_wikitext_equals_lm_eval(eval_py, lm_eval_run):
    model, enc, _ = eval_py
    theirs = samples(lm_eval_run, "local_wikitext")
    pages = benchmarks.wikitext_documents(ev.find_benchmark("wikitext2"))
    nll = [ev.wikitext_page_nll(model, enc, p, model.config.block_size)[0] for p in pages]
    assert len(enc.encode_ordinary(ev.wikitext_detokenize(pages[0]))) > 2 * model.config.block_size  # 3 windows
    assert nll == pytest.approx([-s["resps"][0][0] for s in theirs], rel=1e-5)
    ours, result = ev.eval_wikitext2(model, enc, {}, nullcontext()), lm_eval_run["results"]["local_wikitext"]
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours[metric] == pytest.approx(result[f"{metric},none"], rel=1e-5), metric
    assert ours["documents"] == len(theirs) == 2 and ev.TOKEN_PPL in ours


@pytest.mark.parametrize("shots", [0, 5])
def test_gsm8k_equals_lm_eval(eval_py, lm_eval_run, monkeypatch, shots):
    model, enc, _ = eval_py
    monkeypatch.setattr(ev, "gsm8k_shots", shots)
    theirs = samples(lm_eval_run, f"local_gsm8k_{shots}")
    rows, pool = ev.load_problems("gsm8k"), ev.load_problems("gsm8k_train", limited=False)
    answers = ev.gsm8k_answers(model, enc, rows, pool if shots else [])
    assert answers == [s["resps"][0][0] for s in theirs]
    ours, result = ev.eval_gsm8k(model, enc, {}, nullcontext()), lm_eval_run["results"][f"local_gsm8k_{shots}"]
    for metric in ("exact_match,strict-match", "exact_match,flexible-extract"):
        assert ours[metric] == result[metric], metric
    assert len(enc.encode_ordinary(answers[0])) < ev.LM_EVAL_GEN_TOKENS  # it stopped at a stop string
    if shots:  # five shots overflow the 320 - 256 tokens of prompt lm-eval keeps: both cut it alike
        assert len(enc.encode_ordinary(theirs[0]["arguments"][0][0])) > 320 - ev.LM_EVAL_GEN_TOKENS


def test_mbpp_prompts_and_greedy_completions_equal_lm_evals(eval_py, lm_eval_run, monkeypatch):
    model, enc, _ = eval_py
    theirs = samples(lm_eval_run, "local_mbpp")
    problems = ev.load_problems("mbpp")
    assert [p["prompt"] for p in problems] == [s["arguments"][0][0] for s in theirs]
    generated = {}

    def no_execution(task, problems, samples):
        generated.update(samples)
        return {"pass@1": 0.0, "n": len(samples)}
    monkeypatch.setattr(ev, "score_code", no_execution)
    ev.eval_code("mbpp", model, enc, {}, nullcontext())
    assert [generated[p["task_id"]] for p in problems] == [[s["resps"][0][0]] for s in theirs]
