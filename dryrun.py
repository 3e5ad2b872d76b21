"""
A preset's whole recipe at toy size, on this CPU, offline, in seconds: run it before paying for GPU hours.

    python dryrun.py --preset=pycraft_55m
    python dryrun.py --preset=gpt2_150m --tokenizer=PATH/tokenizer.json   # StarCoder2's, fetched once where online
    python dryrun.py --preset=parchment_166m --compile=False --gpu_dtype=False   # no compile, no bf16 on a CPU

It runs every stage the preset's README recipe prints, through the same scripts and their notebook API
(`data`, `train`, `sft`, `sample`, `eval`: `configure(preset=..., **overrides)` then `main()`), with every flag
of the preset except these:
- size: 2 layers of 64 (the preset's head ratio, GQA kept), a 64-token context, own BPE of 512 ids, a few steps,
  micro-batch 2 and at most 2 accumulation steps, SFT for one epoch (or 3 steps), generations of 8-16 tokens;
- data that would be downloaded: the Python standard library stands in for The Stack and StarCoderData, its
  docstrings for FineWeb-Edu and the math corpus; each downloaded SFT set becomes a JSONL file of generated rows
  in that set's own row format; benchmarks are small fixture files (FIXTURES) read through eval's --data_path;
- dtype "auto" resolves as on the preset's GPU, not as on a CPU (float32): card 001's T4 runs fp16 with a
  GradScaler, card 004's M2 bf16. CPU autocast runs both.
Everything lands in work_dir (default out/dryrun/<preset>); nothing else is read or written.
"""

import gzip
import io
import json
import os
import random
import sys
import time
from pathlib import Path

import configurator
import data
import eval as evaluate
import sample
import sft
import train
from configurator import UserError

# -----------------------------------------------------------------------------
# config

preset = ""
work_dir = ""              # "" = out/dryrun/<preset>
tokenizer = ""             # "" = the preset's; a local tokenizer.json for a preset whose tokenizer is downloaded
compile = True             # False skips torch.compile where the preset sets it (parchment: 6 s without, 29 s with)
gpu_dtype = True           # each stage in its GPU's dtype (auto_dtype); False: float32, as a CPU without bf16
                           # instructions (AVX2 only) runs bf16 autocast ~10x slower: parchment's 100k-row head
corpus_chars = 60_000      # characters of each stand-in corpus (a name no preset sets)
seed = 1337

TOY_MODEL = {"n_layer": 2, "n_embd": 64, "n_head": 4}
TOY_VOCAB = 512            # own BPE: 256 bytes + 247 merges + up to 9 specials
TOY_LOOP = {"block_size": 64, "max_iters": 4, "eval_interval": 2, "eval_iters": 1, "log_interval": 1, "batch_size": 2,
            "warmup_iters": 1, "device": "cpu"}
# what each downloaded pretraining source is replaced by (data.py's dataset names)
STAND_INS = {"the_stack_python": "stdlib_python", "fineweb_edu": "stdlib_docs"}
# later pretraining stages (README): (out_dir suffix, dataset) each from the previous checkpoint, card 002
STAGES = {"smallcoder_303m": [("code", "synthetic_code:0.6,starcoderdata:0.4"), ("math", "math")]}
STAGE_DATA = {"synthetic_code": "stdlib_python", "starcoderdata": "stdlib_python", "math": "stdlib_docs"}
# card 004's midtraining (README): sft.py on every token, half of each batch from the pretraining bins
MIDTRAIN = {"picochat_335m": "smoltalk,mmlu_aux,gsm8k,identity,spelling"}


def configure(**overrides):
    """For notebooks: dryrun.configure(preset="tiny"), then dryrun.main()."""
    return configurator.configure(globals(), [], cumulative=True, **overrides)

# -----------------------------------------------------------------------------
# stand-ins for downloads


def sft_rows(name, n, rng):
    """n rows of the downloaded SFT set `name`, in its own JSONL row format, with SimpleMath content."""
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        q, ans = f"What is {a} + {b}?", str(a + b)
        rows.append({
            "magicoder_python": {"problem": q, "solution": f"print({a} + {b})  # {ans}", "lang": "python"},
            "python_code_instructions_18k": {"instruction": q, "input": "", "output": f"print({a} + {b})"},
            "dolly_qa": {"instruction": q, "context": f"{a} and {b} are numbers.", "response": ans,
                         "category": "closed_qa"},
            "gsm8k": {"question": q, "answer": f"{a} + {b} = <<{a}+{b}={ans}>>{ans}\n#### {ans}"},
        }.get(name) or {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]})
    return rows


def stand_in_sft_data(spec, folder, rng, n=8):
    """The sft_data spec with each downloaded source replaced by a JSONL file and every source capped at n."""
    parts = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name = item.rsplit(":", 1)[0] if item.rsplit(":", 1)[-1].isdigit() else item
        if name in sft.GENERATED:
            parts.append(f"{name}:{n}")
            continue
        path = Path(folder) / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in sft_rows(name, n, rng)))
        parts.append(str(path))
    return ",".join(parts)


def _choices(labels, texts):
    return [{"label": lab, "text": t} for lab, t in zip(labels, texts)]


FIXTURES = {  # eval's benchmark file names, two items each, in the published row formats
    "HumanEval.jsonl.gz": [
        {"task_id": f"HumanEval/{i}", "prompt": f"def add{i}(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
         "entry_point": f"add{i}", "canonical_solution": "    return a + b\n",
         "test": "def check(f):\n    assert f(1, 2) == 3\n"} for i in range(2)],
    "mbpp.jsonl": [{"task_id": i, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
                    "test_list": ["assert add(1, 2) == 3"], "test_setup_code": ""} for i in (2, 3, 4, 11, 12)],
    "gsm8k_test.jsonl": [{"question": "Tom has 2 apples and buys 3 more. How many apples does he have?",
                          "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}] * 2,
    "hellaswag_val.jsonl": [{"activity_label": "Cooking", "ctx_a": "A man cracks an egg into a bowl.",
                             "ctx_b": "he", "endings": ["whisks it.", "eats the bowl.", "flies away.", "sings."],
                             "label": 0}] * 2,
    "ARC-Easy-Test.jsonl": [{"question": {"stem": "Which is a liquid?", "choices": _choices("ABCD", [
        "water", "stone", "wood", "iron"])}, "answerKey": "A"}] * 2,
    "ARC-Challenge-Test.jsonl": [{"question": {"stem": "What do plants take in?", "choices": _choices("1234", [
        "carbon dioxide", "gold", "plastic", "sand"])}, "answerKey": "1"}] * 2,
    "wiki.test.raw": " \n = Valkyria Chronicles = \n \n The game began development in 2010 . \n \n" * 20,
}


def write_fixtures(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in FIXTURES.items():
        text = content if isinstance(content, str) else "".join(json.dumps(r) + "\n" for r in content)
        (folder / name).write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())

# -----------------------------------------------------------------------------
# the recipe


def auto_dtype(name, value):
    """The dtype the preset trains in on its own hardware: card 001 on a T4 (fp16 + GradScaler), others bf16."""
    return value if value != "auto" else ("float16" if name.startswith("gpt2_") else "bfloat16")


def run_stage(title, module, **overrides):
    print(f"\n=== {title}: {module.__name__}.configure({', '.join(f'{k}={v!r}' for k, v in overrides.items())})",
          flush=True)
    module.configure(**overrides)
    return module.main()


def main():
    if not preset:
        raise UserError(f"name a preset: --preset=NAME, one of {', '.join(configurator.list_presets())}")
    recipe = configurator.load_preset(preset)
    root = Path(work_dir or f"out/dryrun/{preset}")
    data_dir, rng, t0 = root / "data", random.Random(seed), time.time()
    root.mkdir(parents=True, exist_ok=True)
    tok = tokenizer or recipe.get("tokenizer", data.tokenizer)
    vocab = TOY_VOCAB if tok == "bpe" else data.load_tokenizer(tok).n_vocab  # a downloaded one keeps its size
    heads = recipe.get("n_head", TOY_MODEL["n_head"])
    model = dict(TOY_MODEL, vocab_size=vocab, n_kv_head=TOY_MODEL["n_head"] * recipe.get("n_kv_head", heads) // heads,
                 **({"ffn_hidden": 2 * TOY_MODEL["n_embd"]} if recipe.get("ffn_hidden") else {}))
    common = {"preset": preset, "seed": seed}
    loop = dict(TOY_LOOP, gradient_accumulation_steps=min(2, recipe.get("gradient_accumulation_steps", 1)),
                compile=compile and recipe.get("compile", False), dtype=auto_dtype(preset, recipe.get("dtype", "auto")) if gpu_dtype else "float32")

    # data: the preset's tokenizer, filters, quality order, FIM and bos token on stand-in text; a fifth of a toy
    # corpus's files to val, where the recipe's share of a real one might draw a single short file
    val_fraction = recipe.get("val_fraction", data.val_fraction)
    val_fraction = val_fraction if val_fraction >= 1 else max(val_fraction, 0.2)
    base = recipe.get("dataset", data.dataset)
    later = [name for _, spec in STAGES.get(preset, []) for name, _, _ in data.dataset_sources(spec, data_dir)]
    for name in [base] + [n for n in dict.fromkeys(later) if n != base]:
        source = STAGE_DATA.get(name) or STAND_INS.get(name, name)
        run_stage(f"data {name}", data, **common, dataset=source, data_name=data.derive_name(name),
                  data_dir=str(data_dir), tokenizer=tok, vocab_size=vocab, max_chars=corpus_chars,
                  tokenizer_train_chars=corpus_chars, val_fraction=val_fraction)

    # pretraining, then each later stage from the previous checkpoint with a fresh optimizer
    out = root / preset
    run_stage("pretrain", train, **common, **model, **loop, dataset=base, data_dir=str(data_dir), tokenizer=tok,
              out_dir=str(out), sample_tokens=8)
    for suffix, spec in STAGES.get(preset, []):
        prev, out = out, root / f"{preset}_{suffix}"
        run_stage(f"stage {suffix}", train, **common, **model, **loop, dataset=spec, data_dir=str(data_dir), tokenizer=tok,
                  init_from=str(prev), out_dir=str(out), sample_prompt="")
    if recipe.get("fim_rate"):  # card 000's infilling
        run_stage("fill in the middle", sample, preset=preset, out_dir=str(out), fim_prefix="def add(a, b):\n",
                  fim_suffix="\n\nprint(add(1, 2))", max_new_tokens=8, device="cpu")

    # SFT (after midtraining where the recipe has it), chat, eval
    sft_loop = dict({k: v for k, v in loop.items() if k != "block_size"}, dtype=auto_dtype(preset, recipe.get("sft_dtype", recipe.get("dtype", "auto"))) if gpu_dtype else "float32",
                    compile=compile and recipe.get("sft_compile", recipe.get("compile", False)), max_iters=3)
    if recipe.get("sft_epochs"):
        sft_loop["epochs"] = 1
    if preset in MIDTRAIN:
        prev, out = out, root / f"{preset}_mid"
        run_stage("midtraining", sft, **common, **dict(sft_loop, batch_size=4), midtrain_ratio=0.5,
                  init_from=str(prev), out_dir=str(out), sft_data=stand_in_sft_data(MIDTRAIN[preset], root, rng))
    prev, out = out, root / f"{preset}_sft"
    run_stage("sft", sft, **common, **sft_loop, init_from=str(prev), out_dir=str(out),
              sft_data=stand_in_sft_data(recipe.get("sft_data", sft.sft_data), root, rng))
    stdin = sys.stdin
    sys.stdin = io.StringIO("What is 2 + 3?\nAnd 4 + 4?\n")  # two scripted turns
    try:
        run_stage("chat", sample, preset=preset, out_dir=str(out), chat=True, max_new_tokens=8, device="cpu")
    finally:
        sys.stdin = stdin
    fixtures = root / "benchmarks"
    write_fixtures(fixtures)
    stdlib_file = Path(os.__file__).with_name("bisect.py")  # file_ppl's held-out file (card 000's table)
    run_stage("eval", evaluate, preset=preset, out_dir=str(out), data_path=str(fixtures), limit=2,
              max_new_tokens=16, num_samples=1, syntax_samples=1, allow_code_execution=True, files=str(stdlib_file),
              device="cpu", dtype=loop["dtype"])
    print(f"\ndry run of {preset}: every stage ran in {time.time() - t0:.1f}s; outputs in {root}")
    return out


if __name__ == "__main__":
    configurator.configure(globals())
    main()
