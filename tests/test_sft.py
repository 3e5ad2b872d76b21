"""sft.py: templates mask exactly the answers and their end token, data sources, batching, and a real run."""

import json
import os
import random
import subprocess
import sys

import pytest
import tiktoken
import torch

import checkpoint
import sft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = ["<|endoftext|>", "<|endofprompt|>", "<|pad|>", "<|bos|>", "<|user_start|>", "<|user_end|>",
            "<|assistant_start|>", "<|assistant_end|>"]


@pytest.fixture(autouse=True)
def one_thread():
    """Models this small train fastest on one thread; more thrash a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def byte_enc():
    """A byte-level tokenizer with every special token the templates use: ids are bytes, easy to reason about."""
    return tiktoken.Encoding("bytes", pat_str=r"[\s\S]", mergeable_ranks={bytes([i]): i for i in range(256)},
                             special_tokens={s: 256 + i for i, s in enumerate(SPECIALS)})


@pytest.fixture(scope="module")
def cl100k():
    import data
    return data.load_tokenizer("cl100k_base")


TWO_TURNS = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
             {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6"}]
ALPACA_HEAD = ("Below is an instruction that describes a task. Write a response that appropriately completes "
               "the request.\n\n### Instruction:\n{}\n\n### Response:\n")
# the full text each template must produce, written out from the cards, and the answers with their end token
EXPECTED = {
    "alpaca": (ALPACA_HEAD.format("What is 2+2?") + "4<|endoftext|>" + ALPACA_HEAD.format("And 3+3?") + "6<|endoftext|>",
               ["4<|endoftext|>", "6<|endoftext|>"]),
    "parchment": ("system\nYou are a helpful assistant<|endoftext|>\nuser\nWhat is 2+2?<|endoftext|>\nassistant\n"
                  "4<|endoftext|>\nuser\nAnd 3+3?<|endoftext|>\nassistant\n6<|endoftext|>\n",
                  ["4<|endoftext|>", "6<|endoftext|>"]),
    "user_assistant": ("User: What is 2+2?\nAssistant: 4<|endoftext|>User: And 3+3?\nAssistant: 6<|endoftext|>",
                       [" 4<|endoftext|>", " 6<|endoftext|>"]),
    "nanochat": ("<|bos|><|user_start|>What is 2+2?<|user_end|><|assistant_start|>4<|assistant_end|>"
                 "<|user_start|>And 3+3?<|user_end|><|assistant_start|>6<|assistant_end|>",
                 ["4<|assistant_end|>", "6<|assistant_end|>"]),
    "magicoder": ("# Task: What is 2+2?\n\n4<|endoftext|># Task: And 3+3?\n\n6<|endoftext|>",
                  ["4<|endoftext|>", "6<|endoftext|>"]),
}


def trained_runs(ids, mask, enc):
    """The decoded text of each maximal run of trained tokens."""
    runs, cur = [], []
    for t, m in zip(ids, mask):
        if m:
            cur.append(t)
        elif cur:
            runs, cur = runs + [cur], []
    return [enc.decode(r) for r in runs + ([cur] if cur else [])]


@pytest.mark.parametrize("template", sorted(sft.TEMPLATES))
def test_template_trains_exactly_the_answers_and_their_end_token(template, byte_enc):
    full, answers = EXPECTED[template]
    ids, mask = sft.render(template, TWO_TURNS, byte_enc)
    assert byte_enc.decode(ids) == full
    assert trained_runs(ids, mask, byte_enc) == answers
    last_trained = max(i for i, m in enumerate(mask) if m)
    assert ids[last_trained] in sft.stop_tokens(template, byte_enc)  # card 002's fix: the model learns to stop


def test_real_tokenizers_render_the_same_text(cl100k):
    """Card 003 on cl100k; card 004 on our own BPE, its role tokens added at tokenizer-training time."""
    import bpe
    own = bpe.train_bpe(["What is 2+2? And 3+3? " * 5] * 5, 256 + 8 + len(SPECIALS[3:]), SPECIALS[3:], verbose=False)
    for template, enc in (("parchment", cl100k), ("nanochat", own), ("user_assistant", cl100k)):
        ids, mask = sft.render(template, TWO_TURNS, enc)
        assert enc.decode(ids) == EXPECTED[template][0] and trained_runs(ids, mask, enc) == EXPECTED[template][1]


@pytest.mark.parametrize("template", sorted(sft.TEMPLATES))
def test_prompt_is_the_rendered_prefix_before_the_answer(template, byte_enc):
    ids, mask = sft.render(template, TWO_TURNS, byte_enc)
    prompt = sft.render_prompt(template, TWO_TURNS[:3], byte_enc)
    assert ids[:len(prompt)] == prompt and mask[len(prompt)] == 1
    assert byte_enc.decode(ids[len(prompt):]) == EXPECTED[template][1][1] + ("\n" if template == "parchment" else "")


@pytest.mark.parametrize("template", sorted(sft.TEMPLATES))
def test_system_message_is_kept(template, byte_enc):
    ids, mask = sft.render(template, [{"role": "system", "content": "Be brief."}] + TWO_TURNS[:2], byte_enc)
    text = byte_enc.decode(ids)
    assert "Be brief." in text and "You are a helpful assistant" not in text
    assert "".join(trained_runs(ids, mask, byte_enc)) == EXPECTED[template][1][0]


def test_magicoder_cuts_the_problem_at_400_characters(byte_enc):
    ids, _ = sft.render("magicoder", [{"role": "user", "content": "x" * 500}, {"role": "assistant", "content": "y"}], byte_enc)
    assert byte_enc.decode(ids) == "# Task: " + "x" * 400 + "\n\ny<|endoftext|>"


def test_alpaca_input_section(byte_enc):
    msgs, _ = sft.to_messages({"instruction": "Sum it.", "input": "[1, 2]", "output": "3"})
    text = byte_enc.decode(sft.render("alpaca", msgs, byte_enc)[0])
    assert "paired with an input" in text and "### Input:\n[1, 2]\n\n### Response:\n3<|endoftext|>" in text


def test_parchment_pads_with_endofprompt_and_trains_endoftext(cl100k):
    eot, pad = cl100k.encode_single_token("<|endoftext|>"), cl100k.encode_single_token("<|endofprompt|>")
    assert sft.pad_token("parchment", cl100k) == pad != eot and sft.stop_tokens("parchment", cl100k) == [eot]
    convs = [[{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris." * k}]
             for k in (1, 5, 20)]
    loader = sft.ConversationLoader([sft.render("parchment", c, cl100k) for c in convs], 3, pad, "cpu", shuffle=False)
    x, y = loader.next_batch()
    assert (x == pad).any() and not (y == pad).any() and (y[x == pad] == -1).all()
    assert (y == eot).sum() == 3  # each row's end token is a target
    for k, (row_x, row_y) in enumerate(zip(x, y)):
        assert cl100k.decode(row_y[row_y != -1].tolist()) == "Paris." * (1, 5, 20)[k] + "<|endoftext|>"
        assert (row_y[:-1][row_y[:-1] != -1] == row_x[1:][row_y[:-1] != -1]).all()  # targets are the next inputs


# -----------------------------------------------------------------------------
# data sources


@pytest.mark.parametrize("row, user, inp, answer", [
    ({"instruction": "Add.", "input": "1 2", "output": "3"}, "Add.", "1 2", "3"),                     # alpaca
    ({"instruction": "Who?", "context": "Ann met Bo.", "response": "Ann", "category": "closed_qa"}, "Who?", "Ann met Bo.", "Ann"),
    ({"problem": "Write f.", "solution": "def f(): pass", "lang": "python"}, "Write f.", "", "def f(): pass"),
    ({"question": "1+1?", "answer": "2"}, "1+1?", "", "2"),                                           # gsm8k
])
def test_common_jsonl_shapes_become_conversations(row, user, inp, answer):
    messages, problem = sft.to_messages(row)
    assert problem is None and sft.check_messages(messages) is None
    assert (messages[0]["content"], messages[0]["input"], messages[1]["content"]) == (user, inp, answer)


def test_messages_shape_and_bad_roles():
    good = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                         {"role": "assistant", "content": "a"}]}
    assert sft.to_messages(good) == (good["messages"], None)
    bad = {"messages": [{"role": "user", "content": "u"}, {"role": "user", "content": "again"}]}
    assert "message 1" in sft.to_messages(bad)[1]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_downloaded_sources_filter_count_and_convert(tmp_path, monkeypatch, capsys, byte_enc):
    import zipfile
    files = {"dolly_15k_cleaned": write_jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "Who met Bo?", "context": "Ann met Bo.", "response": "Ann", "category": "closed_qa"},
        {"instruction": "Write a poem", "context": "", "response": "Roses", "category": "creative_writing"},
        {"instruction": "Capital of Peru?", "context": "", "response": "Lima", "category": "open_qa"}]),
        "gsm8k_train": write_jsonl(tmp_path / "gsm8k.jsonl", [
            {"question": "Half of 48?", "answer": "48/2 = <<48/2=24>>24\n#### 24"}]),
        "arc": tmp_path / "arc.zip"}
    with zipfile.ZipFile(files["arc"], "w") as z:
        z.writestr("ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Train.jsonl", json.dumps(
            {"question": {"stem": "Sky color?", "choices": [{"text": "blue", "label": "A"}, {"text": "red", "label": "B"}]},
             "answerKey": "A"}) + "\n")
        z.writestr("ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl", "not used\n")
    monkeypatch.setattr(sft, "fetch_source", lambda key: files[key])
    convs = sft.load_conversations("dolly_qa,gsm8k,arc", {"seed": 0, "max_examples": 0})
    assert "2 conversations (1 rows filtered out" in capsys.readouterr().out  # the poem: counted, not lost
    texts = [byte_enc.decode(sft.render("parchment", c, byte_enc)[0]) for c in convs]
    assert "user\nWho met Bo?\n\nAnn met Bo.<|endoftext|>" in texts[0]         # card 003: context after a blank line
    assert "assistant\n48/2 = 24\n#### 24<|endoftext|>" in texts[2]              # calculator notes dropped
    assert "- blue=A\n- red=B" in texts[3] and texts[3].endswith("assistant\nA<|endoftext|>\n")


def run_sft(*args):
    return subprocess.run([sys.executable, "sft.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_malformed_jsonl_line_is_one_line_error_naming_the_line(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"instruction": "a", "output": "b"}, {"messages": [{"role": "user", "content": "c"},
                                                               {"role": "assistant", "content": "d"}]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"instruction": "x", "output": \n')
    r = run_sft(f"--sft_data={path}", f"--init_from={tmp_path}")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "line 3" in r.stderr and "mine.jsonl" in r.stderr
    path.write_text(json.dumps({"prompt_text": "x"}) + "\n")  # valid JSON of an unknown shape
    r = run_sft(f"--sft_data={path}", f"--init_from={tmp_path}")
    assert r.returncode != 0 and "line 1" in r.stderr and "Traceback" not in r.stderr


def test_simplemath_answers_are_exact_and_operators_balanced():
    convs = sft.simplemath(400, random.Random(0), hi=99)
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    counts = {op: 0 for op in ops}
    for user, assistant in convs:
        a, op, b, eq = user["content"].split()
        assert eq == "=" and 0 <= int(a) <= 99 and 0 <= int(b) <= 99
        exact = ops[op](int(a), int(b))
        assert exact == int(exact) >= 0 and assistant["content"] == str(int(exact))
        counts[op] += 1
    assert set(counts.values()) == {100}


def test_spelling_and_letter_counting():
    convs = sft.spelling(200, random.Random(0))
    for user, assistant in convs:
        q, a = user["content"], assistant["content"]
        if q.startswith("Spell the word: "):
            w = q[len("Spell the word: "):]
            assert a == w + ":" + ",".join(w)
        else:
            letters = a.split("Spelling it out: ")[1].split(".")[0].split(",")
            word = "".join(letters)
            assert word in q
            letter = a.split("The letter '")[1][0]
            assert a.endswith(f"appears {word.count(letter)} times.")


def test_stdlib_functions_are_compilable_and_match_their_task():
    convs = sft.stdlib_functions(20, random.Random(0))
    assert len(convs) == 20
    for user, assistant in convs:
        name = user["content"].split("`")[1].split("(")[0]
        compile(assistant["content"], "<stdlib>", "exec")
        assert assistant["content"].startswith(f"def {name}(")


def test_fit_conversation_keeps_the_start_of_the_answer():
    ids, mask = list(range(100)), [0] * 80 + [1] * 20
    cut_ids, cut_mask, cut = sft.fit_conversation(ids, mask, 30)
    assert cut and len(cut_ids) == 30 and cut_ids[:15] == list(range(65, 80)) and cut_mask[15] == 1
    assert sft.fit_conversation(ids[70:], mask[70:], 30) == (ids[70:], mask[70:], False)


# -----------------------------------------------------------------------------
# a real run through train.train: over-fit, stop at EOS, resume


FACTS = [("What is the capital of France?", "Paris"), ("Name a prime number.", "Seven"),
         ("Which planet is red?", "Mars"), ("What do bees make?", "Honey")]


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory, byte_enc):
    """A freshly initialised tiny GPT saved like a pretraining checkpoint, with its byte-level tokenizer."""
    from dataclasses import asdict

    import data
    import model
    folder = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    cfg = model.GPTConfig(vocab_size=byte_enc.n_vocab, block_size=64, n_layer=2, n_embd=64, n_head=4, bias=False)
    checkpoint.save_checkpoint(folder, {"model": model.GPT(cfg).state_dict(), "model_config": asdict(cfg),
                                   "config": {"dataset": "none", "data_dir": "data"}, "iter_num": 0})
    data.save_tokenizer(byte_enc, folder)
    return folder


@pytest.fixture(scope="module")
def facts_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("facts") / "facts.jsonl"
    path.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in FACTS))
    return path


def sft_args(base, out, data_path, **kw):
    args = {"init_from": base, "out_dir": out, "sft_data": data_path, "chat_template": "user_assistant",
            "device": "cpu", "dtype": "float32", "batch_size": 4, "val_fraction": 0.01, "eval_iters": 1,
            "log_interval": 1000, "learning_rate": 3e-3, "min_lr": 3e-4, "warmup_iters": 5, "weight_decay": 0.0}
    return [f"--{k}={v}" for k, v in {**args, **kw}.items()]


def test_overfit_answers_then_stops_at_eos(base_ckpt, facts_jsonl, tmp_path):
    # 4 facts, one held out as val: the model must learn the other three exactly and stop after each
    summary = sft.main(sft_args(base_ckpt, tmp_path / "sft", facts_jsonl, max_iters=60, eval_interval=60, learning_rate=1e-2, min_lr=1e-3))
    assert summary["iters"] == 60 and summary["train_loss"] < 0.05
    model, enc, ckpt = checkpoint.load_checkpoint(tmp_path / "sft")
    assert ckpt["chat_template"] == "user_assistant"
    stops = sft.stop_tokens(ckpt["chat_template"], enc)
    answered = 0
    for q, a in FACTS:
        prompt = sft.render_prompt("user_assistant", [{"role": "user", "content": q}], enc)
        out = [t.item() for t in model.generate(torch.tensor([prompt]), 20, temperature=0.0, stop_tokens=stops)]
        answered += out == enc.encode_ordinary(" " + a) + stops[:1]
    assert answered >= 3


def test_resume_continues_to_the_same_weights(base_ckpt, facts_jsonl, tmp_path, monkeypatch):
    # 40 generated sums in batches of 2: the batches differ, so a lost data position changes the weights
    args = dict(max_iters=6, eval_interval=3, learning_rate=1e-3, batch_size=2, sft_data="simplemath:40")
    sft.main(sft_args(base_ckpt, tmp_path / "straight", facts_jsonl, **args))
    calls, next_batch = [], sft.ConversationLoader.next_batch

    def crash_on_step_5(self):  # train-loader calls: eval 0, steps 1-3, eval 3, then step 4 ... crash
        calls.append(self.shuffle)
        if sum(calls) == 7:
            raise KeyboardInterrupt
        return next_batch(self)
    monkeypatch.setattr(sft.ConversationLoader, "next_batch", crash_on_step_5)
    with pytest.raises(KeyboardInterrupt):
        sft.main(sft_args(base_ckpt, tmp_path / "resumed", facts_jsonl, **args))
    monkeypatch.undo()
    assert checkpoint.read_checkpoint(tmp_path / "resumed")["iter_num"] == 3
    sft.main(sft_args(base_ckpt, tmp_path / "resumed", facts_jsonl, **args, init_from="resume"))
    a, b = checkpoint.read_checkpoint(tmp_path / "straight"), checkpoint.read_checkpoint(tmp_path / "resumed")
    assert a["iter_num"] == b["iter_num"] == 6 and b["chat_template"] == "user_assistant"
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_show_example_marks_the_trained_text(base_ckpt, facts_jsonl, tmp_path, capsys):
    sft.main(sft_args(base_ckpt, tmp_path / "x", facts_jsonl, show_example=True, chat_template="parchment"))
    out = capsys.readouterr().out
    assert "assistant\n⟦" in out and "<|endoftext|>⟧\n" in out and not (tmp_path / "x").exists()


class FakePretrain:
    """Stands in for data.Loader: rows of the token 7, every target trained."""

    def __init__(self, rows, T):
        self.rows, self.T, self.calls = rows, T, 0

    def next_batch(self):
        self.calls += 1
        return torch.full((self.rows, self.T), 7), torch.full((self.rows, self.T), 7)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, sd):
        self.calls = sd["calls"]


def test_midtraining_packs_conversations_untrimmed_and_mixes_pretraining(byte_enc):
    examples = [sft.render("nanochat", c, byte_enc) for c in sft.simplemath(50, random.Random(0))]
    loader = sft.MidtrainLoader(examples, 3, 16, "cpu", pretrain=FakePretrain(1, 16))
    x, y = loader.next_batch()
    stream = [t for ids, _ in examples for t in ids]
    assert x.shape == y.shape == (4, 16) and (y != -1).all()  # midtraining trains every token (card 004)
    assert x[:3].flatten().tolist() == stream[:48] and y[2].tolist() == stream[33:49] and (x[3] == 7).all()
    state = loader.state_dict()
    after = loader.next_batch()
    loader.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(after, loader.next_batch()))


def test_resume_refuses_a_data_position_from_other_conversations():
    examples = [([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6, 7], [0, 1, 1])]
    loader = sft.ConversationLoader(examples, 1, 0, "cpu")
    loader.next_batch()
    state = loader.state_dict()
    same = sft.ConversationLoader(list(examples), 1, 0, "cpu")
    same.load_state_dict(state)
    assert torch.equal(same.next_batch()[0], loader.next_batch()[0])
    other = sft.ConversationLoader(examples + [([8, 9], [0, 1])], 1, 0, "cpu")
    with pytest.raises(SystemExit, match="same --sft_data"):
        other.load_state_dict(state)
