"""
Supervised fine-tuning: a pretrained checkpoint + conversations -> a chat model, through train.py's loop.

    python sft.py --preset=tiny                        # after `python train.py --preset=tiny`: embedded sets, CPU, minutes
    python sft.py --preset=tiny --show_example=True    # print one rendered conversation, trained tokens in ⟦ ⟧, and stop
    python sft.py --preset=parchment_166m              # card 003: dolly-15k (3 categories) + SimpleMath, 8 epochs
    python sft.py --preset=tiny --init_from=resume     # continue an interrupted run in out_dir
    python sft.py --preset=picochat_335m --midtrain_ratio=0.5 --init_from=out/picochat_335m \
        --out_dir=out/picochat_335m_mid --sft_data=smoltalk,mmlu_aux,gsm8k,identity,spelling --max_iters=4000   # card 004 midtraining
    torchrun --standalone --nproc_per_node=8 sft.py --preset=picochat_335m

From a notebook: `import sft; sft.configure(preset="tiny", max_iters=50); sft.main()`.

A preset's `sft_learning_rate` (any `sft_KEY`) sets this script's `learning_rate`, so one recipe file holds
pretraining and fine-tuning. Data: `--sft_data=NAME[:N],PATH.jsonl,...` mixes named sources (downloaded and
cached, or generated here) and local JSONL files; N caps a source. Templates are in TEMPLATES below; each one
renders a conversation to token ids and a loss mask, and sample.py / eval.py call `render_prompt` and
`stop_tokens` so chat at inference matches training token for token. The single-turn templates (alpaca,
user_assistant, magicoder) render a longer conversation as its user/assistant pairs in sequence, each answer
closed by its end token; every template but parchment merges a system message into the first user message.
Without --chat_template a model imported with --init_from=hf: keeps its own template (tokenizer_config.json's Jinja,
rendered with jinja2 as transformers renders it; the loss on each answer and the special token that closes it).

Batches (our choice): one conversation per row, right-padded to the longest row of the batch (rounded up to 32
tokens so torch.compile sees few shapes), reshuffled each epoch, not bucketed by length (a batch of only long or
only short rows would make the loss scale drift with the order). Padding costs compute, never loss: padded and
prompt positions get the target -1. A conversation longer than the context keeps at most half a context of
prompt before its first answer token, then as much of the answer as fits; such rows are counted and reported.
"""

import ast
import glob
import itertools
import math
import os
import random
import re
import sysconfig
import zipfile

import torch

import checkpoint
import configurator
import data
import files
import hf
import train
from configurator import UserError, print_config
from model import IGNORE_INDEX

# -----------------------------------------------------------------------------
# config (a preset's sft_KEY overrides KEY; see configurator.configure's prefix)

init_from = "out/tiny"     # a pretraining checkpoint dir, hf:PATH_OR_REPO (export.py), or "resume" to continue out_dir
out_dir = "out/tiny_sft"
chat_template = ""         # alpaca | parchment | user_assistant | nanochat | magicoder; "" = the base model's own (an
                           # imported model's tokenizer_config.json Jinja template, needs jinja2), else user_assistant
sft_data = "stdlib_functions,simplemath"  # comma-separated named sources or .jsonl paths, each NAME[:N]
max_examples = 0           # cap on each source's conversations (0 = all; card 000: 40,000 Magicoder rows)
val_fraction = 0.02        # held-out conversations for the val loss
show_example = False       # print one rendered conversation with the trained tokens marked, then exit
# generated sets
simplemath_max = 999       # operands of SimpleMath in 0..simplemath_max (card 003: reliable up to 2-3 digits)
identity_name = "Tiny"
identity_description = "a small language model trained from scratch on the Python standard library"
# midtraining (card 004): conversations packed with pretraining data, every token trained
midtrain_ratio = 0.0       # fraction of each batch's rows taken from conversations; 0 = masked SFT
pretrain_data = ""         # data dir of the pretraining bins; "" = data/<dataset> of the base checkpoint
# loop (handed to train.train)
epochs = 0                 # > 0 sets max_iters from the data size (card 003: 8, card 001: 3)
max_iters = 300
batch_size = 16
gradient_accumulation_steps = 1
learning_rate = 1e-4       # cosine to min_lr (cards 000, 003)
min_lr = 1e-5
warmup_iters = 20
warmup_frac = 0.0          # > 0 overrides warmup_iters (card 003: 5%)
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.95
adam_eps = 1e-8
grad_clip = 1.0
dropout = 0.0              # card 000: dropout 0.1 in pretraining, 0 in SFT
eval_interval = 100
eval_iters = 20
log_interval = 10
always_save_checkpoint = True
grad_skip_factor = 10.0    # train.py's guard: skip a step whose grad norm is 10x the recent median
grad_skip_window = 50
max_skips_in_row = 20
activation_checkpointing = False  # card 000: how SFT fits a 4 GB GPU too
device = "auto"
dtype = "auto"
compile = False
seed = 1337

# -----------------------------------------------------------------------------
# templates: messages -> (token ids, loss mask)

ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
PARCHMENT_SYSTEM = "You are a helpful assistant"  # card 003: the system message added when none is given


def user_text(msg):
    """A user message's text; dolly's context and alpaca's input follow after a blank line (card 003)."""
    return msg["content"] + ("\n\n" + msg["input"] if msg.get("input") else "")


def _alpaca(system, turns, sp):
    # single-turn template: each user/assistant pair is a full Alpaca block, blocks follow each other
    for user, answer in turns:
        head = ALPACA_INPUT if user.get("input") else ALPACA_NO_INPUT
        yield head.format(instruction=user["content"], input=user.get("input")), 0
        if answer is not None:
            yield from [(answer, 1), (sp("<|endoftext|>"), 1)]


def _user_assistant(system, turns, sp):
    # card 002's "User: ...\nAssistant:"; its fix: the EOS after each answer is a trained target
    for user, answer in turns:
        yield f"User: {user_text(user)}\nAssistant:", 0
        if answer is not None:
            # one space after "Assistant:"; a reply read back from sample.py already starts with it
            yield from [(" " + answer.removeprefix(" "), 1), (sp("<|endoftext|>"), 1)]


def _magicoder(system, turns, sp):
    # card 000: "# Task: <problem, first 400 chars>" + blank line, then the solution and end-of-text
    for user, answer in turns:
        yield f"# Task: {user_text(user)[:400]}\n\n", 0
        if answer is not None:
            yield from [(answer, 1), (sp("<|endoftext|>"), 1)]


def _nanochat(system, turns, sp):
    # card 004: role tokens from our own BPE; trained = assistant content + <|assistant_end|>
    yield sp("<|bos|>"), 0
    for user, answer in turns:
        yield from [(sp("<|user_start|>"), 0), (user_text(user), 0), (sp("<|user_end|>"), 0),
                    (sp("<|assistant_start|>"), 0)]
        if answer is not None:
            yield from [(answer, 1), (sp("<|assistant_end|>"), 1)]


def _parchment(system, turns, sp):
    # card 003: "{role}\n{content}<|endoftext|>\n" per message. Every answer is trained (the card trains what
    # follows the last "assistant\n"; its data is single-turn, so the two agree) but not the newline after
    # <|endoftext|>: sampling stops at <|endoftext|>, so the newline is never generated
    yield f"system\n{system or PARCHMENT_SYSTEM}", 0
    yield from [(sp("<|endoftext|>"), 0), ("\n", 0)]
    for user, answer in turns:
        yield from [(f"user\n{user_text(user)}", 0), (sp("<|endoftext|>"), 0), ("\n", 0), ("assistant\n", 0)]
        if answer is not None:
            yield from [(answer, 1), (sp("<|endoftext|>"), 1), ("\n", 0)]


TEMPLATES = {"alpaca": _alpaca, "parchment": _parchment, "user_assistant": _user_assistant,
             "nanochat": _nanochat, "magicoder": _magicoder}
STOP = {"nanochat": ["<|assistant_end|>", "<|bos|>"]}      # the others stop at <|endoftext|>
PAD = {"parchment": "<|endofprompt|>", "nanochat": "<|assistant_end|>"}  # card 003 / nanochat's choice


def special(enc, name, template):
    return data.special_id(enc, name, f"the '{template}' template (or pick another --chat_template)")


def template_name(template):
    """A model's own Jinja template (hf.hf_chat_template, of a model imported with --init_from=hf:) is the plain
    dict {"jinja", "bos_token", "eos_token"} wherever a named template is its name; hf.chat_segments renders it."""
    return template if isinstance(template, str) else "model's own (Jinja)"


def check_messages(messages):
    """None when messages alternate user/assistant after an optional system message, else what is wrong."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    first = 1 if isinstance(messages[0], dict) and messages[0].get("role") == "system" else 0
    if len(messages) == first:
        return "there is no user message"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            return f"message {i} needs a string 'content'"
        want = "system" if i < first else ("user", "assistant")[(i - first) % 2]
        if m.get("role") != want:
            return f"message {i} has role {m.get('role')!r} where {want!r} belongs (an optional system, then user/assistant turns)"
    return None


def render_segments(template, messages, enc):
    if isinstance(template, dict):
        problem = check_messages(messages)
        if problem:
            raise UserError(f"cannot render the conversation: {problem}")
        messages = [{**m, "content": user_text(m)} if m["role"] == "user" else m for m in messages]
        return hf.chat_segments(template, messages, enc)
    if template not in TEMPLATES:
        raise UserError(f"unknown chat template '{template}'; choose one of {', '.join(TEMPLATES)}")
    problem = check_messages(messages)
    if problem:
        raise UserError(f"cannot render the conversation: {problem}")
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    rest = messages[1:] if system is not None else messages
    turns = [(rest[i], rest[i + 1]["content"] if i + 1 < len(rest) else None) for i in range(0, len(rest), 2)]
    if system is not None and template != "parchment":  # one rule for templates without a system role (card 004)
        turns[0] = ({**turns[0][0], "content": system + "\n\n" + turns[0][0]["content"]}, turns[0][1])
    return TEMPLATES[template](system, turns, lambda name: special(enc, name, template))


def render(template, messages, enc):
    """(ids, mask) of a conversation; mask 1 marks the trained tokens (assistant text and its end token)."""
    ids, mask = [], []
    for piece, trained in render_segments(template, messages, enc):
        # encode_ordinary: "<|endoftext|>" typed inside a message stays text, never a control token
        toks = [piece] if isinstance(piece, int) else enc.encode_ordinary(piece)
        ids += toks
        mask += [trained] * len(toks)
    return ids, mask


def render_prompt(template, messages, enc):
    """Ids of the conversation so far (ending with a user message) plus the generation prompt. The same ids as
    Hugging Face's apply_chat_template but for whitespace and a message that spells a special token: that
    stays text here, so a user cannot end a turn by typing "<|im_end|>"."""
    if not messages or messages[-1].get("role") != "user":
        raise UserError("a chat prompt must end with a user message")
    return render(template, messages, enc)[0]


def checkpoint_template(ckpt, override=""):
    """The template chat with a checkpoint uses: the override, else the one it was fine-tuned with."""
    template = override or ckpt.get("chat_template") or ""
    if not template:
        raise UserError("this checkpoint has no chat template: fine-tune it with sft.py, or pass --chat_template=NAME")
    if isinstance(template, dict) and isinstance(template.get("jinja"), str):
        return template
    if template not in TEMPLATES:
        raise UserError(f"unknown chat template '{template}'; choose one of {', '.join(TEMPLATES)}")
    return template


def stop_tokens(template, enc):
    if isinstance(template, dict):  # the special token that closes an answer (<|im_end|>, <|eot_id|>), and eos
        ids, mask = render(template, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], enc)
        stops = [t for t, m in zip(ids, mask) if m and t in enc._special_tokens.values()][:1]
        eos = template.get("eos_token")
        stops += [enc.encode_single_token(eos)] if eos in enc.special_tokens_set and eos not in [enc.decode([t]) for t in stops] else []
        if not stops:
            raise UserError("the model's chat template ends an answer with no special token, so sampling could not "
                            f"stop; pass --chat_template=NAME (one of {', '.join(TEMPLATES)})")
        return stops
    return [special(enc, name, template) for name in STOP.get(template, ["<|endoftext|>"])]


def pad_token(template, enc):
    if isinstance(template, dict):
        return stop_tokens(template, enc)[0]
    name = PAD.get(template) or ("<|pad|>" if "<|pad|>" in enc.special_tokens_set else "<|endoftext|>")
    return special(enc, name, template)


def show(template, messages, enc):
    """The rendered text with the trained tokens inside ⟦ ⟧: what the loss sees."""
    ids, mask = render(template, messages, enc)
    runs = itertools.groupby(zip(ids, mask), key=lambda pair: pair[1])
    return "".join(f"⟦{text}⟧" if m else text for m, run in runs for text in [enc.decode([t for t, _ in run])])

# -----------------------------------------------------------------------------
# data sources: local JSONL, downloads (files.URLS), and sets generated on this machine

USER_KEYS = ("instruction", "problem", "question", "prompt")   # alpaca, dolly, magicoder, gsm8k
INPUT_KEYS = ("input", "context")                              # alpaca, dolly (card 003: after a blank line)
ANSWER_KEYS = ("output", "response", "solution", "answer", "completion")


def chat(user, answer, **user_fields):
    return [{"role": "user", "content": user, **user_fields}, {"role": "assistant", "content": answer}]


def to_messages(row):
    """(conversation, None) from one JSON row of a common shape, or (None, what is wrong with it)."""
    if not isinstance(row, dict):
        return None, "expected a JSON object"
    if "messages" in row:
        problem = check_messages(row["messages"])
        if not problem and row["messages"][-1]["role"] != "assistant":
            problem = "the last message must be the assistant's answer"
        return row["messages"], problem
    user = next((row[k] for k in USER_KEYS if isinstance(row.get(k), str)), None)
    answer = next((row[k] for k in ANSWER_KEYS if isinstance(row.get(k), str)), None)
    if user is None or answer is None:
        return None, (f"expected 'messages' or an instruction ({'/'.join(USER_KEYS)}) and an answer "
                      f"({'/'.join(ANSWER_KEYS)}); got keys {', '.join(sorted(row)) or 'none'}")
    return chat(user, answer, input=next((row[k] for k in INPUT_KEYS if isinstance(row.get(k), str)), "")), None


def read_rows(path):
    """(line number, row) of a JSONL file, or of a parquet file (optional pyarrow)."""
    if str(path).endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{path} is a parquet file, which needs pyarrow: pip install pyarrow") from None
        yield from enumerate(pq.read_table(path).to_pylist(), 1)
        return
    yield from files.read_jsonl(path)


def read_conversations(path, keep=lambda row: True, convert=to_messages):
    """(conversations, rows filtered out) of a file; a malformed row is an error that names its line."""
    convs, filtered = [], 0
    for n, row in read_rows(path):
        try:
            messages, problem = convert(row) if keep(row) else (None, None)
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            messages, problem = None, f"missing or malformed field ({type(e).__name__}: {e})"
        if problem:
            raise UserError(f"{path} line {n}: {problem}")
        if messages is None or not messages[-1]["content"].strip():
            filtered += 1  # another category or language, or an empty answer: counted, reported
            continue
        convs.append(messages)
    return convs, filtered


def fetch_source(key):
    """A download named in files.URLS (the one place for real URLs), cached under CACHE_DIR/sft."""
    return files.fetch(key, files.CACHE_DIR / "sft", local="pass a local copy: --sft_data=PATH.jsonl (or a generated set: "
                      + ", ".join(GENERATED) + ")")


def multiple_choice(question, choices, answer):
    """ARC / MMLU as a chat turn whose answer is a letter (nanochat's rendering, card 004)."""
    lines = "\n".join(f"- {c}={letter}" for letter, c in zip("ABCDEFGH", choices))
    return chat(f"Multiple Choice question: {question}\n{lines}\n\nRespond only with the letter of the correct answer.",
                answer), None


def arc():
    path, convs, filtered = fetch_source("arc"), [], 0
    with zipfile.ZipFile(path) as z:  # card 004: ARC-Easy + ARC-Challenge, train splits
        names = sorted(n for n in z.namelist() if re.search(r"ARC-(Easy|Challenge)-Train\.jsonl$", n))
        z.extractall(path.parent / "arc", names)
    for name in names:
        got, dropped = read_conversations(path.parent / "arc" / name, convert=lambda r: multiple_choice(
            r["question"]["stem"], [choice["text"] for choice in r["question"]["choices"]], r["answerKey"]))
        convs, filtered = convs + got, filtered + dropped
    return convs, filtered


DOLLY_CATEGORIES = ("closed_qa", "open_qa", "information_extraction")  # card 003
DOWNLOADED = {  # name: function() -> (conversations, rows filtered out)
    "dolly_qa": lambda: read_conversations(fetch_source("dolly_15k_cleaned"), lambda r: r.get("category") in DOLLY_CATEGORIES),
    "python_code_instructions_18k": lambda: read_conversations(fetch_source("python_code_instructions_18k")),  # card 001
    "magicoder_python": lambda: read_conversations(fetch_source("magicoder_oss_75k"), lambda r: r.get("lang") == "python"),
    "smoltalk": lambda: read_conversations(fetch_source("smoltalk")),
    # GSM8K's <<48/2=24>> calculator notes are tool calls in nanochat; without a tool they are dropped
    "gsm8k": lambda: read_conversations(fetch_source("gsm8k_train"), convert=lambda r: (
        chat(r["question"], re.sub(r"<<[^>]*>>", "", r["answer"])), None)),
    "arc": arc,
    "mmlu_aux": lambda: read_conversations(fetch_source("mmlu_aux"), convert=lambda r: multiple_choice(
        r["question"], list(r["choices"]), "ABCD"[r["answer"]])),
}


def simplemath(n, rng, hi=999):
    """Card 003's SimpleMath, "47 + 83 =" -> "130": the four operators in turn, exact answers. Subtraction
    puts the larger operand first and division is built as (b * q) / b, so every answer is a whole number >= 0
    and every operand lies in 0..hi."""
    convs = []
    for i in range(n):
        op, a, b = "+-*/"[i % 4], rng.randint(0, hi), rng.randint(0, hi)
        if op == "-":
            a, b = max(a, b), min(a, b)
        elif op == "/":
            b = rng.randint(1, max(hi, 1))
            a = b * rng.randint(0, hi // b)
        convs.append(chat(f"{a} {op} {b} =", str({"+": a + b, "-": a - b, "*": a * b, "/": a // max(b, 1)}[op])))
    return convs


def word_list():
    """Offline words: the system dictionary when there is one, else the words of stdlib docstrings."""
    if os.path.exists("/usr/share/dict/words"):
        with open("/usr/share/dict/words", encoding="utf-8", errors="ignore") as f:
            return sorted({w.strip() for w in f if re.fullmatch(r"[a-z]{3,12}", w.strip())})
    words = set()
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:60]:
        with open(path, encoding="utf-8", errors="ignore") as f:
            for doc in re.findall(r'"""(.*?)"""', f.read(), re.S):
                words.update(re.findall(r"\b[a-z]{3,12}\b", doc))
    return sorted(words) or ["strawberry", "banana", "python", "letter"]


COUNT_PHRASES = ["How many times does the letter '{l}' appear in '{w}'?", "How many {l}s are in the word {w}?",
                 "Count the letter {l} in {w}.", 'In "{w}", how many "{l}" are there?']


def spelling(n, rng):
    """Card 004: "Spell the word: w" -> "w:w,o,r,d", alternating with letter counting in varied phrasings,
    answered by enumerating the letters, then the count (one letter in four is not in the word: 0 happens)."""
    words, convs = word_list(), []
    for i in range(n):
        w = rng.choice(words)
        if i % 2 == 0:
            convs.append(chat(f"Spell the word: {w}", f"{w}:{','.join(w)}"))
            continue
        letter = rng.choice(w) if rng.random() < 0.75 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        convs.append(chat(rng.choice(COUNT_PHRASES).format(l=letter, w=w),
                          f"Spelling it out: {','.join(w)}. The letter '{letter}' appears {w.count(letter)} times."))
    return convs


IDENTITY_QUESTIONS = ["Who are you?", "What is your name?", "Tell me about yourself.", "Hi! Who am I talking to?",
                      "What are you?", "Introduce yourself, please."]


def identity(n, rng, name, description):
    """Card 004's identity conversations, from the preset's identity_name and identity_description."""
    answers = [f"I am {name}, {description}.", f"My name is {name}. I am {description}.", f"Hello! I'm {name}, {description}."]
    return [chat(rng.choice(IDENTITY_QUESTIONS), rng.choice(answers)) for _ in range(n)]


def stdlib_functions(n, rng, max_chars=800):
    """Code instructions from this interpreter's standard library: each documented public top-level function
    becomes "Write a function `name(args)` that does this: <first docstring line>" -> its source."""
    convs = []
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        with open(path, encoding="utf-8", errors="ignore") as f:
            src = f.read()
        try:
            tree, lines = ast.parse(src), src.splitlines(keepends=True)
        except SyntaxError:
            continue  # the stdlib ships a few files that are invalid on purpose (test fixtures)
        for node in tree.body:
            doc = isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and ast.get_docstring(node)
            code = "".join(lines[node.lineno - 1:node.end_lineno]) if doc else ""  # decorators left out
            if code and len(code) <= max_chars:
                sig = f"{node.name}({ast.unparse(node.args)})"
                convs.append(chat(f"Write a function `{sig}` that does this: {doc.splitlines()[0]}", code))
    rng.shuffle(convs)
    return convs[:n]


GENERATED = {  # name: (function(n, rng, cfg) -> conversations, default count)
    "simplemath": (lambda n, rng, c: simplemath(n, rng, c["simplemath_max"]), 10_000),  # card 003: 2,500 per op
    "spelling": (lambda n, rng, c: spelling(n, rng), 600),                                # card 004: 300 + 300
    "identity": (lambda n, rng, c: identity(n, rng, c["identity_name"], c["identity_description"]), 200),
    "stdlib_functions": (lambda n, rng, c: stdlib_functions(n, rng), 10_000),             # all of them (~500)
}


def load_conversations(spec, cfg):
    """Every conversation of sft_data, each source capped by its :N or max_examples; reports what was kept."""
    rng, convs = random.Random(cfg["seed"]), []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, cap = item.rsplit(":", 1) if re.search(r":\d+$", item) else (item, "")
        limit, filtered = int(cap) if cap else cfg["max_examples"], 0
        if cap and limit < 1:
            raise UserError(f"sft_data '{item}' asks for no conversations; give N >= 1, or leave {name} out")
        if name in GENERATED:
            make, default = GENERATED[name]
            got = make(limit or default, rng, cfg)
        elif name in DOWNLOADED:
            got, filtered = DOWNLOADED[name]()
        elif os.path.isfile(name):
            got, filtered = read_conversations(name)
        else:
            raise UserError(f"sft_data '{name}' is neither a file nor a source ({', '.join([*GENERATED, *DOWNLOADED])})")
        kept = got[:limit] if limit else got
        print(f"sft_data {name}: {len(kept):,} conversations ({filtered:,} rows filtered out, "
              f"{len(got) - len(kept):,} over the cap)")
        convs += kept
    return convs

# -----------------------------------------------------------------------------
# batching: the data.Loader interface (next_batch, state_dict, load_state_dict) over rendered conversations


def fit_conversation(ids, mask, n):
    """Cuts a rendered conversation to n tokens keeping the start of its first answer; (ids, mask, cut?)."""
    if len(ids) <= n:
        return ids, mask, False
    start = max(0, min(mask.index(1) - n // 2, len(ids) - n))  # at most half a context of prompt
    return ids[start:start + n], mask[start:start + n], True


class ConversationLoader:
    """Padded batches, one conversation per row; targets are -1 on prompt and padding (response-only loss)."""

    def __init__(self, examples, batch_size, pad_id, device, seed=1337, shuffle=True, rank=0, world_size=1):
        self.examples, self.batch_size, self.pad_id, self.device = examples, batch_size, pad_id, device
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        self.max_T = max(len(ids) for ids, _ in examples) - 1  # never pad past the longest row (<= context)
        self.epoch, self.pos = 0, 0
        self.order = self._order()

    def _order(self):
        order = list(range(len(self.examples)))
        if self.shuffle:  # a permutation per epoch, so (epoch, pos) is the whole state
            random.Random(self.seed + self.epoch).shuffle(order)
        return order

    def next_batch(self):
        rows = []
        for _ in range(self.batch_size):
            if self.pos + self.world_size > len(self.order):
                self.epoch, self.pos = self.epoch + 1, 0
                self.order = self._order()
            rows.append(self.examples[self.order[self.pos + self.rank]])  # each rank its own rows
            self.pos += self.world_size
        T = max(len(ids) for ids, _ in rows) - 1
        T = min(32 * math.ceil(T / 32), self.max_T)
        x = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        y = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, mask) in enumerate(rows):
            ids_t, mask_t = torch.tensor(ids), torch.tensor(mask, dtype=torch.bool)
            x[i, :len(ids) - 1] = ids_t[:-1]
            y[i, :len(ids) - 1] = torch.where(mask_t[1:], ids_t[1:], IGNORE_INDEX)  # trained iff its token is
        return x.to(self.device), y.to(self.device)

    def fingerprint(self):
        return [len(self.examples), sum(len(ids) for ids, _ in self.examples)]

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.pos, "data": self.fingerprint()}

    def load_state_dict(self, sd):
        if sd["data"] != self.fingerprint():
            raise UserError("the checkpoint's data position belongs to other conversations; resume with the "
                            "same --sft_data, --max_examples and --val_fraction")
        self.epoch, self.pos = sd["epoch"], sd["pos"]
        self.order = self._order()


class MidtrainLoader:
    """Card 004 midtraining: rows of packed conversations (every token trained, like pretraining text) next
    to rows from the pretraining bins (data.Loader), in a fixed ratio per batch."""

    def __init__(self, examples, n_chat, block_size, device, pretrain=None, rank=0, world_size=1):
        stream = torch.tensor([t for ids, _ in examples for t in ids], dtype=torch.long)
        need = (block_size + 1) * world_size  # a small val split is repeated until one window per rank fits
        self.stream = stream.repeat(math.ceil((need + 1) / len(stream)))
        self.n_chat, self.block_size, self.device, self.pretrain = n_chat, block_size, device, pretrain
        self.rank, self.world_size, self.pos = rank, world_size, 0

    def next_batch(self):
        rows, T = [], self.block_size
        for _ in range(self.n_chat):
            if self.pos + (self.rank + 1) * T + 1 > len(self.stream):
                self.pos = 0
            start = self.pos + self.rank * T  # each rank its own windows
            rows.append(self.stream[start:start + T + 1])
            self.pos += self.world_size * T
        chat = torch.stack(rows)                                                  # (n_chat, T + 1)
        x, y = chat[:, :-1].to(self.device), chat[:, 1:].to(self.device)
        if self.pretrain is not None:
            px, py = self.pretrain.next_batch()
            x, y = torch.cat([x, px]), torch.cat([y, py])                         # (batch_size, T)
        return x, y

    def state_dict(self):
        return {"pos": self.pos, "pretrain": self.pretrain.state_dict() if self.pretrain else None}

    def load_state_dict(self, sd):
        self.pos = sd["pos"]
        if self.pretrain is not None:
            self.pretrain.load_state_dict(sd["pretrain"])

# -----------------------------------------------------------------------------
# main


def configure(**overrides):
    """For notebooks: sft.configure(preset="tiny", max_iters=50), then sft.main(); as on the command line, the
    preset's sft_KEY sets KEY."""
    return configurator.configure(globals(), [], prefix="sft_", cumulative=True, **overrides)


def main(argv=None):
    """Fine-tunes with the current config (configure() or `__main__` set it; argv, a list, also may)."""
    cfg = (configurator.configure(globals(), argv, prefix="sft_") if argv is not None
           else configurator.effective_config(globals()))
    if cfg["chat_template"] and cfg["chat_template"] not in TEMPLATES:
        raise UserError(f"unknown chat template '{cfg['chat_template']}'; choose one of {', '.join(TEMPLATES)}")
    if not 0 < cfg["val_fraction"] < 1:
        raise UserError(f"val_fraction={cfg['val_fraction']} must lie between 0 and 1: a share of the conversations "
                        "held out")
    if cfg["midtrain_ratio"] > 0 and cfg["epochs"] > 0:
        raise UserError("midtraining (midtrain_ratio > 0) counts max_iters, not epochs: set --epochs=0")
    if cfg["init_from"] != "resume" and os.path.abspath(cfg["init_from"]) == os.path.abspath(cfg["out_dir"]):
        raise UserError(f"out_dir {cfg['out_dir']} is the base checkpoint's directory; give the fine-tuned model its own")
    source = cfg["out_dir"] if cfg["init_from"] == "resume" else cfg["init_from"]
    if not source.startswith("hf:") and not os.path.exists(source):
        raise UserError(f"no checkpoint at {source}; pretrain first (python train.py) or set --init_from")
    system = train.setup(cfg)
    rank, world_size, dev = system.rank, system.world_size, system.device
    convs = load_conversations(cfg["sft_data"], cfg)  # before the model: a bad data line fails fast
    if len(convs) < 2 * world_size:
        raise UserError(f"sft_data gave {len(convs)} conversations; each process needs a train and a val one")
    if source.startswith("hf:"):  # a Hugging Face folder or hub repo (hf.py)
        model, enc, ckpt = hf.load_hf(source[3:], dev, dropout=cfg["dropout"])
    else:
        model, enc, ckpt = checkpoint.load_checkpoint(source, dev, dropout=cfg["dropout"])  # card 000: dropout 0 in SFT
    if cfg["init_from"] == "resume" and cfg["chat_template"] and ckpt.get("chat_template") != cfg["chat_template"]:
        raise UserError(f"{cfg['out_dir']} was fine-tuned with the '{template_name(ckpt.get('chat_template'))}' "
                        f"template, not '{cfg['chat_template']}'")
    # the one named, else the base model's own (an imported model's, or the one it was fine-tuned with)
    template = cfg["chat_template"] or ckpt.get("chat_template") or "user_assistant"
    if cfg["show_example"]:
        print(show(template, convs[0], enc))
        return None

    block = model.config.block_size
    random.Random(cfg["seed"]).shuffle(convs)
    n_val = max(world_size, round(cfg["val_fraction"] * len(convs)))  # every rank needs a val row
    if len(convs) - n_val < world_size:
        raise UserError(f"{len(convs)} conversations leave no training ones after {n_val} for val; "
                        "add data or lower val_fraction")
    examples, cut = {"val": [], "train": []}, 0
    for i, conv in enumerate(convs):
        ids, mask, was_cut = fit_conversation(*render(template, conv, enc), block + 1)
        examples["val" if i < n_val else "train"].append((ids, mask))
        cut += was_cut
    n_tok = sum(len(ids) for ids, _ in examples["train"])
    n_trained = sum(sum(mask) for _, mask in examples["train"])
    print(f"{len(examples['train']):,} train / {n_val:,} val conversations, {n_tok:,} train tokens "
          f"({n_trained / n_tok:.0%} trained), {cut:,} cut to the {block}-token context")

    bins = ""
    if cfg["midtrain_ratio"] > 0:
        base = ckpt.get("config") or {}  # default bins: the base run's dataset (the first part of a mixture)
        if not (cfg["pretrain_data"] or base.get("pretrain_data") or base.get("dataset")):
            raise UserError(f"{source} names no pretraining data to mix in (a model from outside this project); "
                            "pass --pretrain_data=data/NAME, bins prepared with its tokenizer")
        bins = cfg["pretrain_data"] or base.get("pretrain_data") or str(
            data.dataset_sources(base["dataset"], base.get("data_dir", "data"))[0][1])
        n_chat, loaders = max(1, round(cfg["midtrain_ratio"] * cfg["batch_size"])), {}
        for split in examples:
            bin_loader = data.Loader(bins, split, cfg["batch_size"] - n_chat, block, seed=cfg["seed"], rank=rank,
                                     world_size=world_size, device=dev) if n_chat < cfg["batch_size"] else None
            if bin_loader:
                data.check_meta(bin_loader.meta, model.config.vocab_size, data.tokenizer_hash(enc), enc.name, tok_dir=source,
                                use=f"--pretrain_data=NEW/{os.path.basename(os.path.normpath(bins))}")
            loaders[split] = MidtrainLoader(examples[split], n_chat, block, dev, bin_loader, rank, world_size)
    else:
        pad = pad_token(template, enc)
        loaders = {split: ConversationLoader(examples[split], cfg["batch_size"], pad, dev, cfg["seed"], split == "train",
                                             rank, world_size) for split in examples}
    iters = cfg["max_iters"]
    if cfg["epochs"] > 0:  # passes over the training conversations (cards 001, 003)
        rows_per_step = cfg["batch_size"] * cfg["gradient_accumulation_steps"] * world_size
        iters = math.ceil(cfg["epochs"] * len(examples["train"]) / rows_per_step)
    base_cfg = ckpt.get("config", {})  # the pretraining data this model descends from, for eval.py's val_ppl
    run = {**cfg, "dataset": base_cfg.get("dataset", ""), "data_dir": base_cfg.get("data_dir", "data"),
           "block_size": block, "max_iters": iters, "lr_decay_iters": iters, "lr_schedule": "cosine",
           "warmup_iters": round(cfg["warmup_frac"] * iters) if cfg["warmup_frac"] > 0 else cfg["warmup_iters"],
           "warmdown_frac": 0.0, "eval_only": False, "sample_prompt": "", "pretrain_data": bins}
    if rank == 0:
        print_config(run)
    return train.train(run, model, enc, loaders, extra_ckpt={"chat_template": template},
                       resume=ckpt if cfg["init_from"] == "resume" else None, system=system)


if __name__ == "__main__":
    configurator.configure(globals(), prefix="sft_")
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C before the loop began (preparing data, loading): nothing to save yet
        raise SystemExit(130)
