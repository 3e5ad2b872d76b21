"""The published models' real vocabularies, kept whole through every script: Llama 3's (Llama 3.2 shares it) and
Qwen2's (Qwen2.5 and Qwen3 share it), with their normalizers, document markers and added tokens' flags.

Both ship offline inside PyPI packages (requirements-test.txt installs them with --no-deps): llama-models has
Meta's `llama_models/llama3/tokenizer.model` (128,000 tiktoken ranks) and the reference tokenizer beside it,
dashscope has Qwen's `dashscope/resources/qwen.tiktoken` (151,643 ranks). Their tokenizer.json files are built here
as the published ones were: Llama 3's by transformers' TikTokenConverter (every split of a token a merge,
ignore_merges) with Meta's split pattern, special tokens and a post-processor that opens a text with
<|begin_of_text|>; Qwen's with one merge per token, the Split + ByteLevel pre-tokenizer, NFC, and the added tokens
of Qwen2.5 and Qwen3 at their published ids and flags. `tokenizers` and transformers are the reference; a test
that needs a vocabulary skips, saying which package to install, where it is absent.

The whole path on a toy model with each vocabulary (data -> train -> sft -> sample -> eval -> export) is marked
benchmark: loading a 150k-token vocabulary takes a second, and each script loads it
    python -m pytest -m benchmark -s tests/test_real_tokenizers.py
"""

import ast
import importlib.util
import json
import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import tiktoken.load
import torch

import bpe
import configurator
import data
import eval as ev
import export
import hf
import sft
from configurator import UserError

tokenizers = pytest.importorskip("tokenizers", reason="the reference tokenizer: pip install -r requirements-test.txt")
transformers = pytest.importorskip("transformers", reason="the reference converter: pip install -r requirements-test.txt")


def package_file(package, *parts):
    """A file an installed package ships, found without importing the package (dashscope's __init__ needs its
    network client, which --no-deps leaves out)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} ships the vocabulary: pip install --no-deps {package.replace('_', '-')} "
                    "(requirements-test.txt)")
    return Path(spec.submodule_search_locations[0], *parts)

# -----------------------------------------------------------------------------
# the published tokenizers, built from the real vocabularies

# Qwen2.5's added tokens (content, special) from 151,643 on; Qwen3 adds four, its <think> tokens not special
QWEN25_ADDED = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
                ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
                ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
                ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
                ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
                ("<|repo_name|>", False), ("<|file_sep|>", False)]
QWEN3_ADDED = QWEN25_ADDED + [("<tool_response>", False), ("</tool_response>", False), ("<think>", False),
                              ("</think>", False)]

QWEN25_CHAT = (  # Qwen2.5-Instruct's tokenizer_config.json chat_template
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided "
    "with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == "
    "\"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n")

LLAMA32_CHAT = (  # Llama-3.2-1B-Instruct's tokenizer_config.json chat_template
    "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n"
    "{%- if not date_string is defined %}\n    {%- if strftime_now is defined %}\n"
    "        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n    {%- else %}\n"
    "        {%- set date_string = \"26 Jul 2024\" %}\n    {%- endif %}\n{%- endif %}\n"
    "{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n"
    "{#- System message #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond with JSON for a "
    "function call.\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its "
    "value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif %}\n"
    "{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n"
    "{#- Custom tools are passed in a user message with some extra guidance #}\n"
    "{%- if tools_in_user_message and not tools is none %}\n"
    "    {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | length != 0 %}\n"
    "        {%- set first_user_message = messages[0]['content']|trim %}\n        {%- set messages = messages[1:] %}\n"
    "    {%- else %}\n        {{- raise_exception(\"Cannot put tools in the first user message when there's no first "
    "user message!\") }}\n{%- endif %}\n    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    "    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n"
    "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its "
    "value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n"
    "    {{- first_user_message + \"<|eot_id|>\"}}\n{%- endif %}\n\n{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
    "'<|eot_id|>' }}\n    {%- elif 'tool_calls' in message %}\n        {%- if not message.tool_calls|length == 1 %}\n"
    "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n        {%- endif %}\n"
    "        {%- set tool_call = message.tool_calls[0].function %}\n"
    "        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "        {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n        {{- '\"parameters\": ' }}\n"
    "        {{- tool_call.arguments | tojson }}\n        {{- \"}\" }}\n        {{- \"<|eot_id|>\" }}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n"
    "        {%- endif %}\n        {{- \"<|eot_id|>\" }}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n")


def byte_text(token, chars={}):
    """A token's bytes in the GPT-2 byte map that byte-level tokenizer.json files use (transformers' own)."""
    if not chars:
        from transformers.convert_slow_tokenizer import bytes_to_unicode
        chars.update(bytes_to_unicode())
    return "".join(map(chars.__getitem__, token))


def qwen_split():
    """Qwen's split pattern, read from the tokenizer dashscope ships (its module is not imported: see package_file)."""
    source = package_file("dashscope", "tokenizers", "qwen_tokenizer.py").read_text()
    return next(ast.literal_eval(node.value) for node in ast.parse(source).body
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PAT_STR")


def build_llama3(folder):
    """Llama 3's tokenizer.json and tokenizer_config.json (Llama 3.2 base's: eos <|end_of_text|>)."""
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import TikTokenConverter
    path = package_file("llama_models", "llama3", "tokenizer.model")
    from llama_models.llama3.tokenizer import Tokenizer as Meta
    specials = Meta(path).special_tokens  # {token: id}, 128000-128255, in id order
    tok = TikTokenConverter(vocab_file=str(path), pattern=Meta.pat_str, extra_special_tokens=list(specials)).converted()
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
        special_tokens=[("<|begin_of_text|>", specials["<|begin_of_text|>"])])])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
        "add_bos_token": True, "clean_up_tokenization_spaces": True, "model_max_length": 131072,
        "chat_template": LLAMA32_CHAT}))
    return folder


def build_qwen(folder, added, eos, chat_template=None):
    """Qwen2's byte-level BPE (one merge per token, tiktoken's own: bpe.merge_pair, checked below against
    tiktoken on the rank file itself) with NFC, its split, and the given added tokens from 151,643 on."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    ranks = tiktoken.load.load_tiktoken_bpe(str(package_file("dashscope", "resources", "qwen.tiktoken")))
    merges = [tuple(map(byte_text, bpe.merge_pair(ranks, t)))
              for t, _ in sorted(ranks.items(), key=lambda kv: kv[1]) if len(t) > 1]
    tok = Tokenizer(models.BPE(vocab={byte_text(t): r for t, r in ranks.items()}, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(qwen_split()), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    for content, special in added:  # one at a time: each takes the next id
        (tok.add_special_tokens if special else tok.add_tokens)([AddedToken(content, special=special, normalized=False)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": eos, "pad_token": "<|endoftext|>",
              "errors": "replace", "split_special_tokens": False, "model_max_length": 131072}
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, **({"chat_template": chat_template}
                                                                          if chat_template else {})}))
    return folder


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    return build_llama3(tmp_path_factory.mktemp("llama3"))


@pytest.fixture(scope="module")
def qwen25(tmp_path_factory):
    return build_qwen(tmp_path_factory.mktemp("qwen25"), QWEN25_ADDED, "<|endoftext|>", QWEN25_CHAT)


@pytest.fixture(scope="module")
def qwen3(qwen25, tmp_path_factory):
    """Qwen3's: Qwen2.5's with four more added tokens (written into the JSON: the merges need not be made again)."""
    info = json.loads((qwen25 / "tokenizer.json").read_text())
    for content, special in QWEN3_ADDED[len(QWEN25_ADDED):]:
        info["added_tokens"].append({"id": info["added_tokens"][-1]["id"] + 1, "content": content, "single_word": False,
                                     "lstrip": False, "rstrip": False, "normalized": False, "special": special})
    folder = tmp_path_factory.mktemp("qwen3")
    (folder / "tokenizer.json").write_text(json.dumps(info, ensure_ascii=False))
    config = json.loads((qwen25 / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(dict(config, eos_token="<|im_end|>")))
    return folder


@pytest.fixture
def folder(request):
    return request.getfixturevalue(request.param)


FAMILIES = ["llama3", "qwen3"]  # Qwen3's is Qwen2.5's with four more added tokens
LOADED = {}


def loaded(folder):
    """The folder's tokenizer as data.load_tokenizer reads it, once per module: a 150k-token one takes a second."""
    if folder not in LOADED:
        LOADED[folder] = data.load_tokenizer(f"hf:{folder}")
    return LOADED[folder]

# text where tokenizers part: many scripts, emoji sequences (skin tone, ZWJ families, flags, keycaps), combining
# marks that NFC composes, digits of several systems, whitespace runs, contractions in capitals
HARD = [
    "", " ", "a", "Hello, world! The quick brown fox jumps over the lazy dog.",
    "I'LL DON'T WE'VE SHE'S THEY'RE I'M I'D it'S you'Ll",
    "The café's naïve coöperation — “quotes”, «guillemets», ‘single’ … and ß ﬁ ﬂ",
    "cafe\u0301 e\u0301cole A\u030angstro\u0308m n\u0303 Zoe\u0308 \u1100\u1161\u11a8",
    "日本語のテキストと中文文本，混合。한국어 텍스트도 있습니다! Ελληνικά Русский текст עִבְרִית العربية हिन्दी ไทย",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 couple 👩‍❤️‍💋‍👨 rainbow 🏳️‍🌈 flags 🇫🇷🇯🇵🏴󠁧󠁢󠁳󠁣󠁴󠁿 keycap 1️⃣ ✨",
    "digits 1234567890 3.14159 1,000,000 2024-06-01 x1y22z333 ٣٤٥ १२३ ½ ² Ⅻ",
    "spaces    between   words\n\n\n   and\ttabs\t\t\r\nCRLF  \n  \u3000ideographic\u00a0nbsp\u2009thin\u200bzw",
    "trailing   ", "   leading", "\n\n\n\n", "\t", "def f(x):\n    return {'k': [x, x ** 2]}  # comment\n",
    "x" * 300 + " " + "ab" * 200 + " " + "1" * 40,
]


def reference_ids(family, text):
    """The vocabulary's own tokenizer: Meta's (tiktoken, llama_models), or tiktoken on qwen.tiktoken with NFC and
    the split dashscope's QwenTokenizer uses."""
    if family == "llama3":
        from llama_models.llama3.tokenizer import Tokenizer as Meta
        return Meta.get_instance().encode(text, bos=False, eos=False)
    if not hasattr(reference_ids, "qwen"):
        ranks = tiktoken.load.load_tiktoken_bpe(str(package_file("dashscope", "resources", "qwen.tiktoken")))
        reference_ids.qwen = tiktoken.Encoding("qwen", pat_str=qwen_split(), mergeable_ranks=ranks, special_tokens={})
    return reference_ids.qwen.encode_ordinary(unicodedata.normalize("NFC", text))

# -----------------------------------------------------------------------------
# the tokenizer: the same ids as `tokenizers`, the vocabulary's own tokenizer and transformers; kept whole


@pytest.mark.parametrize("folder", FAMILIES, indirect=True)
def test_ids_equal_tokenizers_and_the_vocabularys_own_tokenizer(folder, capfd):
    from tokenizers import Tokenizer
    theirs = Tokenizer.from_file(str(folder / "tokenizer.json"))
    enc = LOADED[folder] = data.load_tokenizer(f"hf:{folder}")
    assert "warning" not in capfd.readouterr().err  # Llama 3's merges are every split of a token: nothing differs
    family = "llama3" if folder.name.startswith("llama3") else "qwen"
    for text in HARD:
        ids = enc.encode_ordinary(text)
        assert ids == theirs.encode(text, add_special_tokens=False).ids == reference_ids(family, text), text
        assert enc.decode(ids) == (text if family == "llama3" else unicodedata.normalize("NFC", text))
    specials = {t["content"]: t["id"] for t in json.loads((folder / "tokenizer.json").read_text())["added_tokens"]}
    assert enc._special_tokens == specials and enc.n_vocab == max(specials.values()) + 1


def test_a_runs_copy_of_qwens_tokenizer_keeps_nfc(qwen3, tmp_path):
    """train.py and sft.py write the tokenizer beside the checkpoint; sample.py, eval.py and export.py read that
    copy. It must normalize as Qwen's does: "e" + U+0301 is "é", one token with "caf"."""
    enc = loaded(qwen3)
    combining = "cafe\u0301 e\u0301cole"
    data.save_tokenizer(enc, tmp_path)
    mine = data.load_tokenizer(tmp_path)
    assert mine.encode_ordinary(combining) == enc.encode_ordinary(combining) == [924, 58858, 3958, 55645]
    assert mine.encode_ordinary(combining) == mine.encode_ordinary(unicodedata.normalize("NFC", combining))
    assert data.tokenizer_hash(mine) == data.tokenizer_hash(enc) and mine.added_tokens == enc.added_tokens
    assert data.document_markers(mine) == data.document_markers(enc)


@pytest.mark.parametrize("folder", FAMILIES, indirect=True)
def test_export_then_import_keeps_the_tokenizer_whole(folder, tmp_path):
    """A run's copy out to a Hugging Face folder: transformers reads it as it reads the published one (the same
    ids, Llama 3's <|begin_of_text|> first, bos and eos, NFC, each added token's flags), and it comes back whole."""
    from transformers import AutoTokenizer
    data.save_tokenizer(loaded(folder), tmp_path / "run")
    mine = data.load_tokenizer(tmp_path / "run")
    (tmp_path / "hf").mkdir()
    export.write_tokenizer(mine, tmp_path / "hf", block_size=128)
    written, source = (json.loads((d / "tokenizer.json").read_text()) for d in (tmp_path / "hf", folder))
    flags = lambda info: {t["content"]: {k: t[k] for k in ("id", "special", "normalized", "lstrip", "rstrip", "single_word")}  # noqa: E731
                          for t in info["added_tokens"]}
    assert flags(written) == flags(source)  # Qwen3's <think> is not special
    assert written["normalizer"] == source["normalizer"]
    theirs, published = AutoTokenizer.from_pretrained(tmp_path / "hf"), AutoTokenizer.from_pretrained(folder)
    for text in HARD + ["cafe\u0301"]:
        assert theirs(text)["input_ids"] == published(text)["input_ids"] == ev.document_ids(mine, text)
    assert [theirs.bos_token, theirs.eos_token] == [published.bos_token, published.eos_token]
    back = data.load_tokenizer(f"hf:{tmp_path / 'hf'}")
    assert data.tokenizer_hash(back) == data.tokenizer_hash(mine)
    if folder.name.startswith("qwen3"):  # what the flag does: decoding without the specials keeps the thinking
        ids = theirs("<think>x</think>")["input_ids"]
        assert theirs.decode(ids, skip_special_tokens=True) == published.decode(ids, skip_special_tokens=True) == \
            "<think>x</think>"


def test_a_changed_normalizer_marker_or_flag_is_another_tokenizer(qwen3, llama3):
    """Each kept part counts in the hash: a run refuses data or a checkpoint of a tokenizer that differs in one."""
    enc = loaded(qwen3)
    settings = (enc.name, enc._pat_str, enc._mergeable_ranks, enc._special_tokens)
    same = bpe.make_encoding(*settings, "NFC", enc.markers, enc.added_tokens)
    assert data.tokenizer_hash(same) == data.tokenizer_hash(enc)
    others = [bpe.make_encoding(*settings, None, enc.markers, enc.added_tokens),
              bpe.make_encoding(*settings, "NFC", {**enc.markers, "eos_token": "<|endoftext|>"}, enc.added_tokens),
              bpe.make_encoding(*settings, "NFC", enc.markers, {})]
    assert len({data.tokenizer_hash(e) for e in others} | {data.tokenizer_hash(enc)}) == 4
    llama = loaded(llama3)
    plain = bpe.make_encoding(llama.name, llama._pat_str, llama._mergeable_ranks, llama._special_tokens)
    assert data.tokenizer_hash(plain) != data.tokenizer_hash(llama)

# -----------------------------------------------------------------------------
# document markers: each model's own


def test_llama3_documents_open_with_begin_and_end_with_end_of_text(llama3, tmp_path):
    """data.py --dataset=files:DIR --tokenizer=PATH/tokenizer.json, as the README prepares a foreign model's bins
    to continue pretraining it; then the markers sample.py and eval.py read."""
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = ["First document.\n", "Second: 日本語 😀.\n", "Third one, a little longer than the others.\n"]
    for i, text in enumerate(texts):
        (docs / f"{i}.txt").write_text(text)
    out = data.prepare({"dataset": f"files:{docs}", "tokenizer": str(llama3 / "tokenizer.json"), "filters": "none",
                        "data_dir": str(tmp_path / "data"), "val_fraction": 1, "block_size": 8})
    enc, bos, eos = loaded(llama3), 128000, 128001
    assert data.start_ids(enc) == [bos] and data.end_ids(enc) == [eos, bos]  # sample.py stops a base Llama there
    assert ev.prefix_id(enc) == bos  # lm-eval's HFLM.prefix_token_id: the tokenizer's bos
    ids = [np.fromfile(out / f"{s}.bin", dtype=np.uint32).tolist() for s in ("val", "train")]
    assert ids[0] + ids[1] == sum(([bos] + enc.encode_ordinary(t) + [eos] for t in texts), [])
    assert data.read_meta(out)["document_markers"] == {"before": ["<|begin_of_text|>"], "after": ["<|end_of_text|>"]}


@pytest.mark.parametrize("folder, bos, eos", [("qwen25", None, "<|endoftext|>"), ("qwen3", None, "<|im_end|>")],
                         indirect=["folder"])
def test_qwen_documents_end_with_the_eos_its_config_names(folder, bos, eos):
    enc = loaded(folder)
    assert data.document_markers(enc) == {"bos_token": bos, "eos_token": eos, "add_bos": False}
    assert data.start_ids(enc) == [] and data.end_ids(enc) == [enc.encode_single_token(eos)]
    assert ev.prefix_id(enc) == enc.encode_single_token(eos)  # no bos: lm-eval reads a document after eos


def test_a_tokenizer_with_no_document_marker_is_one_clear_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps(small_bpe([("a", "b")], False, ("ab",))))  # no config beside
    enc = data.load_tokenizer(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError, match="marks no document boundary.*tokenizer_config.json.*--bos_token"):
        data.encode_documents(enc, ["x"], None)
    with pytest.raises(UserError, match="names no bos or eos token"):
        ev.prefix_id(enc)

# -----------------------------------------------------------------------------
# the merge-order warning: only where `tokenizers` can encode a word otherwise than tiktoken


def small_bpe(merges, ignore_merges, vocab):
    """A byte-level tokenizer.json of the 256 bytes, `vocab`'s tokens after them, and these merges."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    chars = list(bytes_to_unicode().values())
    tokens = {c: i for i, c in enumerate(chars)}
    for t in vocab:
        tokens.setdefault(t, len(tokens))
    return {"version": "1.0", "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": ignore_merges, "vocab": tokens, "merges": [list(m) for m in merges]}}


@pytest.mark.parametrize("case, vocab, merges, ignore, warns", [
    # "bc" listed before "ab" but ranked after it: abc is ab|c in tiktoken, a|bc in `tokenizers`
    ("inversion", ("ab", "bc"), [("b", "c"), ("a", "b")], False, True),
    # every split of "abc" listed (TikTokenConverter, Llama 3): a run that makes one token is no order at all
    ("every split", ("ab", "bc", "abc"), [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")], True, False),
    # "abc" made by no merge: tiktoken takes the word whole, `tokenizers` cannot make it...
    ("unmade", ("ab", "abc"), [("a", "b")], False, True),
    # ...nor, under ignore_merges, inside "xabc", where tiktoken joins ab + c...
    ("unmade, ignore_merges", ("ab", "abc"), [("a", "b")], True, True),
    # ...but "xyz" tiktoken forms only as a whole word (no pair of it is a token), as ignore_merges does
    ("unreachable, ignore_merges", ("ab", "xyz"), [("a", "b")], True, False),
])
def test_merge_order_warning_where_and_only_where_ids_can_differ(case, vocab, merges, ignore, warns, tmp_path, capfd):
    from tokenizers import Tokenizer
    (tmp_path / "tokenizer.json").write_text(json.dumps(small_bpe(merges, ignore, vocab)))
    enc = data.load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert ("warning:" in capfd.readouterr().err) == warns
    theirs = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    words = ["abc", "xabc", "abcabc", "cab", "xyz", "axyz", "xyzab"]
    differs = [w for w in words if enc.encode_ordinary(w) != theirs.encode(w).ids]
    assert bool(differs) == warns, differs  # the warning is no false alarm, and its absence no false comfort


# -----------------------------------------------------------------------------
# chat templates: the published ones, rendered with the real ids by sft.py as transformers renders them

CONVERSATION = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 + 3? I'LL WAIT"},
                {"role": "assistant", "content": "2 + 3 = 5."},
                {"role": "user", "content": "Und 日本 mal 2? 👨‍👩‍👧 cafe\u0301"},
                {"role": "assistant", "content": " Zwei Japans.  "}]


@pytest.mark.parametrize("folder, end", [("llama3", "<|eot_id|>"), ("qwen25", "<|im_end|>")], indirect=["folder"])
def test_published_chat_templates_render_the_real_ids_as_transformers(folder, end):
    pytest.importorskip("jinja2", reason="rendering a model's own template: pip install jinja2")
    from transformers import AutoTokenizer
    theirs = AutoTokenizer.from_pretrained(folder)
    enc = loaded(folder)
    template = hf.hf_chat_template(folder)
    for n in (2, 4):
        prompt = theirs.apply_chat_template(CONVERSATION[:n], add_generation_prompt=True, tokenize=True, return_dict=True)
        assert sft.render_prompt(template, CONVERSATION[:n], enc) == prompt["input_ids"]
    ids, mask = sft.render(template, CONVERSATION, enc)
    assert ids == theirs.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]
    assert enc.decode([t for t, m in zip(ids, mask) if m]).endswith(end) and sft.stop_tokens(template, enc)[0] == \
        enc.encode_single_token(end)

# -----------------------------------------------------------------------------
# a toy model with each real vocabulary, through every script


def toy_model(family, folder):
    """A random transformers model of the family with 32 wide embeddings, saved beside the tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                  max_position_embeddings=128, tie_word_embeddings=True)
    if family == "llama3":  # Llama 3.2's vocabulary, RoPE and ids
        cfg = AutoConfig.for_model("llama", vocab_size=128256, head_dim=16, rope_theta=500000.0, bos_token_id=128000,
                                   eos_token_id=128001, rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                                   **common)
    else:  # Qwen2.5's
        cfg = AutoConfig.for_model("qwen2", vocab_size=151936, rope_theta=1000000.0, use_sliding_window=False,
                                   bos_token_id=151643, eos_token_id=151643, **common)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(folder)


def corpus(folder):
    """A few dozen documents in many scripts, the last by name a short note: data.py's 1% draw gives val too little
    for a window, so val takes documents until it holds one."""
    folder.mkdir()
    for i in range(36):
        (folder / f"doc{i:02d}.txt").write_text(" ".join(HARD[(i + k) % len(HARD)] for k in range(5)) + f" {i}\n")
    (folder / "zz_note.txt").write_text("A short note.\n")
    return folder


def configured(module, argv):
    configurator.configure(vars(module), argv)
    return module


@pytest.mark.benchmark
@pytest.mark.parametrize("folder", ["llama3", "qwen25"], indirect=True)
def test_toy_model_with_the_real_vocabulary_through_every_script(folder, tmp_path):
    import sample
    import train
    pytest.importorskip("jinja2", reason="rendering a model's own template: pip install jinja2")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    family = "llama3" if folder.name.startswith("llama3") else "qwen25"
    hub = tmp_path / "hub"
    hub.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (hub / name).write_text((folder / name).read_text())
    toy_model(family, hub)
    docs, bins = corpus(tmp_path / "docs"), tmp_path / "data"
    # continued pretraining as the README says: the model's own tokenizer and document markers in the bins
    out = data.prepare({"dataset": f"files:{docs}", "tokenizer": f"hf:{hub}", "data_dir": str(bins), "filters": "none"})
    meta = data.read_meta(out)
    assert meta["val_tokens"] >= 1025 and meta["train_tokens"] >= 1025  # a window of data.py's block_size each
    base = tmp_path / "base"
    try:
        summary = configured(train, [f"--init_from=hf:{hub}", f"--dataset=files:{docs}", f"--data_dir={bins}",
                                     f"--out_dir={base}", "--block_size=64", "--batch_size=2", "--max_iters=2",
                                     "--eval_interval=2", "--eval_iters=1", "--warmup_iters=1", "--device=cpu",
                                     "--dtype=float32"]).main()
        assert summary["iters"] == 2 and math.isfinite(summary["val_loss"])
        tuned = tmp_path / "sft"
        sft.main([f"--init_from=hf:{hub}", f"--out_dir={tuned}", "--sft_data=simplemath:20", "--max_iters=1",
                  "--batch_size=2", "--eval_iters=1", "--device=cpu", "--dtype=float32"])
        configured(sample, [f"--out_dir={tuned}", "--prompt=Hello", "--max_new_tokens=4", "--temperature=0",
                            "--device=cpu"]).main()
        bench = tmp_path / "bench"
        bench.mkdir()
        pages = [" = Tëst Pàge = \n \n " + " ".join(HARD[3:9]) + " \n", " = Sëcond = \n \n " + " ".join(HARD[9:13]) + " \n"]
        (bench / "wiki.test.raw").write_text(" \n" + "".join(pages), encoding="utf-8")
        configured(ev, [f"--out_dir={base}", "--tasks=bpb,wikitext2", f"--data_path={bench}", f"--data_dir={out}",
                        "--device=cpu", "--batch_size=4"]).main()
        results = json.loads((base / "eval.json").read_text())["results"]
        export.configure(out_dir=str(tuned), hf_dir=str(tmp_path / "exported"))
        exported = export.main()
        export.configure(out_dir=str(base), hf_dir=str(tmp_path / "exported_base"))
        exported_base = export.main()
    finally:
        for module in (train, sample, ev, export):
            configurator.reset(vars(module))
    # the exported tokenizer and model are the imported ones, whole
    tok, published = AutoTokenizer.from_pretrained(exported), AutoTokenizer.from_pretrained(hub)
    for text in HARD:
        assert tok(text)["input_ids"] == published(text)["input_ids"]
    conv = CONVERSATION[1:2]
    assert tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"] == \
        published.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert type(AutoModelForCausalLM.from_pretrained(exported)).__name__ == \
        {"llama3": "LlamaForCausalLM", "qwen25": "Qwen2ForCausalLM"}[family]
    # eval.py's bpb and wikitext2 are lm-eval's HF model's numbers on the same documents
    lm_eval_scores(exported_base, base, out, bench / "wiki.test.raw", results)


def lm_eval_scores(folder, run, bins, wiki, results):
    """lm-eval's HFLM reads each document (the run's val documents, the wikitext pages) in rolling windows after its
    prefix token, as transformers encodes it (Llama 3's with <|begin_of_text|> first): eval.py's per-document
    log-likelihoods, and so its bits per byte, are the same."""
    pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval's HF model: pip install 'lm-eval[hf]'")
    import benchmarks
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    lm = HFLM(pretrained=str(folder), device="cpu", dtype="float32", batch_size=4)
    model, enc, ckpt = ev.load_checkpoint(run, "cpu")
    assert lm.prefix_token_id == ev.prefix_id(enc) and lm.max_length == model.config.block_size
    ev.data_dir = str(bins)
    try:
        docs = ev.val_documents(ckpt, enc)
    finally:
        ev.data_dir = ""
    theirs = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (d,), i) for i, d in enumerate(docs)])
    prefix, block = ev.prefix_id(enc), model.config.block_size
    ours = [sum(ev.loglikelihoods(model, ev.rolling_requests(ev.document_ids(enc, d), prefix, block), 4)) for d in docs]
    assert ours == pytest.approx(theirs, rel=1e-5)
    nats, nbytes = -sum(theirs), sum(len(d.encode()) for d in docs)
    assert results["bpb"]["bits_per_byte"] == pytest.approx(nats / nbytes / math.log(2), rel=1e-5)
    pages = [ev.wikitext_detokenize(p) for p in benchmarks.wikitext_documents(str(wiki))]
    theirs = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (p,), i) for i, p in enumerate(pages)])
    assert [-ev.wikitext_page_nll(model, enc, p, block)[0] for p in benchmarks.wikitext_documents(str(wiki))] == \
        pytest.approx(theirs, rel=1e-5)
    assert results["wikitext2"]["documents"] == len(pages) == 2
