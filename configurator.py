"""
The configurator every script shares: presets and --key=value overrides.

    python train.py --preset=tiny --max_iters=50 --n_layer=2

A preset is a plain Python file `config/NAME.py` of constant assignments (the recipe). It is
applied first, then each `--key=value` from the command line, then keyword overrides from a
notebook (`train.configure(preset="tiny", max_iters=50)`). Unlike nanoGPT's configurator this
runs inside a function the script calls, never at import, so a notebook can import a script,
change its constants and call `main()`.

A key is known to a script when it is one of the script's module-level constants (train.py's
include every architecture flag of `model.GPTConfig`). Preset keys a script does not know are
skipped silently: one recipe file serves data.py, train.py, sft.py and eval.py, each taking its
own constants from it. A script may also take another's settings to hand on (train.py takes data.py's, for
the bins it prepares itself): a dict PASSES_ON = {key: default} among its globals names them.

`given(g)` tells the settings the user gave (command line, keyword overrides, a notebook's assignments) from a
preset's: a setting the user gave is a wish to honour or refuse, a preset's value only the recipe's default.
"""

import ast
import difflib
import math
import os
import re
import sys

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")


class UserError(SystemExit):
    """A mistake the user can fix. Uncaught, it prints one line and exits 1 with no traceback."""

    def __init__(self, message):
        super().__init__(f"error: {message}")
        self.message = message


def list_presets():
    return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_"))


def load_preset(name):
    """Executes config/NAME.py and returns its constants as a dict."""
    # a preset is a name, never a path: --preset=../../x must not execute a file outside config/
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", str(name)) or ".." in str(name):
        raise UserError(f"--preset takes the name of a file in config/ ({', '.join(list_presets())}), not a path; "
                        "copy a recipe of your own into config/ to use it")
    path = os.path.join(CONFIG_DIR, f"{name}.py")
    if not os.path.exists(path):
        raise UserError(f"unknown preset '{name}'; the presets are: {', '.join(list_presets())}")
    namespace = {}
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("_") and _is_constant(v)}


def _is_constant(v):
    return v is None or isinstance(v, (bool, int, float, str, list, tuple, dict))


def _parse_value(key, text, default):
    """Turns the text of --key=value into a value of the default's type."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text  # a bare word such as --device=cuda is a string
    return _check_type(key, value, default)


def _check_type(key, value, default):
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    elif isinstance(default, str) and isinstance(value, (int, float)):
        return str(value)  # e.g. --dataset=2024 is still a name
    elif type(value) is type(default):
        return value
    kinds = {bool: "True or False", int: "an integer", float: "a number", str: "a string", list: "a list", tuple: "a list", dict: "a dict"}
    raise UserError(f"--{key} expects {kinds[type(default)]} (like {default!r}), got {value!r}")


def configure(g, argv=None, prefix="", cumulative=False, **overrides):
    """Applies --preset, --key=value (argv) and keyword overrides to the script globals `g`.

    From the command line (cumulative=False) the run starts from the file's own values. A notebook's
    `train.configure(...)` is cumulative: it builds on what earlier calls set, and a new preset starts the
    recipe afresh. Either way a constant the notebook assigned by hand since the last call (`train.max_iters = 3`)
    is kept, never silently reset; `reset(g)` goes back to the file's values.

    With a prefix (sft.py passes "sft_"), a preset's `sft_learning_rate` sets this script's
    `learning_rate`, winning over the plain `learning_rate` that pretraining uses: one recipe
    file holds both stages without their numbers colliding."""
    if "_defaults" not in g:  # the file's own values, and the values the last call left (to see hand edits)
        g["_defaults"] = {k: v for k, v in g.items() if _known_constant(k, v)}
        g["_configured"] = _snapshot(g)
    known, passes_on = g["_defaults"], g.get("PASSES_ON", {})
    by_hand = {k: g[k] for k in known if g[k] != g["_configured"][k]}
    previous, given_before = _snapshot(g), g.get("_given", {})
    user = {**given_before, **by_hand}  # the settings the user gave, as given(g) reports them

    def assign(key, value, from_preset):
        if from_preset and key not in known:
            return
        if key not in known and key not in passes_on:
            close = difflib.get_close_matches(key, sorted({*known, *passes_on}), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else "; run with --help to list the keys"
            raise UserError(f"unknown config key '{key}'{hint}")
        value = _check_type(key, value, known[key] if key in known else passes_on[key])
        if key in known:
            g[key] = value
        if not from_preset:
            user[key] = value

    if argv is None and hasattr(sys.stdout, "reconfigure"):  # a command line: the scripts' log lines must reach `| tee log` as they are printed
        sys.stdout.reconfigure(line_buffering=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(g.get("__doc__") or "")
        print("config keys:", ", ".join(sorted(known)))
        if passes_on:
            print("handed on, for the data it prepares:", ", ".join(sorted(set(passes_on) - set(known))))
        print("presets:", ", ".join(list_presets()))
        raise SystemExit(0)
    cli = []
    for arg in argv:
        if not arg.startswith("--"):
            raise UserError(f"cannot read argument '{arg}'; write options as --key=value (for example --preset=tiny)")
        key, eq, text = arg[2:].partition("=")
        if not eq:  # a bare --compile means --compile=True, as argparse's store_true has taught users
            if key in known and not isinstance(known[key], bool):
                raise UserError(f"--{key} needs a value: write --{key}=VALUE")
            text = "True"  # an unknown bare key is refused below, with the closest known keys
        cli.append((key, text))
    preset = overrides.pop("preset", None)
    for key, text in cli:
        if key == "preset":
            preset = text
    configured = g["_configured"]
    try:
        if preset or not cumulative:
            reset(g)
            user = dict(by_hand)  # a new recipe starts afresh; hand edits are kept (below), so they stay the user's
        if preset:
            values = load_preset(preset)
            staged = {k for k in values if prefix and k.startswith(prefix) and k[len(prefix):] in known}
            for key, value in values.items():
                if key not in staged:
                    assign(key, value, from_preset=True)
            for key in staged:
                assign(key[len(prefix):], values[key], from_preset=True)
            if "preset" in known:
                g["preset"] = preset
        g.update(by_hand)
        for key, text in cli:
            if key == "preset":
                continue
            if prefix and key.startswith(prefix) and key not in known:
                key = key[len(prefix):]
            assign(key, _parse_value(key, text, known.get(key, passes_on.get(key))), from_preset=False)
        for key, value in overrides.items():
            assign(key, value, from_preset=False)
        cfg = effective_config(g)
        check_ranges({k: v for k, v in user.items() if k not in known})
    except UserError:  # a notebook that catches the error must not go on with the values just refused
        g.update(previous)
        g["_configured"], g["_given"] = configured, given_before
        raise
    g["_configured"], g["_given"] = _snapshot(g), user
    return cfg


def given(g):
    """{key: value} of the settings the user gave since the file's values (command line, keyword overrides, a
    notebook's assignments, and PASSES_ON settings), never a preset's: those a run may refuse when they conflict."""
    if "_defaults" not in g:
        return {}
    out = {k: g[k] if k in g["_defaults"] else v for k, v in g.get("_given", {}).items()}
    out.update({k: g[k] for k in g["_defaults"] if g[k] != g["_configured"][k]})  # assigned by hand since the last call
    return out


def reset(g):
    """The script's constants back to the values its file sets."""
    for k, v in g["_defaults"].items():
        g[k] = _copy(v)
    g["_configured"], g["_given"] = _snapshot(g), {}


def _copy(v):
    return type(v)(v) if isinstance(v, (dict, list)) else v


def _snapshot(g):
    return {k: _copy(g[k]) for k in g["_defaults"]}


def _known_constant(k, v):
    return not k.startswith("_") and k.islower() and _is_constant(v)


def effective_config(g):
    """The script's config as it stands now, including constants a notebook set by hand; every value in range."""
    keys = g["_defaults"] if "_defaults" in g else [k for k, v in g.items() if _known_constant(k, v)]
    cfg = {k: g[k] for k in keys}
    check_ranges(cfg)
    return cfg


# The range of every numeric setting, by name, for all scripts (a key means the same thing wherever it
# appears; model sizes are GPTConfig's to check). Checked before any work starts: --grad_clip=-1 flipped
# the gradient and --timeout=-1 failed correct code, silently. Interval notation: [ ] includes the end.
_AT_LEAST_1 = ("batch_size", "block_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval",
               "grad_skip_window", "max_skips_in_row", "num_samples", "max_new_tokens", "gen_batch_size", "sample_tokens",
               "syntax_samples", "ppl_stride", "pad_vocab_multiple", "simplemath_max", "memory_mb", "parallel", "max_body")
_AT_LEAST_0 = ("max_iters", "warmup_iters", "lr_decay_iters", "epochs", "max_examples", "limit", "workers", "num_proc",
               "max_docs", "max_chars", "max_shards", "tokenizer_train_chars", "top_k", "ppl_context", "val_tokens",
               "grad_clip", "grad_skip_factor", "weight_decay", "min_lr", "muon_lr",
               "temperature", "init_std", "emb_init_std", "logit_softcap", "queue_size")
RANGES = {
    **dict.fromkeys(_AT_LEAST_1, "[1, inf)"), **dict.fromkeys(_AT_LEAST_0, "[0, inf)"),
    **dict.fromkeys(("dropout", "beta1", "beta2"), "[0, 1)"),
    **dict.fromkeys(("fim_rate", "fim_spm_rate", "midtrain_ratio", "warmdown_frac", "warmup_frac",
                     "max_literal_share", "test_fraction"), "[0, 1]"),
    **dict.fromkeys(("learning_rate", "adam_eps", "timeout", "repetition_penalty", "rope_theta", "norm_eps",
                     "val_fraction", "request_timeout"), "(0, inf)"),
    "top_p": "(0, 1]",
    "port": "[0, 65535]",
    "seed": "[0, 4294967295]",  # numpy seeds are 32-bit
}
CHOICES = {
    "lr_schedule": ("cosine", "linear", "constant", "wsd"),
    "data_order": ("random", "sequential"),
    "dtype": ("auto", "float32", "bfloat16", "float16"),
    "filters": ("none", "code_quality"),
    "split_pattern": ("gpt4", "gpt4_digits2"),
}


def check_ranges(cfg):
    """One error listing every value outside RANGES or CHOICES, with what each key accepts."""
    bad = []
    for key, value in cfg.items():
        if key in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            spec = RANGES[key]
            low, high = (float(x) for x in spec[1:-1].split(","))
            above = value > low if spec[0] == "(" else value >= low
            below = value < high if spec[-1] == ")" else value <= high
            if not (above and below and math.isfinite(value)):
                lo = spec[1:].split(",")[0]
                words = (f"at least {lo}" if spec.startswith("[") else f"greater than {lo}") if spec.endswith("inf)") \
                    else f"in {spec}"
                bad.append(f"{key}={value!r} must be {words}")
        elif key in CHOICES and value not in CHOICES[key]:
            bad.append(f"{key}={value!r} is not one of {', '.join(CHOICES[key])}")
    if bad:
        raise UserError("; ".join(bad))


def print_config(cfg, file=sys.stdout):
    width = max(len(k) for k in cfg) if cfg else 0
    for k in sorted(cfg):
        print(f"  {k:<{width}} = {cfg[k]!r}", file=file)
