"""Faults a careful user meets: nothing is lost, nothing trains silently wrong, every mistake is one line.

One section per kind of fault, each a test or a parametrized family. Every run is tiny: one layer, n_embd 32,
a few steps on a 16-token context."""

import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import checkpoint
import configurator
import data
import sample
import sft
import train

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--n_layer=1", "--n_embd=32", "--n_head=2", "--block_size=16", "--batch_size=2", "--eval_iters=1",
        "--log_interval=1", "--learning_rate=3e-3", "--warmup_iters=1", "--device=cpu", "--dtype=float32",
        "--grad_skip_factor=0", "--eval_interval=2"]


def prepare(root, vocab_size=320, **kw):
    return data.prepare({"dataset": "stdlib_python", "data_dir": str(root), "max_chars": 120_000,
                         "tokenizer": "bpe", "vocab_size": vocab_size, "tokenizer_train_chars": 40_000,
                         "special_tokens": ["<|endoftext|>"], "filters": "none", "val_fraction": 0.05, **kw})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare(root)
    return root


@pytest.fixture(scope="module")
def other_data_dir(tmp_path_factory):
    """The same dataset name, re-prepared with another tokenizer (a smaller BPE)."""
    root = tmp_path_factory.mktemp("other")
    prepare(root, vocab_size=300)
    return root


def args(data_dir, out_dir, *extra):
    return [f"--data_dir={data_dir}", "--dataset=stdlib_python", f"--out_dir={out_dir}", *TINY, *extra]


def run(argv):
    configurator.configure(vars(train), argv)
    return train.main()


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A finished 4-step run: out_dir with ckpt.pt (iter 4), the tokenizer and metrics.jsonl."""
    out = tmp_path_factory.mktemp("run")
    run(args(data_dir, out, "--max_iters=4"))
    return out


def copy_run(trained, tmp_path):
    return Path(shutil.copytree(trained, tmp_path / "run"))


def rows(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def refused(fn, *a, **kw):
    """The one-line message of the UserError fn raises."""
    with pytest.raises(SystemExit) as e:
        fn(*a, **kw)
    assert isinstance(e.value, configurator.UserError), e.value
    assert "\n" not in e.value.message
    return e.value.message


# tokenizer identity, end to end ------------------------------------------------------------------------

def test_checkpoint_records_its_tokenizer(trained, data_dir):
    ckpt = torch.load(trained / "ckpt.pt", weights_only=True)
    assert ckpt["tokenizer"]["hash"] == data.read_meta(data_dir / "stdlib_python")["tokenizer_hash"]


def test_resume_on_data_of_another_tokenizer_is_refused_and_keeps_the_tokenizer(trained, other_data_dir, tmp_path):
    out = copy_run(trained, tmp_path)
    before = (out / "tokenizer.tiktoken").read_bytes()
    message = refused(run, args(other_data_dir, out, "--max_iters=6", "--init_from=resume"))
    assert "bpe300" in message and "bpe320" in message
    assert (out / "tokenizer.tiktoken").read_bytes() == before


def test_a_later_stage_on_data_of_another_tokenizer_is_refused(trained, other_data_dir, tmp_path):
    message = refused(run, args(other_data_dir, tmp_path / "stage2", "--max_iters=2", f"--init_from={trained}"))
    assert "bpe300" in message and "bpe320" in message


def test_a_rank_file_missing_a_line_is_refused(trained, tmp_path):
    out = copy_run(trained, tmp_path)
    lines = (out / "tokenizer.tiktoken").read_bytes().splitlines(keepends=True)
    (out / "tokenizer.tiktoken").write_bytes(b"".join(lines[:300] + lines[301:]))
    assert "does not match" in refused(data.load_tokenizer, out)


def test_a_tokenizer_of_the_same_size_swapped_in_is_refused(trained, tmp_path):
    out = copy_run(trained, tmp_path)
    enc = data.load_tokenizer(out)
    ranks = dict(enc._mergeable_ranks)
    a, b = (t for t, r in ranks.items() if r in (300, 301))  # two merges trade ids: same size, other tokenizer
    ranks[a], ranks[b] = ranks[b], ranks[a]
    swapped = data.tiktoken.Encoding(name=enc.name, pat_str=enc._pat_str, mergeable_ranks=ranks,
                                     special_tokens=enc._special_tokens)
    data.save_tokenizer(swapped, out)
    assert "is not the one the checkpoint was trained with" in refused(checkpoint.load_checkpoint, out)


def test_sampling_an_id_the_tokenizer_lacks_is_one_line(trained):
    enc = data.load_tokenizer(trained)
    stream = sample.TextStream(enc)
    assert "does not have" in refused(stream.add, enc.n_vocab)


# a NaN in the weights never replaces the last good checkpoint ------------------------------------------

class PoisonAt(torch.nn.Module):
    """Wraps a GPT; at training call `at` a NaN lands in lm_head, as a bad step with a huge LR would put it."""

    def __init__(self, model, at):
        super().__init__()
        self.model, self.at, self.calls = model, at, 0

    def forward(self, x, y):
        if self.training:
            if self.calls == self.at:
                with torch.no_grad():
                    self.model.lm_head.weight[0, 0] = float("nan")
            self.calls += 1
        return self.model(x, y)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


def loop(data_dir, out_dir, **kw):
    """(cfg, model, enc, loaders) for calling train.train directly."""
    configurator.configure(vars(train), args(data_dir, out_dir))
    cfg = {**configurator.effective_config(vars(train)), **kw}
    folder = str(data_dir / "stdlib_python")
    loaders = {s: data.Loader(folder, s, 2, 16, seed=1) for s in ("train", "val")}
    torch.manual_seed(0)
    model = train.GPT(train.GPTConfig(vocab_size=320, block_size=16, n_layer=1, n_embd=32, n_head=2))
    return cfg, model, data.load_tokenizer(folder), loaders


def test_nan_weights_are_not_saved_over_the_last_good_checkpoint(data_dir, tmp_path):
    cfg, model, enc, loaders = loop(data_dir, tmp_path, max_iters=8, eval_interval=2)
    message = refused(train.train, cfg, PoisonAt(model, at=3), enc, loaders)
    assert "NaN or inf" in message and "last good checkpoint" in message
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["iter_num"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


# data.py builds beside the old bins and never replaces bins made with other settings -------------------

def test_a_failure_mid_build_leaves_the_old_bins_and_no_temp_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    docs = [{"text": f"def f{i}(x):\n    return x * {i}\n" * 20} for i in range(60)]
    (src / "a.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    cfg = {"dataset": f"files:{src}", "data_dir": str(tmp_path / "data"), "tokenizer": "cl100k_base",
           "val_fraction": 0.1}
    folder = data.prepare(cfg)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with open(src / "a.jsonl", "a") as f:
        f.write("{not json\n")
    assert "not valid JSON" in refused(data.prepare, cfg)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".files_src.lock", "files_src"]


def test_bins_made_with_other_settings_are_not_replaced(data_dir):
    meta = (data_dir / "stdlib_python" / "meta.json").read_bytes()
    for typo in ({"tokenizer": "cl100k_bse"}, {"vocab_size": 300}, {"filters": "card01"}):
        message = refused(prepare, data_dir, **{"vocab_size": 320, **typo})
        assert "other settings" in message or "card01" in message
    assert (data_dir / "stdlib_python" / "meta.json").read_bytes() == meta


# the data is the student's to change: bins are trained on as prepared, and every suggested command works -------

# tiny's model cut to TINY's size (its sample_prompt off): the preset's data settings are what these tests are about
TINY_PRESET = ["--preset=tiny", *TINY, "--n_kv_head=1", "--ffn_hidden=64", "--max_iters=2", "--sample_prompt="]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A few standard-library modules as a files: dataset: a stand-in for the whole library, prepared in a blink."""
    root = tmp_path_factory.mktemp("corpus")
    for name in ("bisect", "colorsys", "fnmatch", "glob", "heapq", "textwrap", "shlex", "copy"):
        shutil.copy(Path(os.__file__).with_name(f"{name}.py"), root)
    return root


def data_py(*argv, cwd=ROOT):
    """python data.py ARGV as a user runs it: (exit status, stderr)."""
    r = subprocess.run([sys.executable, str(ROOT / "data.py"), *argv], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stderr


def suggested(message, new):
    """The arguments of the `python data.py ...` command a message suggests, with its NEW filled in."""
    command = re.search(r"python data\.py (.*?), then ", message).group(1)
    return [arg.replace("NEW", str(new)) for arg in shlex.split(command)]


def test_train_trains_on_bins_another_recipe_made(data_dir, tmp_path):
    """tiny's recipe prepares a BPE of 4,096 ids with five specials; bins made otherwise (BPE 320, one special) are
    trained on as they are, by a model of their vocabulary: the preset's values are defaults, not wishes."""
    run([f"--data_dir={data_dir}", "--dataset=stdlib_python", f"--out_dir={tmp_path}", *TINY_PRESET])
    model, enc, _ = checkpoint.load_checkpoint(tmp_path)
    assert model.config.vocab_size == enc.n_vocab == 320


def test_a_student_trains_the_preset_on_data_prepared_with_other_special_tokens(corpus, tmp_path, monkeypatch):
    """The quick start's data with one setting changed, then the preset trained on it (the corpus and vocab_size
    stand in for the standard library; fim_rate=0 is the advice of data.py's first answer)."""
    student = ["--preset=tiny", "--special_tokens=['<|endoftext|>']", "--data_name=mine"]
    small = [f"--dataset=files:{corpus}", "--vocab_size=300", "--val_fraction=1"]
    status, err = data_py(*student, *small, cwd=tmp_path)
    assert status != 0 and len(err.strip().splitlines()) == 1 and "pass --fim_rate=0" in err  # tiny's FIM needs its tokens
    assert data_py(*student, *small, "--fim_rate=0", cwd=tmp_path)[0] == 0
    monkeypatch.chdir(tmp_path)
    run(["--dataset=mine", *TINY_PRESET])
    model, enc, _ = checkpoint.load_checkpoint(tmp_path / "out" / "tiny")
    assert model.config.vocab_size == 300 and enc.special_tokens_set == {"<|endoftext|>"}


def test_the_advice_to_keep_both_bins_works(corpus, tmp_path):
    """data.py never replaces bins made with other settings; both ways out it names work."""
    first = [f"--dataset=files:{corpus}", f"--data_dir={tmp_path}", "--vocab_size=300", "--val_fraction=1"]
    assert data_py(*first)[0] == 0
    status, err = data_py(*first, "--vocab_size=280")
    assert status != 0 and "keep both with --data_name=NEW (train on them with train.py --dataset=NEW)" in err
    assert len(err.strip().splitlines()) == 1
    assert data_py(*first, "--vocab_size=280", "--data_name=mine")[0] == 0  # keep both ...
    run([f"--data_dir={tmp_path}", "--dataset=mine", f"--out_dir={tmp_path / 'run'}", *TINY_PRESET])  # ... and train
    assert checkpoint.load_checkpoint(tmp_path / "run")[0].config.vocab_size == 280
    shutil.rmtree(re.search(r"or delete (.*) to replace them", err).group(1))  # or delete the old ones
    assert data_py(*first, "--vocab_size=280")[0] == 0


@pytest.mark.parametrize("wish", ["--tokenizer=cl100k_base", "--special_tokens=['<|endoftext|>', '<|pad|>']"])
def test_a_data_setting_given_to_train_that_the_bins_disagree_with_is_refused_with_advice_that_works(
        corpus, tmp_path, wish):
    folder = data.prepare({"dataset": f"files:{corpus}", "data_dir": str(tmp_path), "data_name": "mine", "vocab_size": 300,
                           "special_tokens": ["<|endoftext|>"], "val_fraction": 1})
    common = [f"--data_dir={tmp_path}", f"--out_dir={tmp_path / 'run'}", *TINY, "--max_iters=2", wish]
    message = refused(run, ["--dataset=mine", *common])
    assert message.startswith(f"{folder} holds bins prepared with other settings than this run gives")
    assert data_py(*suggested(message, "theirs"))[0] == 0
    run(["--dataset=theirs", *common])
    model, enc, _ = checkpoint.load_checkpoint(tmp_path / "run")
    assert data.read_meta(tmp_path / "theirs")["tokenizer_hash"] == data.tokenizer_hash(enc)


def test_train_prepares_missing_bins_with_the_data_settings_given_to_it(corpus, tmp_path):
    """data.py's settings given to train.py (--special_tokens) shape the bins it prepares; the preset's FIM then
    needs its tokens, and the one-sentence refusal's advice, given to train.py too, works."""
    argv = [f"--data_dir={tmp_path}", f"--dataset=files:{corpus}", f"--out_dir={tmp_path / 'run'}", *TINY_PRESET,
            "--special_tokens=['<|endoftext|>']", "--vocab_size=300", "--val_fraction=1"]
    assert "pass --fim_rate=0" in refused(run, argv)
    run([*argv, "--fim_rate=0"])
    assert data.read_meta(tmp_path / f"files_{corpus.name}")["special_tokens"] == {"<|endoftext|>": 299}


def test_a_vocab_size_below_the_datas_is_refused_with_advice_that_works(data_dir, tmp_path):
    message = refused(run, args(data_dir, tmp_path, "--max_iters=1", "--vocab_size=100"))
    assert "set --vocab_size=320, or leave it out" in message
    run(args(data_dir, tmp_path, "--max_iters=1", "--vocab_size=320"))


def test_continuing_on_data_of_another_tokenizer_says_how_to_prepare_bins_it_reads(trained, other_data_dir, tmp_path):
    """Resume and a new stage both meet bins of another BPE; the data.py command the refusal names prepares the
    same data with the checkpoint's tokenizer, and the run then continues on them."""
    out = copy_run(trained, tmp_path)
    for source, argv in ((out, ["--init_from=resume", "--max_iters=6"]),
                         (trained, [f"--init_from={trained}", "--max_iters=2", f"--out_dir={tmp_path / 'stage2'}"])):
        message = refused(run, args(other_data_dir, out, *argv))
        assert f"--tokenizer={source}" in message and message.endswith("then run this again with --data_dir=NEW")
        new = tmp_path / f"bins_for_{source.name}"
        assert data_py(*suggested(message, new))[0] == 0
        run(args(other_data_dir, out, *argv, f"--data_dir={new}"))
    assert torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == 6
    assert torch.load(tmp_path / "stage2" / "ckpt.pt", weights_only=True)["iter_num"] == 2


def test_given_settings_are_told_from_a_presets():
    """configurator.given: what the user gave (command line, keywords, a notebook's assignment, data.py's settings
    handed on), never a preset's value."""
    g = vars(train)
    try:
        configurator.configure(g, ["--preset=tiny", "--max_iters=3", "--special_tokens=['<|endoftext|>']"])
        assert configurator.given(g) == {"max_iters": 3, "special_tokens": ["<|endoftext|>"]}
        train.configure(n_layer=1)
        train.n_embd = 64
        assert configurator.given(g) == {"max_iters": 3, "special_tokens": ["<|endoftext|>"], "n_layer": 1, "n_embd": 64}
        train.configure(preset="tiny")  # a new recipe starts afresh; a hand assignment is kept, and stays the user's
        assert configurator.given(g) == {"n_embd": 64}
        assert "expects a list" in refused(configurator.configure, g, ["--special_tokens=<|endoftext|>"])
        assert "fim_rate=2" in refused(configurator.configure, g, ["--fim_rate=2"])
        assert "did you mean --special_tokens" in refused(configurator.configure, g, ["--special_token=[]"])
    finally:
        configurator.reset(g)


# resume under another world size ------------------------------------------------------------------------

def test_resume_with_another_number_of_processes_is_refused(trained, data_dir, tmp_path, monkeypatch):
    out = copy_run(trained, tmp_path)
    monkeypatch.setattr(train, "init_distributed", lambda: (False, 0, 0, 2))
    message = refused(run, args(data_dir, out, "--max_iters=6", "--init_from=resume"))
    assert "saved by 1 process(es) and this run has 2" in message


# every numeric setting has a range, checked before any work starts --------------------------------------

import eval as evaluate  # noqa: E402  (after the others: eval imports sample)

BAD_VALUES = [
    (train, "--grad_clip=-1"), (train, "--lr_decay_iters=-1"), (train, "--warmup_iters=-5"),
    (train, "--grad_skip_window=0"), (train, "--lr_schedule=cosin"), (train, "--dropout=1.5"),
    (train, "--beta1=1.5"), (train, "--seed=-1"), (train, "--pad_vocab_multiple=0"), (train, "--max_iters=-1"),
    (evaluate, "--timeout=-1"), (evaluate, "--timeout=0"), (evaluate, "--limit=-1"), (evaluate, "--syntax_samples=0"),
    (evaluate, "--ppl_stride=0"), (evaluate, "--workers=-1"), (sft, "--max_examples=-1"), (sft, "--epochs=-1"),
    (sft, "--simplemath_max=-1"), (sft, "--warmup_frac=2"), (data, "--fim_rate=2"), (data, "--num_proc=-1"),
    (sample, "--top_p=0"), (sample, "--temperature=-1"),
]


@pytest.mark.parametrize("module,arg", BAD_VALUES, ids=[a for _, a in BAD_VALUES])
def test_a_value_out_of_range_is_refused_at_configure(module, arg):
    key = arg[2:].split("=")[0]
    message = refused(configurator.configure, vars(module), [arg])
    assert message.startswith(f"{key}=") and ("must be" in message or "is not one of" in message)


def test_a_source_capped_at_zero_is_refused():
    assert "asks for no conversations" in refused(sft.load_conversations, "simplemath:0",
                                                  {"seed": 1, "max_examples": 0, "simplemath_max": 9})


@pytest.mark.parametrize("extra,words", [(["--n_embd=1000000"], "GiB"), (["--batch_size=100000000"], "GiB")])
def test_a_run_that_cannot_fit_in_memory_is_refused_before_allocating(data_dir, tmp_path, extra, words):
    assert words in refused(run, args(data_dir, tmp_path, "--max_iters=1", *extra))


# resume with changed settings ---------------------------------------------------------------------------

def test_resume_says_what_changed_and_refuses_what_cannot(trained, data_dir, tmp_path, capsys):
    out = copy_run(trained, tmp_path)
    assert "seed=7" in refused(run, args(data_dir, out, "--max_iters=6", "--init_from=resume", "--seed=7"))
    assert "another architecture: n_layer=2" in refused(
        run, args(data_dir, out, "--max_iters=6", "--init_from=resume", "--n_layer=2"))
    assert "n_embd=48" in refused(run, args(data_dir, tmp_path / "s2", "--max_iters=2", f"--init_from={trained}",
                                            "--n_embd=48"))
    capsys.readouterr()
    run(args(data_dir, out, "--max_iters=6", "--init_from=resume", "--learning_rate=1e-3"))
    said = capsys.readouterr().out
    assert "learning_rate 0.003 -> 0.001" in said and "max_iters 4 -> 6" in said


# one out_dir (or data folder), one run ------------------------------------------------------------------

def test_a_second_run_on_a_locked_folder_is_refused_naming_the_holder(data_dir, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        "for path in sys.argv[1:]:\n"
        "    f = open(path, 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.truncate(0); f.write(f'{os.getpid()}\\n'); f.flush()\n"
        "    globals()[path] = f\n"
        "print('locked', flush=True); time.sleep(60)\n"),
        str(tmp_path / ".lock"), str(data_dir / ".stdlib_python.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        message = refused(run, args(data_dir, tmp_path, "--max_iters=2"))
        assert "in use by another run" in message and str(holder.pid) in message
        assert str(holder.pid) in refused(prepare, data_dir)
    finally:
        holder.kill()
        holder.wait()
    run(args(data_dir, tmp_path, "--max_iters=2"))  # the lock dies with its process


# atomic rewrites, a torn metrics line, kills during resume ----------------------------------------------

def test_a_torn_last_metrics_line_is_tolerated(trained, data_dir, tmp_path):
    out = copy_run(trained, tmp_path)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"iter": 5, "lo')  # a kill mid-write
    run(args(data_dir, out, "--max_iters=6", "--init_from=resume"))
    assert [r["iter"] for r in rows(out) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_a_crash_while_rewriting_metrics_loses_no_row(trained, data_dir, tmp_path, monkeypatch):
    out = copy_run(trained, tmp_path)
    before = (out / "metrics.jsonl").read_text()

    def dies(src, dst):
        raise KeyboardInterrupt  # the process dies before the rename
    monkeypatch.setattr(os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.open_metrics(out / "metrics.jsonl", 4)
    assert (out / "metrics.jsonl").read_text() == before
    with pytest.raises(KeyboardInterrupt):
        data.save_tokenizer(data.load_tokenizer(out), out)
    monkeypatch.undo()
    data.load_tokenizer(out)  # the old files, whole


def test_kills_during_resume_lose_nothing(data_dir, tmp_path):
    """SIGKILL a resuming run at several moments of its start (while it rewrites metrics.jsonl and the
    tokenizer); after every kill the files load, and the final run equals an uninterrupted one."""
    common = [a for a in args(data_dir, "x", "--max_iters=6", "--lr_decay_iters=6") if not a.startswith("--out_dir")]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run([f"--out_dir={whole}", *common])
    run([f"--out_dir={cut}", *common, "--max_iters=4"])
    survived = 0
    for marker in ("config:", "resume:", "model:"):
        proc = subprocess.Popen([sys.executable, "-u", "train.py", f"--out_dir={cut}", "--init_from=resume", *common],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if line.startswith(marker):
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # every row parses and none is lost (the kill may land after step 5 was logged)
        assert [r["iter"] for r in rows(cut) if "loss" in r][:4] == [1, 2, 3, 4]
        checkpoint.load_checkpoint(cut)  # weights and tokenizer load and agree
        survived += 1
    run([f"--out_dir={cut}", "--init_from=resume", *common])
    losses = lambda d: [(r["iter"], r.get("loss"), r.get("val_loss")) for r in rows(d) if "iter" in r]
    assert survived == 3 and losses(cut) == losses(whole)


# a full disk: one line naming the disk and the space needed, no temp file left --------------------------

def test_disk_full_during_a_save_and_during_data_prep(data_dir, tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1) to mount a small tmpfs")
    probe = subprocess.run(["unshare", "--user", "--mount", "--map-root-user", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.strip()}")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        "import os, sys, torch, checkpoint, data\n"
        "disk = sys.argv[1]\n"
        "try:\n"
        "    checkpoint.save_checkpoint(disk, {'model': {'w': torch.zeros(200_000)}})\n"
        "except SystemExit as e:\n"
        "    print('SAVE', e, os.listdir(disk))\n"
        "try:\n"
        "    data.prepare({'dataset': 'stdlib_python', 'data_dir': disk + '/data', 'max_chars': 400_000,\n"
        f"                  'tokenizer': '{data_dir / 'stdlib_python'}', 'val_fraction': 0.05}})\n"
        "except SystemExit as e:\n"
        "    print('DATA', e, os.listdir(disk + '/data'))\n")
    r = subprocess.run(["unshare", "--user", "--mount", "--map-root-user", "sh", "-c",
                        'mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" -c "$3" "$1"', "sh",
                        str(disk), sys.executable, script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    save = next(line for line in r.stdout.splitlines() if line.startswith("SAVE"))
    assert "is full" in save and "MiB free" in save and "needs about 0.8 MiB" in save and save.endswith("[]")
    prep = next(line for line in r.stdout.splitlines() if line.startswith("DATA"))
    assert "is full" in prep and "unchanged" in prep and prep.endswith("['.stdlib_python.lock']")


# corrupt inputs are one line ---------------------------------------------------------------------------

class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def corrupt(folder, kind):
    path = folder / "ckpt.pt"
    good = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[:len(good) // 2])
    elif kind == "garbage":
        path.write_bytes(random.Random(0).randbytes(4096))
    else:  # a pickle payload where the weights should be
        torch.save({"model": Payload(), "model_config": {}}, path)


def entry_points(folder, data_dir, tmp_path):
    return {
        "train resume": lambda: run(args(data_dir, folder, "--max_iters=6", "--init_from=resume")),
        "sft init": lambda: sft.main([f"--init_from={folder}", f"--out_dir={tmp_path / 'sft'}",
                                      "--sft_data=simplemath:10", "--device=cpu"]),
        "sample": lambda: (configurator.configure(vars(sample), [f"--out_dir={folder}", "--device=cpu"]), sample.main()),
        "eval": lambda: (configurator.configure(vars(evaluate), [f"--out_dir={folder}", "--device=cpu",
                                                                  "--tasks=val_ppl"]), evaluate.main()),
    }


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "pickle"])
def test_a_corrupt_checkpoint_is_one_line_in_every_entry_point(trained, data_dir, tmp_path, kind):
    folder = copy_run(trained, tmp_path)
    corrupt(folder, kind)
    for name, call in entry_points(folder, data_dir, tmp_path).items():
        message = refused(call)
        if kind == "pickle":
            assert "not a checkpoint this project wrote" in message and "weights_only" not in message, name
        else:
            assert "truncated or corrupt" in message, name


def test_token_ids_out_of_range_in_a_bin_are_one_line(data_dir, tmp_path):
    folder = Path(shutil.copytree(data_dir / "stdlib_python", tmp_path / "d"))
    ids = data.np.memmap(folder / "train.bin", dtype=data.np.uint16, mode="r+")
    ids[:] = 4000  # meta.json still says the ids stay below 320
    ids.flush()
    loader = data.Loader(str(folder), "train", 2, 16)
    assert "token id 4,000" in refused(loader.next_batch)


def test_bad_device_dataset_and_prompt_are_one_line(trained, tmp_path):
    assert "not one of auto, cpu" in refused(train.setup_device, "tpu")
    if not torch.backends.mps.is_available():
        assert "no Apple GPU" in refused(train.setup_device, "mps")
    assert "is a path" in refused(data.dataset_sources, __file__, "data")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    configurator.configure(vars(sample), [f"--out_dir={trained}", "--device=cpu", f"--prompt=FILE:{empty}"])
    assert "is empty" in refused(sample.main)


# a preset is a name in config/ -------------------------------------------------------------------------

def test_a_preset_path_outside_config_is_never_executed(tmp_path):
    evil = tmp_path / "evil.py"
    marker = tmp_path / "ran"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n")
    relative = os.path.relpath(evil.with_suffix(""), configurator.CONFIG_DIR)
    for name in (relative, str(evil.with_suffix(""))):
        assert "not a path" in refused(configurator.configure, vars(train), [f"--preset={name}"])
    assert not marker.exists()


# the GradScaler's overflow skips are its own ----------------------------------------------------------

class OverflowAt(PoisonAt):
    """At the chosen training calls the gradients become inf while the loss stays finite: an fp16 overflow."""

    def forward(self, x, y):
        logits, loss = self.model(x, y)
        if self.training:
            if self.calls in self.at:
                loss.register_hook(lambda g: g * float("inf"))
            self.calls += 1
        return logits, loss


def test_grad_scaler_overflows_are_counted_apart_and_do_not_stop_the_run(data_dir, tmp_path, fp16_autocast):
    cfg, model, enc, loaders = loop(data_dir, tmp_path, max_iters=10, eval_interval=10, dtype="float16",
                                    max_skips_in_row=3)
    summary = train.train(cfg, OverflowAt(model, at=set(range(2, 7))), enc, loaders)
    assert summary["iters"] == 10 and summary["skipped"] == 0 and summary["scaler_skips"] == 5
    assert [r["iter"] for r in rows(tmp_path) if "scaler_skip" in r] == [2, 3, 4, 5, 6]


# resuming a finished run reports its final evaluation --------------------------------------------------

def test_resuming_a_finished_run_reports_the_final_eval(trained, data_dir, tmp_path):
    out = copy_run(trained, tmp_path)
    final = [r for r in rows(out) if "val_loss" in r][-1]
    summary = run(args(data_dir, out, "--max_iters=4", "--init_from=resume"))
    assert summary["val_loss"] == final["val_loss"] and summary["train_loss"] == final["train_loss"]
