"""
Samples from a trained checkpoint: completion, chat, or fill-in-the-middle, streamed as it is produced.

    python sample.py --out_dir=out/tiny --prompt="def fib(n):"
    python sample.py --out_dir=out/tiny --prompt=FILE:prompt.txt --num_samples=3 --temperature=0.8 --top_k=50
    echo "import os" | python sample.py --out_dir=out/tiny --prompt=-
    python sample.py --out_dir=out/parchment_166m_sft --chat=True --temperature=0 --repetition_penalty=1.1
    python sample.py --out_dir=out/pycraft_55m --fim_prefix="def add(a, b):\n" --fim_suffix="\n\nprint(add(1, 2))"
    python sample.py --out_dir=out/tiny --kv_cache=False    # the same tokens, slower: the cache changes nothing

From a notebook: `import sample; sample.configure(out_dir="out/tiny", prompt="def "); sample.main()`.
The checkpoint directory holds everything needed (weights, model config, tokenizer, chat template), loaded
with checkpoint.load_checkpoint (weights_only=True). Tokens/s is printed to stderr at the end.
"""

import codecs
import os
import re
import sys
import time

import torch

import configurator
import data
from configurator import UserError
from sft import checkpoint_template, render_prompt, stop_tokens, template_name
from checkpoint import load_checkpoint
from train import setup_device

# -----------------------------------------------------------------------------
# config

out_dir = "out"                 # the checkpoint directory
prompt = "\n"                   # text, FILE:path, or - for stdin
num_samples = 1
max_new_tokens = 256
temperature = 0.8               # 0 = greedy
top_k = 200                     # 0 = off
top_p = 1.0                     # nucleus; 1.0 = off
repetition_penalty = 1.0        # card 003 samples with 1.1 (CTRL's penalty)
stop = []                       # stop strings, e.g. --stop="['\n\n']"; the end-of-text token always stops
seed = 1337
kv_cache = True                 # False recomputes the whole context every token (for teaching and testing)
truncate = False                # a prompt longer than the context: keep its end (with a warning), not an error
chat = False                    # interactive chat in the checkpoint's template, one stdin line per user turn
chat_template = ""              # empty: the checkpoint's
system = ""                     # a system message for chat
fim_prefix = ""                 # fill in the middle (card 000, PSM order): the code before the hole
fim_suffix = ""                 # and after it
device = "auto"
dtype = "auto"

# -----------------------------------------------------------------------------
# text out of tokens


class TextStream:
    """Turns one row of token ids into text as they arrive: bytes of a character split across tokens wait
    for the rest (an incremental UTF-8 decoder), and text that may be the start of a stop string is held
    back until it is known not to be one."""

    def __init__(self, enc, stop_strings=(), stop_ids=()):
        self.enc, self.stop_strings, self.stop_ids = enc, [s for s in stop_strings if s], set(stop_ids)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending, self.text, self.done, self.n_tokens = "", "", False, 0

    def add(self, token):
        """Returns the text that is now final."""
        if self.done:
            return ""
        self.n_tokens += 1
        if token in self.stop_ids:
            return self.finish()
        if token >= self.enc.n_vocab:
            raise UserError(f"the model produced token id {token:,}, which its tokenizer {self.enc.name} "
                            f"({self.enc.n_vocab:,} ids) does not have: the checkpoint's vocab_size is larger than "
                            "its tokenizer; train with the tokenizer's vocab_size")
        self.pending += self.decoder.decode(self.enc.decode_single_token_bytes(token))
        hits = [i for i in (self.pending.find(s) for s in self.stop_strings) if i >= 0]
        if hits:
            self.pending = self.pending[:min(hits)]
            return self.finish()
        hold = max([n for s in self.stop_strings for n in range(1, len(s)) if self.pending.endswith(s[:n])] or [0])
        return self._emit(len(self.pending) - hold)

    def finish(self):
        self.pending += self.decoder.decode(b"", final=True)
        self.done = True
        return self._emit(len(self.pending))

    def _emit(self, n):
        out, self.pending = self.pending[:n], self.pending[n:]
        self.text += out
        return out


def generate_text(model, enc, idx, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                  stop_strings=(), stop_ids=(), use_cache=True, generator=None, on_text=None, ended=None, cancelled=None):
    """Completions of the rows of idx (B, T): (texts, tokens generated). on_text(str) streams row 0. A list passed
    as ended gets one bool per row: True where a stop string or token ended it, False where max_new_tokens (or the
    context) did. cancelled() is asked after every token, and True ends every row there (serve.py: the client left)."""
    streams = [TextStream(enc, stop_strings, stop_ids) for _ in range(idx.size(0))]
    steps = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p,
                           repetition_penalty=repetition_penalty, stop_tokens=list(stop_ids), use_cache=use_cache,
                           generator=generator)
    for next_ids in steps:  # (B,)
        for s, t in zip(streams, next_ids.tolist()):
            piece = s.add(t)
            if on_text and piece and s is streams[0]:
                on_text(piece)
        if all(s.done for s in streams):
            break  # every row hit a stop string or token
        if cancelled and cancelled():
            break
    if ended is not None:
        ended += [s.done for s in streams]
    for s in streams:
        piece = s.finish() if not s.done else ""
        if on_text and piece and s is streams[0]:
            on_text(piece)
    return [s.text for s in streams], sum(s.n_tokens for s in streams)


# -----------------------------------------------------------------------------
# prompts


def read_prompt(spec):
    if spec == "-":
        return sys.stdin.read()
    if spec.startswith("FILE:"):
        path = spec[len("FILE:"):]
        if not os.path.isfile(path):
            raise UserError(f"--prompt=FILE:{path}: no such file")
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except UnicodeDecodeError:
            raise UserError(f"--prompt=FILE:{path} is not UTF-8 text; convert it (iconv -t utf-8) first") from None
    return unescape(spec)


def fit_prompt(ids, block_size, max_new_tokens, truncate, what="prompt"):
    """A prompt must leave room for at least one new token; with truncate it keeps its most recent tokens, leaving
    room for max_new_tokens (at most half the context)."""
    room = max(1, min(max_new_tokens, block_size // 2))
    if len(ids) + 1 <= block_size:
        return ids
    if not truncate:
        raise UserError(f"the {what} is {len(ids)} tokens but the context is {block_size}; shorten it, or pass "
                        "--truncate=True to keep only its last tokens")
    print(f"warning: the {what} is {len(ids)} tokens; keeping its last {block_size - room} of a "
          f"{block_size}-token context", file=sys.stderr)
    return ids[-(block_size - room):]


def fim_ids(enc, prefix, suffix):
    """Card 000's infilling prompt, PSM order: <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>."""
    names = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
    missing = [n for n in names if data.special_id(enc, n) is None]
    if missing:
        raise UserError(f"this checkpoint's tokenizer has no {', '.join(missing)}: fill-in-the-middle needs a model "
                        "trained with FIM tokens (e.g. --preset=pycraft_55m, card 000)")
    p, s, m = (data.special_id(enc, n) for n in names)
    return [p] + enc.encode_ordinary(prefix) + [s] + enc.encode_ordinary(suffix) + [m]


# Python's string escapes; a non-ASCII character typed as itself is left alone (decoding the whole text with
# unicode_escape would read its UTF-8 bytes as latin-1 and mangle it)
ESCAPE = re.compile(r"""\\(?:[\\'"abfnrtv]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|N\{[^}]*\}|[0-7]{1,3})""")


def unescape(text):
    r"""--prompt="def f():\n" arrives with a literal backslash-n from most shells."""
    try:
        return ESCAPE.sub(lambda m: codecs.decode(m.group(0), "unicode_escape"), text)
    except UnicodeError:  # \N{...} with an unknown name, \U beyond U+10FFFF
        raise UserError(f"cannot read the escapes in {text!r}; check the \\N{{...}} names and \\U codes") from None

# -----------------------------------------------------------------------------
# the three modes


def chat_loop(model, enc, template, system, settings, ctx, generator, write):
    """Reads user lines until Ctrl-D and streams each answer (generate_text's settings); returns (tokens, seconds).
    The oldest exchanges are forgotten when the conversation outgrows the context."""
    max_new_tokens = settings["max_new_tokens"]
    stops, block = stop_tokens(template, enc), model.config.block_size
    messages = [{"role": "system", "content": system}] if system else []
    n_tokens, seconds = 0, 0.0
    print(f"chat in the '{template_name(template)}' template: type a message and press Enter; Ctrl-D or Ctrl-C quits", file=sys.stderr)
    while True:
        try:
            line = input("> " if sys.stdin.isatty() else "")
        except EOFError:
            break
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        ids = forget_oldest(template, messages, enc, block - max_new_tokens)
        if len(ids) >= block:
            print(f"error: this message is {len(ids)} tokens in the template; the context is {block}", file=sys.stderr)
            messages.pop()
            continue
        t0 = time.time()
        with ctx:
            idx = torch_tensor([ids], model)
            (reply,), n = generate_text(model, enc, idx, **settings, stop_ids=stops, generator=generator,
                                        on_text=write)
        seconds, n_tokens = seconds + time.time() - t0, n_tokens + n
        write("\n")
        messages.append({"role": "assistant", "content": reply})
    return n_tokens, seconds


def forget_oldest(template, messages, enc, room):
    """The ids of a chat prompt of at most `room` tokens where forgetting helps: its oldest exchanges (a user message
    and its answer, after any system message) are dropped from `messages` until it fits or one user message is left."""
    ids = render_prompt(template, messages, enc)
    first = 1 if messages[0]["role"] == "system" else 0
    while len(ids) > room and len(messages) - first > 1:
        del messages[first:first + 2]
        ids = render_prompt(template, messages, enc)
    return ids


def completion_ids(enc, text):
    """A completion's prompt: the document's opening marker, then the text; a special token the user typed counts
    as one (they may type <|endoftext|> on purpose)."""
    return data.start_ids(enc) + enc.encode(text, allowed_special="all")


def torch_tensor(rows, model):
    return torch.tensor(rows, dtype=torch.long, device=next(model.parameters()).device)


def configure(**overrides):
    """For notebooks: sample.configure(out_dir="out/tiny", prompt="def "), then sample.main()."""
    return configurator.configure(globals(), [], cumulative=True, **overrides)


def main():
    configurator.effective_config(globals())  # every value in range (configurator.RANGES), however it was set
    dev, _, ctx, _ = setup_device(device, dtype)
    model, enc, ckpt = load_checkpoint(out_dir, dev)
    generator = torch.Generator(device=dev).manual_seed(seed)

    def write(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    if chat:
        settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        repetition_penalty=repetition_penalty, stop_strings=stop, use_cache=kv_cache)
        try:
            n_tokens, seconds = chat_loop(model, enc, checkpoint_template(ckpt, chat_template), system, settings, ctx,
                                          generator, write)
        except KeyboardInterrupt:  # Ctrl-C at the prompt or while the model writes: leave, with no traceback
            write("\n")
            n_tokens = 0
    else:
        fim = bool(fim_prefix or fim_suffix)
        prefix, suffix = unescape(fim_prefix), unescape(fim_suffix)
        block = model.config.block_size
        if fim:  # cutting the front of an infilling prompt would cut its <|fim_prefix|>
            ids = fit_prompt(fim_ids(enc, prefix, suffix), block, max_new_tokens, False, "infilling prompt")
        else:
            ids = fit_prompt(completion_ids(enc, read_prompt(prompt)), block, max_new_tokens, truncate)
            if not ids:
                raise UserError(f"the prompt {prompt!r} is empty; give the model at least one character to continue")
        if kv_cache and len(ids) + max_new_tokens > block:  # the cache holds one context; without it the window slides
            print(f"note: only {block - len(ids)} new tokens fit after the prompt", file=sys.stderr)
        # the middle is shown in colour on a terminal; piped output is plain prefix + middle + suffix
        on, off = ("\033[1;32m", "\033[0m") if fim and sys.stdout.isatty() else ("", "")
        n_tokens, seconds = 0, 0.0
        for i in range(num_samples):
            write(prefix + on if fim else enc.decode(ids[len(data.start_ids(enc)):]))
            t0 = time.time()
            with ctx:
                _, n = generate_text(model, enc, torch_tensor([ids], model), max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_k=top_k, top_p=top_p,
                                     repetition_penalty=repetition_penalty, stop_strings=stop, stop_ids=data.end_ids(enc),
                                     use_cache=kv_cache, generator=generator, on_text=write)
            seconds, n_tokens = seconds + time.time() - t0, n_tokens + n
            write((off + suffix if fim else "") + "\n")
            if i < num_samples - 1:
                write("---------------\n")
    if n_tokens:
        print(f"{n_tokens} tokens in {seconds:.2f}s: {n_tokens / max(seconds, 1e-9):.1f} tokens/s "
              f"(kv_cache={kv_cache}, {dev})", file=sys.stderr)


if __name__ == "__main__":
    configurator.configure(globals())
    main()
