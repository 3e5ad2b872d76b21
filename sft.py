"""
Supervised fine-tuning: a pretrained checkpoint + conversations -> a chat model, through train.py's loop.

    python sft.py --preset=tiny                        # after `python train.py --preset=tiny`: embedded sets, CPU, minutes
    python sft.py --preset=tiny --show_example=True    # print one rendered conversation, trained tokens in ⟦ ⟧, and stop
    python sft.py --preset=parchment_166m              # card 003: dolly-15k (3 categories) + SimpleMath, 8 epochs
    python sft.py --preset=tiny --init_from=resume     # continue an interrupted run in out_dir
    python sft.py --preset=picochat_335m --midtrain_ratio=0.5 --init_from=out/picochat_335m \
        --out_dir=out/picochat_335m_mid --sft_data=smoltalk,mmlu_aux,gsm8k,identity,spelling   # card 004 midtraining
    torchrun --standalone --nproc_per_node=8 sft.py --preset=picochat_335m

A preset's `sft_learning_rate` (any `sft_KEY`) sets this script's `learning_rate`, so one recipe file holds
pretraining and fine-tuning. Data: `--sft_data=NAME[:N],PATH.jsonl,...` mixes named sources (downloaded and
cached, or generated here) and local JSONL files; N caps a source. Templates are in TEMPLATES below; each one
renders a conversation to token ids and a loss mask, and sample.py / eval.py call `render_prompt` and
`stop_tokens` so chat at inference matches training token for token.

Batches (our choice): one conversation per row, right-padded to the longest row of the batch (rounded up to 32
tokens so torch.compile sees few shapes), reshuffled each epoch, not bucketed by length (a batch of only long or
only short rows would make the loss scale drift with the order). Padding costs compute, never loss: padded and
prompt positions get the target -1. A conversation longer than the context keeps at most half a context of
prompt before its first answer token, then as much of the answer as fits; such rows are counted and reported.
"""

import ast
import glob
import json
import math
import os
import random
import re
import sys
import sysconfig
import time

import torch

from configurator import UserError, configure, print_config

# -----------------------------------------------------------------------------
# config (a preset's sft_KEY overrides KEY; see configurator.configure's prefix)

init_from = "out/tiny"     # a pretraining checkpoint dir, or "resume" to continue out_dir
out_dir = "out/tiny_sft"
chat_template = "user_assistant"  # alpaca | parchment | user_assistant | nanochat | magicoder
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
dropout = 0.0              # RECIPES.md card 000: dropout 0.1 in pretraining, 0 in SFT
eval_interval = 100
eval_iters = 20
log_interval = 10
always_save_checkpoint = True
grad_skip_factor = 0.0     # passed through to train.train's guard (0 = its default rule)
max_skips_in_row = 10
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
            yield from [(" " + answer, 1), (sp("<|endoftext|>"), 1)]


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
    # card 003: "{role}\n{content}<|endoftext|>\n" per message; the newline after a trained <|endoftext|> is
    # never generated (sampling stops at <|endoftext|>), so it is not trained
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
    try:
        return enc.encode_single_token(name)
    except KeyError:
        raise UserError(f"the tokenizer has no {name} token, which the '{template}' template needs; "
                        f"pick another --chat_template") from None


def check_messages(messages):
    """None when messages alternate user/assistant after an optional system message, else what is wrong."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    first = 1 if isinstance(messages[0], dict) and messages[0].get("role") == "system" else 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            return f"message {i} needs a string 'content'"
        want = "system" if i < first else ("user", "assistant")[(i - first) % 2]
        if m.get("role") != want:
            return f"message {i} has role {m.get('role')!r} where {want!r} belongs (an optional system, then user/assistant turns)"
    return None


def render_segments(template, messages, enc):
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
    """Ids of the conversation so far (ending with a user message) plus the generation prompt."""
    if not messages or messages[-1].get("role") != "user":
        raise UserError("a chat prompt must end with a user message")
    return render(template, messages, enc)[0]


def stop_tokens(template, enc):
    return [special(enc, name, template) for name in STOP.get(template, ["<|endoftext|>"])]


def pad_token(template, enc):
    name = PAD.get(template) or ("<|pad|>" if "<|pad|>" in enc.special_tokens_set else "<|endoftext|>")
    return special(enc, name, template)


def show(template, messages, enc):
    """The rendered text with trained tokens inside ⟦ ⟧ (what the loss sees)."""
    ids, mask = render(template, messages, enc)
    out, i = [], 0
    while i < len(ids):
        j = i
        while j < len(ids) and mask[j] == mask[i]:
            j += 1
        text = enc.decode(ids[i:j])
        out.append(f"⟦{text}⟧" if mask[i] else text)
        i = j
    return "".join(out)

# -----------------------------------------------------------------------------
# data sources: local JSONL, downloads (data.URLS), and sets generated on this machine

USER_KEYS = ("instruction", "problem", "question", "prompt")   # alpaca, magicoder, gsm8k, ...
INPUT_KEYS = ("input", "context")                              # alpaca, dolly
ANSWER_KEYS = ("output", "response", "solution", "answer", "completion")


def to_messages(row):
    """A conversation from one JSON row of a common shape, or (None, what is wrong)."""
    if not isinstance(row, dict):
        return None, "expected a JSON object"
    if "messages" in row:
        return row["messages"], check_messages(row["messages"])
    user = next((row[k] for k in USER_KEYS if isinstance(row.get(k), str)), None)
    answer = next((row[k] for k in ANSWER_KEYS if isinstance(row.get(k), str)), None)
    if user is None or answer is None:
        return None, (f"expected 'messages' or an instruction ({'/'.join(USER_KEYS)}) and an answer "
                      f"({'/'.join(ANSWER_KEYS)}), got keys {', '.join(sorted(row)) or 'none'}")
    inp = next((row[k] for k in INPUT_KEYS if isinstance(row.get(k), str) and row[k].strip()), "")
    return [{"role": "user", "content": user, "input": inp}, {"role": "assistant", "content": answer}], None


def read_rows(path):
    """(line number, row) of a .jsonl, .parquet (optional pyarrow) or .zip of JSONL files."""
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{path} is a parquet file, which needs pyarrow: pip install pyarrow") from None
        yield from enumerate(pq.read_table(path).to_pylist(), 1)
        return
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path} line {n}: not valid JSON ({e.msg}); fix or delete that line") from None


def read_conversations(path, keep=lambda row: True, convert=to_messages):
    """Conversations of a file; a malformed row is an error naming its line, filtered rows are counted."""
    convs, filtered = [], 0
    for n, row in read_rows(path):
        if not keep(row):
            filtered += 1
            continue
        messages, problem = convert(row)
        if problem:
            raise UserError(f"{path} line {n}: {problem}")
        if not messages[-1]["content"].strip():
            filtered += 1  # an empty answer teaches nothing; counted in the report
            continue
        convs.append(messages)
    return convs, filtered


def download(key):
    import data  # imported here: sft.py's templates need nothing from data.py
    if key not in data.URLS:
        raise UserError(f"data.URLS has no entry '{key}'")
    url = data.URLS[key]
    return str(data.download(url, os.path.join("data", "sft", url.split("/")[-1].split("?")[0]), desc=key))


def multiple_choice(question, choices, answer):
    """ARC / MMLU as a chat turn: the letters are the answer (nanochat's rendering, card 004)."""
    letters = "ABCDEFGH"[:len(choices)]
    lines = "\n".join(f"- {c}={l}" for l, c in zip(letters, choices))
    prompt = f"Multiple Choice question: {question}\n{lines}\n\nRespond only with the letter of the correct answer."
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], None


def arc_rows(path):
    import zipfile
    out = os.path.join(os.path.dirname(path), "arc")
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if re.search(r"ARC-(Easy|Challenge)-Train\.jsonl$", n)]
        z.extractall(out, names)
    convs, filtered = [], 0
    for name in sorted(names):  # card 004: ARC-Easy + ARC-Challenge train
        c, f = read_conversations(os.path.join(out, name), convert=lambda r: multiple_choice(
            r["question"]["stem"], [c["text"] for c in r["question"]["choices"]], r["answerKey"]))
        convs, filtered = convs + c, filtered + f
    return convs, filtered


def gsm8k_answer(row):
    # GSM8K's <<48/2=24>> calculator notes are tool calls in nanochat; we have no tool, so they go
    return to_messages({"question": row["question"], "answer": re.sub(r"<<[^>]*>>", "", row["answer"])})


DOLLY_CATEGORIES = ("closed_qa", "open_qa", "information_extraction")  # card 003
DOWNLOADED = {  # name: function() -> (conversations, filtered rows)
    "dolly_qa": lambda: read_conversations(download("dolly_cleaned"), lambda r: r.get("category") in DOLLY_CATEGORIES),
    "python_code_instructions_18k": lambda: read_conversations(download("python_code_instructions_18k")),
    "magicoder_python": lambda: read_conversations(download("magicoder_oss_instruct"),
                                                   lambda r: r.get("lang") == "python"),  # card 000
    "smoltalk": lambda: read_conversations(download("smoltalk")),
    "gsm8k": lambda: read_conversations(download("gsm8k_train"), convert=gsm8k_answer),
    "arc": lambda: arc_rows(download("arc")),
    "mmlu_aux": lambda: read_conversations(download("mmlu_aux"), convert=lambda r: multiple_choice(
        r["question"], list(r["choices"]), "ABCD"[r["answer"]])),
}


def simplemath(n, rng, hi=999):
    """Card 003's SimpleMath: the four operators balanced, exact answers. Subtraction keeps a >= b and
    division is built as a = b * q, so every answer is a non-negative integer and all numbers are <= hi."""
    convs = []
    for i in range(n):
        op = "+-*/"[i % 4]
        a, b = rng.randint(0, hi), rng.randint(0, hi)
        if op == "-":
            a, b = max(a, b), min(a, b)
        if op == "/":
            b = rng.randint(1, hi)
            a = b * rng.randint(0, hi // b)
        answer = {"+": a + b, "-": a - b, "*": a * b, "/": a // max(b, 1)}[op]
        convs.append([{"role": "user", "content": f"{a} {op} {b} ="}, {"role": "assistant", "content": str(answer)}])
    return convs


def word_list():
    """Words for the spelling tasks: the system dictionary when present, else the stdlib's docstrings."""
    if os.path.exists("/usr/share/dict/words"):
        with open("/usr/share/dict/words", encoding="utf-8", errors="ignore") as f:
            words = {w.strip() for w in f if re.fullmatch(r"[a-z]{3,12}", w.strip())}
    else:
        words = set()
        for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:60]:
            with open(path, encoding="utf-8", errors="ignore") as f:
                for doc in re.findall(r'"""(.*?)"""', f.read(), re.S):
                    words.update(re.findall(r"\b[a-z]{3,12}\b", doc))
    return sorted(words) or ["strawberry", "banana", "python", "language", "model", "letter", "spelling"]


COUNT_PHRASES = ["How many times does the letter '{l}' appear in '{w}'?", "How many {l}s are in the word {w}?",
                 "Count the letter {l} in {w}.", 'In "{w}", how many "{l}" are there?']


def spelling(n, rng):
    """Card 004: "Spell the word: w" -> "w:w,o,r,d", alternating with letter counting: an enumeration of the
    letters, then the count (a letter not in the word one time in four, so 0 is an answer too)."""
    words, convs = word_list(), []
    for i in range(n):
        w = rng.choice(words)
        if i % 2 == 0:
            q, a = f"Spell the word: {w}", f"{w}:{','.join(w)}"
        else:
            letter = rng.choice(w) if rng.random() < 0.75 else rng.choice("abcdefghijklmnopqrstuvwxyz")
            q = rng.choice(COUNT_PHRASES).format(l=letter, w=w)
            a = f"Spelling it out: {','.join(w)}. The letter '{letter}' appears {w.count(letter)} times."
        convs.append([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
    return convs


IDENTITY_QUESTIONS = ["Who are you?", "What is your name?", "Tell me about yourself.", "Hi! Who am I talking to?",
                      "What are you?", "Introduce yourself, please."]


def identity(n, rng, name, description):
    answers = [f"I am {name}, {description}.", f"My name is {name}. I am {description}.",
               f"Hello! I'm {name}, {description}."]
    return [[{"role": "user", "content": rng.choice(IDENTITY_QUESTIONS)},
             {"role": "assistant", "content": rng.choice(answers)}] for _ in range(n)]


def stdlib_functions(n, rng, max_chars=800):
    """Code instructions from this interpreter's standard library: a documented top-level function becomes
    "Write a function `name(args)` ..." (its docstring's first line) -> its source."""
    convs = []
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        with open(path, encoding="utf-8", errors="ignore") as f:
            src = f.read()
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue  # a test fixture that is not valid Python on purpose
        for node in tree.body:
            doc = isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and ast.get_docstring(node)
            code = ast.get_source_segment(src, node) if doc else None
            if code and len(code) <= max_chars:
                task = f"Write a function `{node.name}({ast.unparse(node.args)})` that does this: {doc.splitlines()[0]}"
                convs.append([{"role": "user", "content": task}, {"role": "assistant", "content": code}])
    rng.shuffle(convs)
    return convs[:n]


GENERATED = {  # name: (function(n, rng, cfg) -> conversations, default count)
    "simplemath": (lambda n, rng, c: simplemath(n, rng, c["simplemath_max"]), 10_000),  # card 003: 2,500 per op
    "spelling": (lambda n, rng, c: spelling(n, rng), 600),                                # card 004: 300 + 300
    "identity": (lambda n, rng, c: identity(n, rng, c["identity_name"], c["identity_description"]), 200),
    "stdlib_functions": (lambda n, rng, c: stdlib_functions(n, rng), 10_000),
}


def load_conversations(spec, cfg):
    """All conversations of `sft_data`, each source capped by its :N or max_examples; prints what was kept."""
    rng, convs = random.Random(cfg["seed"]), []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, cap = item.rpartition(":") if re.search(r":\d+$", item) else (item, "", "")
        limit = int(cap) if cap else cfg["max_examples"]
        filtered = 0
        if name in GENERATED:
            make, default = GENERATED[name]
            got = make(limit or default, rng, cfg)
        elif name in DOWNLOADED:
            got, filtered = DOWNLOADED[name]()
        elif os.path.exists(name):
            got, filtered = read_conversations(name)
        else:
            raise UserError(f"sft_data '{name}' is neither a file nor a source; sources: "
                            f"{', '.join(list(GENERATED) + list(DOWNLOADED))}")
        kept = got[:limit] if limit else got
        print(f"sft_data {name}: {len(kept):,} conversations (filtered {filtered:,}, over the cap {len(got) - len(kept):,})")
        convs += kept
    return convs

# -----------------------------------------------------------------------------
# batching: the data.Loader interface (next_batch, state_dict, load_state_dict) over rendered conversations


def fit_context(ids, mask, n):
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
        y = torch.full((len(rows), T), -1, dtype=torch.long)
        for i, (ids, mask) in enumerate(rows):
            ids_t, mask_t = torch.tensor(ids), torch.tensor(mask, dtype=torch.bool)
            x[i, :len(ids) - 1] = ids_t[:-1]
            y[i, :len(ids) - 1] = torch.where(mask_t[1:], ids_t[1:], -1)  # a target is trained iff its token is
        return x.to(self.device), y.to(self.device)

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, sd):
        self.epoch, self.pos = sd["epoch"], sd["pos"]
        self.order = self._order()


class MidtrainLoader:
    """Card 004 midtraining: rows of packed conversations (every token trained, like pretraining text) next
    to rows from the pretraining bins (data.Loader), in a fixed ratio per batch."""

    def __init__(self, examples, n_chat, block_size, device, pretrain=None, rank=0, world_size=1):
        self.stream = torch.tensor([t for ids, _ in examples for t in ids], dtype=torch.long)
        if len(self.stream) <= block_size * world_size:
            raise UserError(f"midtraining needs more than {block_size * world_size} tokens of conversations; add sft_data")
        self.n_chat, self.block_size, self.device, self.pretrain = n_chat, block_size, device, pretrain
        self.rank, self.world_size, self.pos = rank, world_size, 0

    def next_batch(self):
        rows, T = [], self.block_size
        for _ in range(self.n_chat):
            if self.pos + (self.rank + 1) * T + 1 > len(self.stream):
                self.pos = 0
            start = self.pos + self.rank * T  # each rank its own window
            rows.append(self.stream[start:start + T + 1])
            self.pos += self.world_size * T
        chat = torch.stack(rows) if rows else torch.empty(0, self.block_size + 1, dtype=torch.long)
        x, y = chat[:, :-1].to(self.device), chat[:, 1:].to(self.device)
        if self.pretrain is not None:
            px, py = self.pretrain.next_batch()
            x, y = torch.cat([x, px]), torch.cat([y, py])
        return x, y

    def state_dict(self):
        return {"pos": self.pos, "pretrain": self.pretrain.state_dict() if self.pretrain else None}

    def load_state_dict(self, sd):
        self.pos = sd["pos"]
        if self.pretrain is not None:
            self.pretrain.load_state_dict(sd["pretrain"])
