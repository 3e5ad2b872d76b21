"""
Checkpoints and resume: the run written to out_dir/ckpt.pt and read back, so that a crash, a kill or Ctrl-C
loses nothing and a resumed run continues to the same numbers; and the checks that refuse, in one sentence, a
checkpoint, tokenizer, architecture or machine that does not fit.

A checkpoint is a `torch.save` of plain containers (tensors, numbers, strings, lists, dicts), so it loads with
`weights_only=True`: weights, model config, training config, optimizer and scaler, progress, and each process's
data position and RNG. It is written to a temp file and renamed, so the previous one survives a crash.
"""

import functools
import json
import os
import pickle
import random
import signal
import threading
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import data
import files
from configurator import UserError
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# saving and reading


def rng_state():
    state = {"python": random.getstate(), "numpy": [x.tolist() if isinstance(x, np.ndarray) else x
                                                    for x in np.random.get_state()],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir, ckpt):
    """out_dir/ckpt.pt, written whole or not at all (files.save_atomic)."""
    need = sum(v.numel() * v.element_size() for v in _tensors(ckpt))
    files.save_atomic(Path(out_dir) / "ckpt.pt", lambda tmp: torch.save(ckpt, tmp), need)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def read_checkpoint(path, device="cpu"):
    """The checkpoint dict in a directory (or a ckpt.pt path), refusing anything this project did not write."""
    path = Path(path)
    file = path / "ckpt.pt" if path.is_dir() else path
    if not file.exists():
        raise UserError(f"no checkpoint at {file}; train one first (python train.py --preset=tiny writes out/tiny)")
    try:
        with warnings.catch_warnings():  # garbage bytes read as an odd pickle protocol warn before they fail
            warnings.simplefilter("ignore")
            ckpt = torch.load(file, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # weights_only met a class or function: never unpickle it
            raise UserError(f"{file} is not a checkpoint this project wrote: it holds Python objects beyond tensors, "
                            "numbers and strings; refusing to load it") from None
        raise UserError(f"{file} is truncated or corrupt (not a torch.save file); use another checkpoint or train "
                        "again") from None
    except Exception as e:  # a damaged file fails anywhere in the unpickler: IndexError, KeyError, EOFError...
        raise UserError(f"{file} is truncated or corrupt ({str(e).split(chr(10))[0][:80] or type(e).__name__}); "
                        "use another checkpoint or train again") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or "model_config" not in ckpt:
        raise UserError(f"{file} is not a checkpoint this project wrote (no model weights and config in it)")
    # a state dict saved from a torch.compile'd model carries this prefix (a common nanoGPT resume bug)
    ckpt["model"] = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    return ckpt


def load_checkpoint(path, device="cpu", **model_overrides):
    """(model in eval mode, tokenizer, checkpoint dict) from a checkpoint directory."""
    ckpt = read_checkpoint(path, device)
    config = GPTConfig.from_dict({**ckpt["model_config"], **model_overrides})
    model = GPT(config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise UserError(f"{path}: the weights do not match the model config stored beside them "
                        f"({lines[1].strip()[:100] if len(lines) > 1 else e}); the checkpoint is corrupt") from None
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    enc = data.load_tokenizer(str(folder))
    want = ckpt.get("tokenizer") or {}
    if want and data.tokenizer_hash(enc) != want["hash"]:
        raise UserError(f"{folder}'s tokenizer ({enc.name}, hash {data.tokenizer_hash(enc)}) is not the one the checkpoint "
                        f"was trained with ({want['name']}, hash {want['hash']}); put that run's tokenizer.json and "
                        "tokenizer.tiktoken back")
    if enc.n_vocab > config.vocab_size:
        raise UserError(f"{folder}'s tokenizer {enc.name} has {enc.n_vocab:,} ids but the model only "
                        f"{config.vocab_size:,}: they do not belong together")
    return model.to(device).eval(), enc, ckpt


def saved_tokenizer_hash(folder):
    """The hash recorded in folder/tokenizer.json, or None: a run rewrites the tokenizer only when it changed."""
    path = Path(folder) / "tokenizer.json"
    return files.read_json(path).get("hash") if path.is_file() else None

# -----------------------------------------------------------------------------
# resuming


# a resumed run cannot change these: its random streams, its data and its model are the checkpoint's
FIXED_AT_RESUME = ("seed", "dataset", "data_order")


def check_resume(resume, cfg, world_size, out_dir):
    """Refuses a resume that cannot continue exactly; says which settings changed (they take effect now)."""
    if len(resume["ranks"]) != world_size:  # each rank's data position and RNG belong to that rank alone
        raise UserError(f"{out_dir} was saved by {len(resume['ranks'])} process(es) and this run has {world_size}: "
                        f"resume with {len(resume['ranks'])} (torchrun --nproc_per_node), or start a new stage "
                        f"with --init_from={out_dir} --out_dir=NEW")
    old = resume.get("config", {})
    changed = {k: (old[k], cfg[k]) for k in cfg if k in old and old[k] != cfg[k] and k != "init_from"}
    fixed = [f"{k}={b!r} (the checkpoint's is {a!r})" for k, (a, b) in changed.items() if k in FIXED_AT_RESUME]
    if fixed:
        raise UserError(f"a resumed run keeps its {', '.join(FIXED_AT_RESUME)}: {'; '.join(fixed)}; drop the "
                        "override, or start a new stage with --init_from=OUT_DIR --out_dir=NEW")
    if changed:
        print(f"resume: changed since the checkpoint, in effect from iter {resume['iter_num']}: "
              + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items())))


def restore(resume, optimizer, scaler, loaders, rank):
    """Puts the optimizer, the scaler, this rank's data positions and its RNG back where the checkpoint was."""
    optimizer.load_state_dict(resume["optimizer"])
    scaler.load_state_dict(resume["scaler"])
    mine = resume["ranks"][rank]
    for split, state in mine["loaders"].items():
        loaders[split].load_state_dict(state)
    set_rng_state(mine["rng"])


def check_architecture(saved, flags, source):
    """A run continued from a checkpoint has its architecture: a flag set to another value is refused, not ignored.
    dropout and block_size may change between stages."""
    differ = [f"{k}={value!r} (it has {saved[k]!r})" for k, value in flags.items()
              if k in saved and k not in ("dropout", "block_size") and saved[k] != value]
    if differ:
        raise UserError(f"{source} was trained with another architecture: {'; '.join(differ)}; drop these flags "
                        "(a checkpoint's architecture cannot change) or train from scratch into a new --out_dir")


def check_memory(config, cfg, dev):
    """Refuses at once a run that cannot fit, rather than failing mid-allocation or swapping for hours. A lower
    bound: AdamW keeps 16 bytes per weight (fp32 weight, grad, two moments), the logits of a micro-batch 8 bytes
    per entry (values and grads), and the model has at least 2*n_embd^2 attention weights per layer."""
    params = config.n_layer * 2 * config.n_embd ** 2 + config.vocab_size * config.n_embd
    need = 16 * params + 8 * cfg["batch_size"] * cfg["block_size"] * config.vocab_size
    try:
        have = (torch.cuda.get_device_properties(dev).total_memory if dev.startswith("cuda")
                else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # a platform that does not say
        return
    if need > have:
        raise UserError(f"this run needs at least {need / 2**30:,.1f} GiB ({params / 1e6:,.0f}M+ weights with AdamW, "
                        f"logits of batch_size={cfg['batch_size']} x block_size={cfg['block_size']}) but {dev} has "
                        f"{have / 2**30:,.1f} GiB; lower n_embd, n_layer or batch_size")


def open_metrics(path, start_iter):
    """metrics.jsonl, appended; on resume, rows logged after the checkpoint was taken are dropped."""
    rows = []
    if start_iter and path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write
            if row.get("iter", -1) <= start_iter and "summary" not in row:
                rows.append(line + "\n")
    files.write_atomic(path, "".join(rows).encode())  # rewritten whole, then renamed: a kill now loses no row
    return open(path, "a", buffering=1)

# -----------------------------------------------------------------------------
# the run around the loop: started, saved, reported, finished


@dataclass
class Progress:
    """Where a run stands. Saved in every checkpoint under these names, restored on resume."""
    iter_num: int = 0
    best_val_loss: float = float("inf")
    tokens_seen: int = 0
    skipped_total: int = 0      # steps the guard skipped
    skips_in_row: int = 0       # since the last step taken; max_skips_in_row of them stop the run
    scaler_skips: int = 0       # fp16 overflows: the GradScaler's own skips, counted apart
    recent_grad_norms: list = field(default_factory=list)  # the guard's memory: the last accepted grad norms
    losses: dict = field(default_factory=dict)             # the last evaluation


@dataclass
class Run:
    """What train.py's loop carries from step to step besides the model: made by start_run."""
    cfg: dict
    system: tuple               # train.System: processes, device, precision, GradScaler
    raw_model: GPT              # the model itself, not compiled or wrapped: its weights are what a checkpoint saves
    optimizer: object
    progress: Progress
    loaders: dict
    out_dir: Path
    tokenizer: dict             # {"name", "hash"}: saved in every checkpoint, checked at every load
    extra_ckpt: dict            # what the caller adds to each checkpoint (sft.py: the chat template)
    metrics: object = None      # metrics.jsonl, open for appending (first process only)
    wandb: object = None

    @property
    def tokens_per_step(self):
        c = self.cfg
        return c["batch_size"] * c["block_size"] * c["gradient_accumulation_steps"] * self.system.world_size

    @property
    def device_name(self):
        dev = self.system.device
        return torch.cuda.get_device_name(dev) if dev.startswith("cuda") else dev


def start_run(cfg, raw_model, optimizer, enc, loaders, system, resume, extra_ckpt):
    """The Run around train.py's loop: the progress (restored from resume with the optimizer, scaler, data
    positions and RNG); out_dir locked, with the tokenizer and metrics.jsonl; the run's size printed."""
    out_dir = Path(cfg["out_dir"])
    progress = Progress()
    if resume is not None:
        check_resume(resume, cfg, system.world_size, out_dir)
        restore(resume, optimizer, system.scaler, loaders, system.rank)
        progress = Progress(**{f.name: resume[f.name] for f in fields(Progress) if f.name in resume and f.name != "losses"})
        progress.recent_grad_norms = list(progress.recent_grad_norms)
    run = Run(cfg, system, raw_model, optimizer, progress, loaders, out_dir,
              {"name": enc.name, "hash": data.tokenizer_hash(enc)}, extra_ckpt or {})
    if system.rank != 0:
        return run
    files.lock_folder(out_dir)  # a second run on this out_dir would garble it: it is refused, naming this one
    if saved_tokenizer_hash(out_dir) != run.tokenizer["hash"]:  # unchanged on resume: never rewritten
        data.save_tokenizer(enc, out_dir)
    run.metrics = open_metrics(out_dir / "metrics.jsonl", progress.iter_num)
    if cfg.get("wandb_log"):
        try:
            import wandb
        except ImportError:
            raise UserError("wandb_log=True needs wandb: pip install wandb")
        wandb.init(project=cfg["wandb_project"], name=cfg["wandb_run_name"] or None, config=cfg)
        run.wandb = wandb
    total, non_emb = raw_model.num_params()
    flops = raw_model.flops_per_token() * run.tokens_per_step * cfg["max_iters"]
    print(f"model: {total / 1e6:.2f}M parameters ({non_emb / 1e6:.2f}M non-embedding) | device {run.device_name}, "
          f"{system.dtype}, {system.world_size} process(es) | {run.tokens_per_step:,} tokens/step, {cfg['max_iters']:,} steps = "
          f"{run.tokens_per_step * cfg['max_iters'] / 1e6:,.1f}M tokens, {flops:.2e} FLOPs planned")
    return run


def save_run(run, val_loss):
    """The whole run to out_dir/ckpt.pt: weights, optimizer, scaler, progress, and every process's data position
    and RNG, so that a resume continues exactly."""
    state = run.raw_model.state_dict()
    # a NaN in the weights would replace the last good checkpoint with one nothing can resume or sample from
    if not bool(torch.stack([torch.isfinite(v).all() for v in state.values() if v.is_floating_point()]).all()):
        raise UserError(f"iter {run.progress.iter_num}: the weights hold NaN or inf; not saving them over the last good "
                        f"checkpoint in {run.out_dir}: resume from it with a lower learning_rate")
    system = run.system
    ranks = gather({"loaders": {k: loader.state_dict() for k, loader in run.loaders.items()},
                    "rng": rng_state()}, system.ddp, system.world_size)
    if system.rank == 0:
        save_checkpoint(run.out_dir, {
            "model": state, "optimizer": run.optimizer.state_dict(), "scaler": system.scaler.state_dict(),
            "model_config": asdict(run.raw_model.config), "config": run.cfg, **asdict(run.progress),
            "val_loss": val_loss, "ranks": ranks, "tokenizer": run.tokenizer, "chat_template": None, **run.extra_ckpt})


def gather(obj, ddp, world_size):
    """Every process's obj as a list (rank order): each rank's loader and RNG state go into the checkpoint."""
    if not ddp:
        return [obj]
    objs = [None] * world_size
    dist.all_gather_object(objs, obj)
    return objs


def report(run, text, row=None):
    """A line for the console and a row for metrics.jsonl (and wandb), from the first process only."""
    if run.system.rank != 0:
        return
    print(text)
    if row is not None:
        run.metrics.write(json.dumps(row) + "\n")
        if run.wandb is not None:
            run.wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))})


def finish_run(run, wall):
    """The summary train() returns (and metrics.jsonl's last row); out_dir unlocked."""
    progress, system = run.progress, run.system
    summary = {"iters": progress.iter_num, "tokens": progress.tokens_seen, "train_loss": progress.losses.get("train"),
               "val_loss": progress.losses.get("val"), "val_bpb": progress.losses.get("val_bpb"), "wall_s": wall, "device_hours": wall * system.world_size / 3600,
               "skipped": progress.skipped_total, "scaler_skips": progress.scaler_skips}
    if system.rank == 0:
        print(f"done: {progress.iter_num} steps, {progress.tokens_seen / 1e6:,.2f}M tokens, {wall:.1f}s wall, "
              f"{summary['device_hours']:.3f} device-hours, {progress.skipped_total} skipped steps; checkpoint in {run.out_dir}")
        run.metrics.write(json.dumps({"summary": summary}) + "\n")
        run.metrics.close()
        files.unlock_folder(run.out_dir)
    return summary


# -----------------------------------------------------------------------------
# stopping cleanly


STOP_REQUESTED = []  # Ctrl-C during train(): finish the step, save a checkpoint, exit 130


def stop_on_ctrl_c(fn):
    """Ctrl-C makes fn's loop stop after its current step (it checks STOP_REQUESTED) instead of losing the run
    to a traceback; a second Ctrl-C interrupts at once. One process only: under torchrun the ranks could stop
    at different steps and the checkpoint's gather would hang."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return fn(*args, **kwargs)

        def ask(signum, frame):
            STOP_REQUESTED.append(signum)
            signal.signal(signal.SIGINT, previous)
        STOP_REQUESTED.clear()
        previous = signal.signal(signal.SIGINT, ask)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, previous)
    return wrapper
