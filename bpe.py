"""
Byte-level BPE: the textbook trainer, then a fast one that gives the same merges; its Hugging Face form.

    import bpe
    enc = bpe.train_bpe(texts, vocab_size=4096, special_tokens=["<|endoftext|>"])   # a tiktoken Encoding
    enc.encode_ordinary("def f(x): return x")

Read train_bpe_naive first: it is BPE as the papers state it, a page of code. count_chunks and train_bpe
compute the same merges (tests/test_data.py checks both against it, and against rustbpe, nanochat's trainer)
in seconds on a corpus. data.py trains with it (--tokenizer=bpe), then saves, loads and applies tokenizers.
The last section reads a Hugging Face byte-level BPE (tokenizer.json) as tiktoken ranks, and back.
"""

import collections
import gc
import heapq
import multiprocessing
import os
import re
import sys
import time
import unicodedata

import regex
import tiktoken

from configurator import UserError

# GPT-4's split (tiktoken cl100k_base): contractions, words with one leading non-letter, numbers of up to 3
# digits, punctuation runs, newlines, other whitespace. nanochat (card 004) groups digits by at most 2.
GPT4_SPLIT = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
GPT4_DIGITS2_SPLIT = GPT4_SPLIT.replace(r"\p{N}{1,3}+", r"\p{N}{1,2}+")
SPLIT_PATTERNS = {"gpt4": GPT4_SPLIT, "gpt4_digits2": GPT4_DIGITS2_SPLIT}
# GPT-2's split, what a Hugging Face ByteLevel pre-tokenizer with use_regex=true applies
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def split_pattern(name):
    """The regex of a split_pattern setting's name (configurator.CHOICES: gpt4, gpt4_digits2)."""
    return SPLIT_PATTERNS[name]


def get_stats(chunks):
    """How often each adjacent pair of ids occurs in the chunks (lists of ids): a Counter {(a, b): count}."""
    return collections.Counter(pair for ids in chunks for pair in zip(ids, ids[1:]))


def merge(ids, pair, new_id):
    """ids with every non-overlapping occurrence of pair, left to right, replaced by new_id."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe_naive(texts, n_merges, pattern=GPT4_SPLIT):
    r"""The textbook BPE trainer (Sennrich et al. 2016 on bytes, as GPT-2 and minbpe): (vocab, merges).

    Cut each text into chunks with the split pattern (a merge never crosses a chunk), start every chunk as its
    bytes (ids 0..255), then repeat: count all adjacent pairs, give the most frequent pair the next id, replace
    it everywhere. Ties go to the lowest (left id, right id); a pair whose bytes are already a token is skipped.

        >>> vocab, merges = train_bpe_naive(["aaabdaaabac"], 3, pattern=r"\S+")   # Wikipedia's example
        >>> merges   # aa (4 times: overlapping pairs count), then ab and aa+a tie at 2: the lower pair wins
        [(97, 97, 256), (97, 98, 257), (256, 257, 258)]
        >>> [vocab[new_id] for _, _, new_id in merges]
        [b'aa', b'ab', b'aaab']

    Every step recounts everything: fine for a page of text, far too slow for a corpus. train_bpe below gives
    the same merges (tests/test_data.py checks it) by counting each distinct chunk once and updating only the
    pairs beside each merge."""
    chunks = [list(c.encode()) for t in texts for c in regex.findall(pattern, t)]
    vocab = [bytes([b]) for b in range(256)]
    merges = []
    while len(merges) < n_merges:
        stats = get_stats(chunks)
        candidates = [(-count, pair) for pair, count in stats.items() if vocab[pair[0]] + vocab[pair[1]] not in vocab]
        if not candidates:
            break
        _, pair = min(candidates)
        new_id = len(vocab)
        vocab.append(vocab[pair[0]] + vocab[pair[1]])
        merges.append((*pair, new_id))
        chunks = [merge(ids, pair, new_id) for ids in chunks]
    return vocab, merges


# Splitting with the pattern is most of the counting's time, and most of a corpus repeats words seen
# before. For these patterns no chunk crosses a space that is followed by a non-space, and none looks behind its
# start, so a text cut before each such space splits into the same chunks piece by piece: the pieces (about a word
# each) are counted and only the distinct ones split. tests/test_data.py checks this against splitting whole texts.
CUT = re.compile(r" (?=\S)")  # re's \S is a little narrower than regex's: it only cuts less
CUTTABLE = {GPT2_SPLIT, GPT4_SPLIT, GPT4_DIGITS2_SPLIT}


def count_chunks(texts, pattern, max_pieces=200_000):
    """How often each pre-split chunk occurs in texts: a Counter {chunk: count}. The distinct pieces are split
    whenever there are max_pieces of them, which bounds the memory (on 200 MB of text, 7% more splitting)."""
    split = regex.compile(pattern)
    counts = collections.Counter()
    if pattern not in CUTTABLE:
        for text in texts:
            counts.update(split.findall(text))
        return counts
    middles = collections.Counter()  # pieces between two cuts, without the " " in front
    ends = collections.Counter()  # (piece, whether it was cut after) at the start and end of each text

    def add(text, n, cut_after):
        # a piece's last chunks depend on what follows it (a space run leaves its last space to the next word;
        # "\s++$" matches only at the end), so a piece that was cut after is split with " x" after it, and that
        # chunk dropped
        chunks = split.findall(text + " x")[:-1] if cut_after else split.findall(text)
        for chunk, k in collections.Counter(chunks).items():
            counts[chunk] += k * n

    def add_pieces():
        # the middle pieces seen n times can follow one another, so they are split as one text, 10,000 at a time:
        # a call per distinct piece took as long as the cutting and counting together
        alike = collections.defaultdict(list)
        for piece, n in middles.items():
            alike[n].append(piece)
        for n, group in alike.items():
            for k in range(0, len(group), 10_000):
                add(" " + " ".join(group[k:k + 10_000]), n, cut_after=True)
        for (piece, cut_after), n in ends.items():
            add(piece, n, cut_after)
        middles.clear()
        ends.clear()

    for text in texts:
        first, *rest = CUT.split(text)  # the cut takes the space: each later piece had a " " in front
        if rest:
            ends[first, True] += 1
            middles.update(rest[:-1])
            ends[" " + rest[-1], False] += 1
        else:
            ends[first, False] += 1
        if len(middles) > max_pieces:
            add_pieces()
    add_pieces()
    return counts


def _send_chunk_counts(texts, pattern, conn):
    conn.send(count_chunks(texts, pattern))
    conn.close()


def count_chunks_parallel(texts, pattern, num_proc=0):
    """count_chunks over num_proc shards of the documents at once, the Counters merged. Counting was 65-73% of
    train_bpe's time on one core. The shards are forked, so the children share the parent's texts
    instead of receiving a pickled copy; where fork is missing (Windows) it counts in this process."""
    texts = list(texts)
    n = min(num_proc or os.cpu_count() or 1, len(texts))
    if n <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return count_chunks(texts, pattern)
    ctx = multiprocessing.get_context("fork")
    shards = [texts[i::n] for i in range(n)]  # every n-th document: shards of similar size in any corpus order
    children = []
    for shard in shards[1:]:
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_send_chunk_counts, args=(shard, pattern, send), daemon=True)
        child.start()
        send.close()
        children.append((child, receive))
    counts = count_chunks(shards[0], pattern)  # this process counts the first shard meanwhile
    for child, receive in children:
        try:
            counts.update(receive.recv())
        except EOFError:
            child.join()
            raise RuntimeError(f"a chunk-counting process died (exit code {child.exitcode}); out of memory? "
                               "try num_proc=1") from None
        child.join()
    return counts


def train_bpe(texts, vocab_size, special_tokens=(), pattern=GPT4_SPLIT, verbose=True, name=None, num_proc=0):
    """Byte-level BPE: ids 0..255 are the bytes, then the merges, then the special tokens. The same merges as
    train_bpe_naive above (read that one first), computed incrementally so that a corpus takes seconds.

    The pre-split chunks are counted in num_proc processes (0 = all cores). Pairs are counted over the unique
    chunks (weighted by their counts), and after each merge only the chunks holding the merged pair are rewritten,
    found through an index pair -> chunks. The best pair is the most frequent; ties go to the lowest (left id,
    right id). A pair whose bytes already form a token is skipped: a tiktoken rank file maps each byte string to
    one id.

    A chunk is kept as a str whose characters are its token ids (chr(id)) and a pair as a 2-character str: a merge
    is then str.replace, which merges left to right without overlaps as BPE does, in C. Comparing 2-character
    strs compares (left id, right id). Looping over token lists in Python is about 3x slower.
    """
    pattern = SPLIT_PATTERNS.get(pattern, pattern)
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise UserError(f"vocab_size={vocab_size} is too small: it must hold 256 bytes + {len(special_tokens)} special tokens")
    t0 = time.time()
    chunk_counts = count_chunks_parallel(texts, pattern, num_proc)
    words = [c.encode("utf-8").decode("latin-1") for c in chunk_counts]  # latin-1: byte b -> chr(b)
    counts = list(chunk_counts.values())
    del chunk_counts
    stats = collections.defaultdict(int)  # pair -> occurrences in the corpus
    where = collections.defaultdict(list)  # pair -> indices of the words that may hold it (lists: a third of sets' memory)
    for i, (w, c) in enumerate(zip(words, counts)):
        for pair in map(str.__add__, w, w[1:]):  # w[k] + w[k + 1] for each k
            stats[pair] += c
            where[pair].append(i)
    if verbose:
        print(f"bpe: {sum(counts):,} chunks, {len(words):,} unique, {len(stats):,} pairs ({time.time() - t0:.1f}s)")
    # the index's lists hold no cycles, and the collector's passes over them take ~20% of the merges' time
    gc.freeze()
    heap = [(-c, pair) for pair, c in stats.items()]
    heapq.heapify(heap)
    vocab = [bytes([i]) for i in range(256)]
    known = set(vocab)
    last_print = time.time()
    while len(vocab) < 256 + n_merges and heap:
        neg, pair = heapq.heappop(heap)
        count = stats.get(pair, 0)
        if count != -neg:  # stale entry: a pair of old tokens only loses occurrences, so re-push its true count
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        a, b = pair
        merged = vocab[ord(a)] + vocab[ord(b)]
        del stats[pair]
        if merged in known:
            continue
        z = chr(len(vocab))
        vocab.append(merged)
        known.add(merged)
        # every z in a rewritten word is one merge, and only the pairs beside it change: L a -> L z, b R -> z R,
        # and between two merges b a -> z z. Tally the tokens beside z first, then move their counts once each.
        before, after = collections.defaultdict(int), collections.defaultdict(int)  # token -> occurrences beside z
        for i in set(where.pop(pair)):
            if pair not in words[i]:
                continue  # the index is not pruned: this word lost the pair in an earlier merge
            word = words[i] = words[i].replace(pair, z)
            c = counts[i]
            k = word.find(z)
            while k >= 0:
                if k > 0:
                    before[word[k - 1]] += c
                    where[word[k - 1] + z].append(i)
                if k + 1 < len(word) and word[k + 1] != z:
                    after[word[k + 1]] += c
                    where[z + word[k + 1]].append(i)
                k = word.find(z, k + 1)
        for left, c in before.items():
            stats[(b if left == z else left) + a] -= c
            stats[left + z] += c
            heapq.heappush(heap, (-stats[left + z], left + z))
        for right, c in after.items():
            stats[b + right] -= c
            stats[z + right] += c
            heapq.heappush(heap, (-stats[z + right], z + right))
        stats.pop(pair, None)
        if verbose and (time.time() - last_print > 5 or len(vocab) == 256 + n_merges):
            last_print = time.time()
            print(f"bpe: merge {len(vocab) - 256:,}/{n_merges:,} count {count:,} token {merged!r} ({time.time() - t0:.0f}s)")
    gc.unfreeze()
    if len(vocab) < 256 + n_merges:
        raise UserError(f"the training text allows only {len(vocab) - 256} merges, fewer than vocab_size={vocab_size} needs; "
                        "add text (tokenizer_train_chars, max_chars) or lower vocab_size")
    specials = {tok: len(vocab) + k for k, tok in enumerate(special_tokens)}
    return tiktoken.Encoding(name=name or f"bpe{vocab_size}", pat_str=pattern,
                             mergeable_ranks={tok: i for i, tok in enumerate(vocab)}, special_tokens=specials)


# -----------------------------------------------------------------------------
# The Hugging Face form of a byte-level BPE: tokenizer.json <-> tiktoken ranks with the same ids
# (data.load_tokenizer reads one, export.py writes one)

def bytes_to_unicode():
    """GPT-2's map from the 256 bytes to printable characters, used by byte-level BPE vocab strings."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


class NormalizedEncoding(tiktoken.Encoding):
    """A tiktoken Encoding that first applies a Unicode normal form to the text, as a tokenizer.json's normalizer
    does in `tokenizers` (Qwen2 and Qwen3 ship NFC): "e" + U+0301 is then encoded as "é". Batches go through
    these two methods too (tiktoken's *_batch call them)."""

    def __init__(self, normal_form, **kwargs):
        super().__init__(**kwargs)
        self.normal_form = normal_form

    def encode_ordinary(self, text):
        return super().encode_ordinary(unicodedata.normalize(self.normal_form, text))

    def encode(self, text, **kwargs):
        return super().encode(unicodedata.normalize(self.normal_form, text), **kwargs)


# An added token as `tokenizers` writes a special one (export.py writes ours so): matched as written, skipped by
# decode(skip_special_tokens=True). Published tokenizers differ per token (Qwen3's <think> is special: false, GPT-2's
# <|endoftext|> normalized: true), and transformers acts on each flag, so an Encoding keeps the ones that differ.
ADDED_TOKEN_FLAGS = {"special": True, "normalized": False, "lstrip": False, "rstrip": False, "single_word": False}


def make_encoding(name, pat_str, mergeable_ranks, special_tokens, normalizer=None, markers=None, added_tokens=None):
    """A tiktoken Encoding that carries what a Hugging Face tokenizer holds beyond its ranks: the normalizer (a
    Unicode normal form), the document markers ({"bos_token", "eos_token", "add_bos"}, as its tokenizer_config.json
    and post-processor state them; data.document_markers reads them) and the flags of added tokens that differ
    from ADDED_TOKEN_FLAGS ({content: flags}). data.save_tokenizer keeps them, data.tokenizer_hash counts them."""
    settings = dict(name=name, pat_str=pat_str, mergeable_ranks=mergeable_ranks, special_tokens=special_tokens)
    enc = NormalizedEncoding(normalizer, **settings) if normalizer else tiktoken.Encoding(**settings)
    enc.markers = {k: v for k, v in (markers or {}).items() if v is not None or k != "add_bos"}
    enc.added_tokens = {t: dict(f) for t, f in (added_tokens or {}).items() if t in special_tokens}
    return enc


def hf_markers(info, config):
    """The document markers a Hugging Face tokenizer states: bos_token and eos_token from tokenizer_config.json
    (what lm-eval and transformers call them), and whether a text opens with bos. That is the post-processor's
    template (Llama 3 prepends <|begin_of_text|>): transformers' fast tokenizers apply it and ignore
    tokenizer_config.json's add_bos_token, which counts only where no template says."""
    token = lambda t: t.get("content") if isinstance(t, dict) else t  # noqa: E731  (an AddedToken is written as a dict)
    markers = {k: token(config[k]) for k in ("bos_token", "eos_token") if k in (config or {})}
    post = info.get("post_processor") or {}
    template = next((p for p in post.get("processors", [post]) if p.get("type") == "TemplateProcessing"), None)
    if template is not None:
        first = (template.get("single") or [{}])[0]
        opens = first.get("SpecialToken", {}).get("id")
        markers["add_bos"] = opens is not None
        if opens is not None:
            markers.setdefault("bos_token", opens)
    elif isinstance((config or {}).get("add_bos_token"), bool):
        markers["add_bos"] = config["add_bos_token"]
    return markers


def encoding_from_hf(info, name, config=None):
    """Byte-level BPE tokenizer.json (and its tokenizer_config.json, a dict) -> tiktoken ranks with the same ids;
    added tokens become specials. The normalizer, the document markers and the added tokens' flags come along."""
    model = info.get("model") or {}
    normalizer = (info.get("normalizer") or {}).get("type")
    if model.get("type") != "BPE" or normalizer not in (None, "NFC", "NFKC", "NFD", "NFKD"):
        raise UserError(f"{name}: only byte-level BPE tokenizers (with no normalizer, or a Unicode normal form) can be "
                        f"converted to tiktoken; this one is {model.get('type')} with normalizer {normalizer}")
    added = info.get("added_tokens", [])
    specials = {t["content"]: t["id"] for t in added}
    flags = {t["content"]: {k: bool(t.get(k, v)) for k, v in ADDED_TOKEN_FLAGS.items()} for t in added}
    # each character of the byte map to its byte, any other to U+0100, which latin-1 cannot encode (str.translate
    # and encode run in C: a third of a 150k-token vocabulary's load went to a Python loop per character)
    to_byte = {**dict.fromkeys(range(0x144), 0x100), **{ord(c): b for b, c in bytes_to_unicode().items()}}
    ranks = {}
    for text, i in model["vocab"].items():
        if text not in specials:
            try:
                ranks[text.translate(to_byte).encode("latin-1")] = i
            except UnicodeEncodeError:
                raise UserError(f"{name}: token {text!r} is not byte-level (GPT-2 byte map); cannot convert") from None
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise UserError(f"{name}: {len(missing)} of the 256 single bytes have no token; cannot convert to tiktoken")
    if merges_differ(model, ranks):
        print(f"warning: {name}: its merges are not in the order of the ids they make; a few rare words may "
              "tokenize differently", file=sys.stderr)
    return make_encoding(name, hf_split_pattern(info.get("pre_tokenizer"), name), ranks, specials, normalizer,
                         hf_markers(info, config),
                         {t: f for t, f in flags.items() if f != ADDED_TOKEN_FLAGS})


INF = float("inf")  # the rank of a pair that is no token


def merge_pair(ranks, token):
    """The two tokens tiktoken joins last when it encodes `token` alone, or None if it never forms it.

    tiktoken merges the adjacent pair whose concatenation has the lowest rank (the leftmost on ties). Inside any
    text, the bytes of a token are merged exactly as when the token is encoded alone (a merge across its edge
    would have changed the edge), so this one pair per token is every merge tiktoken ever makes: listed in rank
    order they are a `tokenizers` BPE that encodes like tiktoken. Only the ranks beside a merge are looked up
    again, and min() finds the next one: a 150k-token vocabulary takes seconds."""
    parts = [token[i:i + 1] for i in range(len(token))]
    rank = [ranks.get(a + b, INF) for a, b in zip(parts, parts[1:])]  # rank[i]: of parts[i] + parts[i + 1]
    while len(parts) > 2:
        low = min(rank)
        if low == INF:
            return None  # only reachable as a whole pre-token (export.py writes ignore_merges for those)
        i = rank.index(low)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
        del rank[i]
        if i > 0:
            rank[i - 1] = ranks.get(parts[i - 1] + parts[i], INF)
        if i < len(parts) - 1:
            rank[i] = ranks.get(parts[i] + parts[i + 1], INF)
    return parts[0], parts[1]


def merges_differ(model, ranks):
    """Whether `tokenizers` can encode a word otherwise than tiktoken does with the vocabulary's ids as ranks.

    tiktoken merges, at each step, the adjacent pair whose joined token has the lowest rank; `tokenizers` the pair
    listed first among the merges. They agree while the tokens the merges make never fall in rank along the list.
    Runs of merges that make one token do not count: transformers' TikTokenConverter (Llama 3's tokenizer.json)
    lists every split of a token, and tiktoken forms a token from one pair only (merge_pair), which is among them.
    The other difference is a token that no merge makes. tiktoken takes a word that is that token whole, as
    `tokenizers` does under ignore_merges; but tiktoken also makes it inside a longer word wherever merge_pair
    finds its pair, and `tokenizers` never does."""
    vocab = model["vocab"]
    made, last = set(), -1
    for m in model.get("merges", []):
        i = vocab.get(m.replace(" ", "", 1) if isinstance(m, str) else m[0] + m[1])
        if i is None or i < last:
            return True
        made.add(i)
        last = i
    unmade = [t for t, i in ranks.items() if len(t) > 1 and i not in made]
    if not model.get("ignore_merges"):
        return bool(unmade)
    return any(merge_pair(ranks, t) is not None for t in unmade)


# Oniguruma, the regex engine of HF tokenizers, reads tiktoken's possessive X{1,3}+ as (X{1,3})+ (any count):
# a tokenizer.json writes it as the atomic group (?>X{1,3}), which matches the same; reading it back restores
# tiktoken's spelling so the split pattern, and so the tokenizer hash, survive the round trip (export.py)
_ATOM = r"(\\p\{\w+\}|\\.|\[(?:\\.|[^\]\\])*\]|[^\\()\[\]{}])"


def to_onig(pattern):
    return regex.sub(_ATOM + r"\{(\d+(?:,\d*)?)\}\+", r"(?>\1{\2})", pattern)


def from_onig(pattern):
    return regex.sub(r"\(\?>" + _ATOM + r"\{(\d+(?:,\d*)?)\}\)", r"\1{\2}+", pattern)


def hf_split_pattern(pre, name):
    """The regex that matches what the pre-tokenizer does (ByteLevel, Split, Digits + ByteLevel)."""
    parts = (pre or {}).get("pretokenizers", [pre] if pre else [])
    kinds = [p["type"] for p in parts]
    byte_level = next((p for p in parts if p["type"] == "ByteLevel"), None)
    if byte_level is None or byte_level.get("add_prefix_space"):
        raise UserError(f"{name}: needs a ByteLevel pre-tokenizer without add_prefix_space to convert to tiktoken")
    if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
        return GPT2_SPLIT
    if kinds == ["Split", "ByteLevel"] and not byte_level.get("use_regex", True):
        split = parts[0]
        if split.get("behavior") == "Isolated" and not split.get("invert") and "Regex" in split["pattern"]:
            return from_onig(split["pattern"]["Regex"])
    if kinds == ["Digits", "ByteLevel"] and byte_level.get("use_regex", True):  # StarCoder's tokenizers
        # digits are cut out first, so numbers never take a leading space and whitespace stops before them
        digits = r"\p{N}" if parts[0].get("individual_digits") else r"\p{N}+"
        return (GPT2_SPLIT.replace(r" ?\p{N}+", digits).replace(r"\s+(?!\S)", r"\s+(?![^\s\p{N}])"))
    raise UserError(f"{name}: pre-tokenizer {kinds} is not supported for conversion to tiktoken")
