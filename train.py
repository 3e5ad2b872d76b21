"""
Pretraining: token bins -> GPT (model.py) -> out_dir/ckpt.pt, the tokenizer, metrics.jsonl.

    python train.py --preset=tiny                         # the quick start: CPU, no download, minutes
    python train.py --preset=parchment_166m               # one GPU
    python train.py --preset=tiny --init_from=resume      # continue out_dir exactly where it stopped
    torchrun --standalone --nproc_per_node=8 train.py --preset=parchment_166m
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 --nproc_per_node=8 \
        train.py --preset=parchment_166m                  # and --node_rank=1 on the second machine

From a notebook: `import train; train.configure(preset="tiny", max_iters=50); train.main()`.
sft.py imports the pieces below (setup_device, configure_optimizer, get_lr, train, load_checkpoint)
rather than writing a second loop.
"""

import errno
import functools
import json
import math
import os
import pickle
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import configurator
import data
import hf
from configurator import UserError
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# config: nanoGPT's names where nanoGPT has one; presets in config/ set the rest

preset = ""
out_dir = "out/run"
init_from = "scratch"       # "scratch" | "resume" (continue out_dir) | a checkpoint dir (a new stage, fresh optimizer) | hf:PATH_OR_REPO
dataset = "stdlib_python"   # a folder under data_dir, or a weighted mixture "code:0.6,starcoder:0.4" (card 002)
data_dir = "data"
tokenizer = "bpe"           # for bins train.py prepares itself (data.py's key): bpe, a tiktoken name, hf:REPO or a path
data_order = "random"       # "random" windows (nanoGPT) | "sequential" (card 000's best-first curriculum)
batch_size = 12             # micro-batch per process; tokens/step = batch_size * block_size * accumulation * processes
block_size = 1024
gradient_accumulation_steps = 1
max_iters = 5000
eval_interval = 250
eval_iters = 50
log_interval = 10
eval_only = False
always_save_checkpoint = True   # save at every evaluation, not only when val loss improves
# optimizer and schedule
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 100
lr_decay_iters = 0          # 0 means max_iters
lr_schedule = "cosine"      # "cosine" | "linear" | "constant" | "wsd" (constant, then a linear warmdown: nanochat)
warmdown_frac = 0.2         # wsd: the last fraction of lr_decay_iters spent decaying
weight_decay = 0.1          # on 2-D tensors only
beta1 = 0.9
beta2 = 0.95
adam_eps = 1e-8
muon_lr = 0.0               # > 0: Muon for the matrices inside the blocks at this peak LR (nanochat: 0.02)
grad_clip = 1.0             # 0 disables clipping
# grad-skip guard (card 001's "gradient skip blocks")
grad_skip_factor = 10.0     # skip a step whose grad norm exceeds this multiple of the recent median; 0 disables
grad_skip_window = 50       # how many recent accepted steps the median looks at
max_skips_in_row = 20       # then stop with a saved checkpoint: the run is diverging
# system
device = "auto"             # "auto" | "cpu" | "cuda" | "cuda:1" | "mps"
dtype = "auto"              # "auto" | "float32" | "bfloat16" | "float16" (fp16 adds a GradScaler: card 001's T4 path)
compile = False
activation_checkpointing = False
seed = 1337
# logging
wandb_log = False
wandb_project = "small-lm"
wandb_run_name = ""
sample_prompt = ""          # if set, print a sample from the final model
sample_tokens = 120
model_args = {}             # architecture flags (GPTConfig fields), set by --preset and --key=value


def configure(**overrides):
    """For notebooks: train.configure(preset="tiny", max_iters=50), then train.main()."""
    return configurator.configure(globals(), [], **overrides)

# -----------------------------------------------------------------------------
# setup: processes, device, precision


def init_distributed():
    """(ddp, rank, local_rank, world_size); torchrun sets RANK and WORLD_SIZE."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False, 0, 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size()


def setup_device(device="auto", dtype="auto", local_rank=0):
    """(device, dtype, autocast context, GradScaler). bf16 where the hardware has it, else fp16 with a scaler."""
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else (
            "mps" if torch.backends.mps.is_available() else "cpu")
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"device={device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device={device} but PyTorch sees no Apple GPU (MPS); use --device=cpu (or auto)")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device={device} but PyTorch sees no CUDA GPU; use --device=cpu (or auto)")
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores; bf16 runs are unaffected
        torch.backends.cudnn.allow_tf32 = True
    chosen = dtype == "auto"
    if chosen:
        if kind == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        elif kind == "mps":
            dtype = "bfloat16"  # card 004: mixed bf16/fp32 on an M2
        else:
            dtype = "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"dtype={dtype!r} is not one of auto, float32, bfloat16, float16")
    ctx = nullcontext()
    if dtype != "float32":
        try:
            ctx = torch.autocast(device_type=kind, dtype=getattr(torch, dtype))
        except RuntimeError as e:
            if not chosen:
                raise UserError(f"{dtype} autocast is not supported on {device} ({e}); use --dtype=float32")
            print(f"note: {dtype} autocast is not supported on {device} in this PyTorch; training in float32")
            dtype = "float32"  # older PyTorch on MPS: autocast only where supported (RECIPES.md, card 004)
    scaler = torch.amp.GradScaler(kind, enabled=dtype == "float16")
    return device, dtype, ctx, scaler


class System(NamedTuple):
    """Where this process runs and in what precision: setup()'s result."""
    ddp: bool
    rank: int
    local_rank: int
    world_size: int
    device: str
    dtype: str      # float32, bfloat16 or float16, as chosen
    ctx: object     # autocast to dtype; nothing for float32
    scaler: object  # a torch.amp.GradScaler, active for float16 only


def setup(cfg):
    """Once per run, before any data or model: the processes joined (torchrun), the device and precision chosen."""
    ddp, rank, local_rank, world_size = init_distributed()
    return System(ddp, rank, local_rank, world_size, *setup_device(cfg["device"], cfg["dtype"], local_rank))


def configure_optimizer(model, weight_decay, learning_rate, betas, eps, device, muon_lr=0.0):
    """AdamW with weight decay on matrices and embeddings only; norms and biases are not decayed.
    With muon_lr > 0 the matrices inside the blocks move to Muon instead (nanochat, card 004)."""
    params = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2] if muon_lr else []
    in_muon = {id(p) for p in matrices}
    groups = [{"params": [p for p in params if p.dim() >= 2 and id(p) not in in_muon], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = device.startswith("cuda")  # one kernel for all tensors; foreach (the default) elsewhere
    adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=fused)
    if not matrices:
        return adamw
    return Optimizers(adamw, Muon(matrices, lr=muon_lr, lr_scale=muon_lr / learning_rate))


def orthogonalize(G, steps=5):
    """The nearest semi-orthogonal matrix to G, approximately: a quintic Newton-Schulz iteration whose
    coefficients (3.4445, -4.7750, 2.0315) Keller Jordan tuned for speed over exactness (Muon, 2024)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = G.size(0) > G.size(1)
    X = G.bfloat16().T if tall else G.bfloat16()
    X = X / (X.norm() + 1e-7)  # singular values into [0, 1], where the iteration converges
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if tall else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum SGD whose update for each weight matrix is orthogonalized: every direction of the
    matrix moves by the same amount, however skewed the raw gradient is."""

    def __init__(self, params, lr=0.02, momentum=0.95, lr_scale=1.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "lr_scale": lr_scale})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - group["momentum"])
                # Nesterov; a fused weight (attention's [q | k | v]) is orthogonalized block by block, in place
                rows = getattr(p, "row_blocks", p.size(0))
                for w, g in zip(p.split(rows), p.grad.lerp(buf, group["momentum"]).split(rows)):
                    w.add_(orthogonalize(g), alpha=-group["lr"] * max(1.0, g.size(0) / g.size(1)) ** 0.5)


class Optimizers:
    """Two optimizers stepped as one, so the loop, the GradScaler and checkpoints see one object."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers
        self.state = {}  # GradScaler keys its bookkeeping by id(optimizer), never reads this

    @property
    def param_groups(self):  # read anew: load_state_dict replaces each optimizer's group dicts, and the loop sets lr
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self):
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none=True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, sd):
        for o, s in zip(self.optimizers, sd["optimizers"]):
            o.load_state_dict(s)


def fuse_qkv_state(saved, optimizer, model):
    """An optimizer state saved before attention's q_proj and kv_proj became one qkv weight (model.Attention): each
    saved parameter list held q_proj's entry, then kv_proj's, where qkv's is now; their moments join along the
    rows as the weights do, so a run from before resumes where it was."""
    names = {id(p): n for n, p in model.named_parameters()}
    many = isinstance(optimizer, Optimizers)
    fused = []
    for opt, sd in zip(optimizer.optimizers if many else [optimizer], saved["optimizers"] if many else [saved]):
        old = iter([i for g in sd["param_groups"] for i in g["params"]])
        state, groups, new = {}, [], 0
        for group, saved_group in zip(opt.param_groups, sd["param_groups"]):
            for p in group["params"]:
                parts = [sd["state"][i] for i in ([next(old), next(old)] if ".attn.qkv." in names[id(p)] else [next(old)])
                         if i in sd["state"]]
                if parts:
                    state[new] = {k: torch.cat([s[k] for s in parts]) if torch.is_tensor(v) and v.dim() else v
                                  for k, v in parts[0].items()}
                new += 1
            groups.append({**saved_group, "params": list(range(new - len(group["params"]), new))})
        fused.append({"state": state, "param_groups": groups})
    return {"optimizers": fused} if many else fused[0]


def get_lr(it, cfg):
    """The learning rate at step it, case by case as nanoGPT's get_lr, with the schedules the cards use."""
    lr, low, warm, schedule = cfg["learning_rate"], cfg["min_lr"], cfg["warmup_iters"], cfg["lr_schedule"]
    end = cfg["lr_decay_iters"] or cfg["max_iters"]
    # 1) linear warmup for warmup_iters steps
    if it < warm:
        return lr * (it + 1) / (warm + 1)
    # 2) constant: the peak until the end
    if schedule == "constant":
        return lr
    # 3) past the end of the decay: min_lr
    if it >= end:
        return low
    # 4) wsd (nanochat, card 004): the peak, then a linear warmdown to min_lr over the last warmdown_frac
    if schedule == "wsd":
        start = end - int(cfg["warmdown_frac"] * end)
        return lr if it < start else low + (lr - low) * (end - it) / max(1, end - start)
    # 5) in between, linear or cosine from the peak down to min_lr
    progress = (it - warm) / max(1, end - warm)
    if schedule == "linear":
        return lr + (low - lr) * progress
    if schedule == "cosine":
        return low + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - low)
    raise UserError(f"lr_schedule={schedule!r} is not one of cosine, linear, constant, wsd")

# -----------------------------------------------------------------------------
# checkpoints: plain containers, atomic writes, loadable with weights_only=True


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
    """Write to a temp file, then rename: a crash mid-save leaves the previous ckpt.pt intact."""
    path = Path(out_dir) / "ckpt.pt"
    tmp = path.with_suffix(".pt.tmp")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as "RuntimeError: ... file write failed"
        tmp.unlink(missing_ok=True)
        need = sum(v.numel() * v.element_size() for v in _tensors(ckpt))
        free = shutil.disk_usage(out_dir).free
        if getattr(e, "errno", None) != errno.ENOSPC and free > need:
            raise
        raise UserError(f"the disk holding {Path(out_dir).resolve()} is full: {free / 2**20:,.1f} MiB free, the checkpoint "
                        f"needs about {need / 2**20:,.1f} MiB; free space there and resume (the previous ckpt.pt is intact)") from None


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
        raise UserError(f"{path}: the weights do not match the model config stored beside them "
                        f"({str(e).splitlines()[1].strip()[:100] if len(str(e).splitlines()) > 1 else e}); the checkpoint is corrupt") from None
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    enc = data.load_tokenizer(str(folder))
    name, want = checkpoint_tokenizer(ckpt)
    if want and data.tokenizer_hash(enc) != want:
        raise UserError(f"{folder}'s tokenizer ({enc.name}, hash {data.tokenizer_hash(enc)}) is not the one the checkpoint "
                        f"was trained with ({name}, hash {want}); put that run's tokenizer.json and tokenizer.tiktoken back")
    if enc.n_vocab > config.vocab_size:
        raise UserError(f"{folder}'s tokenizer {enc.name} has {enc.n_vocab:,} ids but the model only "
                        f"{config.vocab_size:,}: they do not belong together")
    return model.to(device).eval(), enc, ckpt


def checkpoint_tokenizer(ckpt, folder=None):
    """(name, hash) of the tokenizer a checkpoint was trained with: recorded in it, or for older checkpoints
    the one tokenizer.json beside it names; (None, None) when neither says."""
    if ckpt.get("tokenizer"):
        return ckpt["tokenizer"]["name"], ckpt["tokenizer"]["hash"]
    path = Path(folder or "") / "tokenizer.json"
    if folder and path.is_file():
        info = data._read_json(path)
        return info.get("name"), info.get("hash")
    return None, None

# -----------------------------------------------------------------------------
# the loop


@torch.no_grad()
def estimate_loss(model, loaders, eval_iters, ctx, ddp):
    """Mean loss over eval_iters batches of each split, averaged across processes."""
    out = {}
    model.eval()
    for split, loader in loaders.items():
        # the train split is measured on the batches about to be trained on, then rewound: an
        # evaluation must not skip training data (a sequential curriculum or an SFT epoch would lose it)
        position = loader.state_dict() if split == "train" else None
        losses = torch.zeros(eval_iters, device=next(model.parameters()).device)
        for k in range(eval_iters):
            x, y = loader.next_batch()
            with ctx:
                _, loss = model(x, y)
            losses[k] = loss
        if position is not None:
            loader.load_state_dict(position)
        mean = losses.mean()
        if ddp:
            dist.all_reduce(mean, op=dist.ReduceOp.AVG)
        out[split] = mean.item()
    model.train()
    return out


def gather(obj, ddp, world_size):
    """Every process's obj as a list (rank order): each rank's loader and RNG state go into the checkpoint."""
    if not ddp:
        return [obj]
    objs = [None] * world_size
    dist.all_gather_object(objs, obj)
    return objs


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


@stop_on_ctrl_c
def train(cfg, model, enc, loaders, extra_ckpt=None, resume=None, system=None):
    """Runs the training loop described by cfg on model; returns a summary dict. sft.py runs it too.
    system is setup(cfg)'s result where the caller has one (main), else it is made here."""
    configurator.check_ranges(cfg)  # sft.py and notebooks hand in dicts of their own
    s = system or setup(cfg)
    run = start_run(cfg, model, enc, loaders, s, resume, extra_ckpt)
    model, p, optimizer, scaler = run.model, run.progress, run.optimizer, s.scaler
    accum = cfg["gradient_accumulation_steps"]
    t_start = time.time()
    just_resumed = resume is not None
    model.train()
    while True:
        lr = get_lr(p.iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        at_end = p.iter_num >= cfg["max_iters"]
        if just_resumed and at_end:  # nothing left to train: report the final evaluation the checkpoint holds
            p.losses = resume.get("losses") or {"val": resume.get("val_loss")}
            report(run, f"{run.out_dir} already reached max_iters={cfg['max_iters']}: "
                        f"final val loss {p.losses.get('val')}")
        if (p.iter_num % cfg["eval_interval"] == 0 or at_end) and not just_resumed:
            p.losses = estimate_loss(model, {k: loaders[k] for k in ("train", "val") if k in loaders},
                                     cfg["eval_iters"], s.ctx, s.ddp)
            val = p.losses.get("val", float("inf"))
            improved, p.best_val_loss = val < p.best_val_loss, min(p.best_val_loss, val)
            report(run, f"eval {p.iter_num}: train loss {p.losses['train']:.4f}, "
                        f"val loss {p.losses.get('val', float('nan')):.4f}",
                   {"iter": p.iter_num, "tokens": p.tokens_seen, "train_loss": p.losses["train"],
                    "val_loss": p.losses.get("val")})
            if (p.iter_num > 0 or cfg["max_iters"] == 0) and (improved or cfg["always_save_checkpoint"] or at_end):
                checkpoint(run, p.losses.get("val"))
        just_resumed = False
        if at_end or cfg["eval_only"]:
            break
        if STOP_REQUESTED:
            checkpoint(run, p.losses.get("val"))
            print(f"\ninterrupted at step {p.iter_num}: checkpoint saved in {run.out_dir}; resume with the same command "
                  f"plus --init_from=resume", file=sys.stderr)
            raise SystemExit(130)

        # one optimizer step: forward under autocast, scaled backward, unscale, clip, guard, step, update
        t0 = time.time()
        loss_sum = torch.zeros((), device=s.device)
        step_tokens = 0  # counted from the batches: padded SFT batches are shorter than block_size
        for micro in range(accum):
            x, y = loaders["train"].next_batch()
            step_tokens += x.numel() * s.world_size
            # gradients are all-reduced only on the last micro-step (DDP no_sync on the others)
            with model.no_sync() if s.ddp and micro < accum - 1 else nullcontext():
                with s.ctx:
                    _, loss = model(x, y)
                    loss = loss / accum
                scaler.scale(loss).backward()
            loss_sum += loss.detach()
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), cfg["grad_clip"] or float("inf"))
        if s.ddp:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        loss_val, norm_val = loss_sum.item(), norm.item()  # the one host sync per step: the guard needs the numbers
        # fp16: inf/NaN gradients with a finite loss are the GradScaler's overflow; it skips the step and lowers
        # its scale (its job, counted apart): the guard's divergence count is for the model's own failures
        overflow = scaler.is_enabled() and math.isfinite(loss_val) and not math.isfinite(norm_val)
        reason = None if overflow else skip_reason(loss_val, norm_val, p.recent_grad_norms, cfg["grad_skip_factor"])
        if overflow:
            p.scaler_skips += 1
            report(run, f"iter {p.iter_num}: fp16 overflow, the GradScaler skipped the step and lowers its scale "
                        f"({p.scaler_skips} so far)", {"iter": p.iter_num, "scaler_skip": p.scaler_skips})
        elif reason is None:
            scaler.step(optimizer)
            p.recent_grad_norms = (p.recent_grad_norms + [norm_val])[-cfg["grad_skip_window"]:]
            p.skips_in_row = 0
        else:
            p.skipped_total += 1
            p.skips_in_row += 1
            report(run, f"iter {p.iter_num}: skipped step ({reason}); {p.skipped_total} skipped so far",
                   {"iter": p.iter_num, "skipped_step": reason, "skipped": p.skipped_total})
        scaler.update()  # with fp16 an overflow lowers the scale; a no-op otherwise
        optimizer.zero_grad(set_to_none=True)
        p.iter_num += 1
        p.tokens_seen += step_tokens
        if p.skips_in_row >= cfg["max_skips_in_row"]:
            checkpoint(run, None)
            raise UserError(f"{p.skips_in_row} steps in a row were skipped ({reason}); the run is diverging: "
                            f"resume from {run.out_dir} with a lower learning_rate or a higher grad_skip_factor")
        if p.iter_num % cfg["log_interval"] == 0:
            log_step(run, lr, loss_val, norm_val, step_tokens, time.time() - t0)
    return finish_run(run, time.time() - t_start)


def start_run(cfg, model, enc, loaders, s, resume, extra_ckpt):
    """What the loop holds (a namespace): the model on its device, compiled and wrapped for DDP; the optimizer;
    the progress, restored from resume with the optimizer, scaler, data positions and RNG; out_dir locked, with
    the tokenizer and metrics.jsonl; the run's size printed."""
    out_dir = Path(cfg["out_dir"])
    raw_model = model.to(s.device)
    raw_model.grad_checkpointing = cfg.get("activation_checkpointing", False)
    optimizer = configure_optimizer(raw_model, cfg["weight_decay"], cfg["learning_rate"],
                                    (cfg["beta1"], cfg["beta2"]), cfg["adam_eps"], s.device, cfg.get("muon_lr", 0.0))
    progress = Progress()
    if resume is not None:
        if len(resume["ranks"]) != s.world_size:  # each rank's data position and RNG belong to that rank alone
            raise UserError(f"{out_dir} was saved by {len(resume['ranks'])} process(es) and this run has {s.world_size}: "
                            f"resume with {len(resume['ranks'])} (torchrun --nproc_per_node), or start a new stage "
                            f"with --init_from={out_dir} --out_dir=NEW")
        if s.rank == 0:
            report_changes(resume.get("config", {}), cfg, resume["iter_num"])
        if any(".attn.q_proj." in k for k in resume["model"]):  # saved before q, k and v were one weight
            resume["optimizer"] = fuse_qkv_state(resume["optimizer"], optimizer, raw_model)
        optimizer.load_state_dict(resume["optimizer"])
        s.scaler.load_state_dict(resume["scaler"])
        saved = [f.name for f in fields(Progress) if f.name in resume and f.name != "losses"]
        progress = Progress(**{name: resume[name] for name in saved})
        progress.recent_grad_norms = list(progress.recent_grad_norms)
        mine = resume["ranks"][s.rank]
        for split, state in mine["loaders"].items():
            loaders[split].load_state_dict(state)
        set_rng_state(mine["rng"])
    model = torch.compile(raw_model) if cfg["compile"] else raw_model
    if s.ddp:
        model = DDP(model, device_ids=[s.local_rank] if s.device.startswith("cuda") else None)
    tokens_per_step = cfg["batch_size"] * cfg["block_size"] * cfg["gradient_accumulation_steps"] * s.world_size
    run = SimpleNamespace(cfg=cfg, model=model, raw_model=raw_model, optimizer=optimizer, progress=progress,
                          loaders=loaders, system=s, out_dir=out_dir, extra_ckpt=extra_ckpt or {}, metrics=None,
                          wandb=None, tokenizer={"name": enc.name, "hash": data.tokenizer_hash(enc)},  # checked at every load
                          tokens_per_step=tokens_per_step,
                          device_name=torch.cuda.get_device_name(s.device) if s.device.startswith("cuda") else s.device)
    if s.rank != 0:
        return run
    data.lock_folder(out_dir)  # a second run on this out_dir would garble it: it is refused, naming this one
    if checkpoint_tokenizer({}, out_dir)[1] != run.tokenizer["hash"]:  # unchanged on resume: never rewritten
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
          f"{s.dtype}, {s.world_size} process(es) | {run.tokens_per_step:,} tokens/step, {cfg['max_iters']:,} steps = "
          f"{run.tokens_per_step * cfg['max_iters'] / 1e6:,.1f}M tokens, {flops:.2e} FLOPs planned")
    return run


def skip_reason(loss, norm, recent_norms, factor):
    """Why the guard skips this step, or None to take it (card 001's "gradient skip blocks"): a non-finite loss
    or gradient, or a grad norm factor times the median of the recent accepted ones (after 10 of them)."""
    if not math.isfinite(loss):
        return "non-finite loss"
    if not math.isfinite(norm):
        return "non-finite gradient"
    median = float(np.median(recent_norms)) if len(recent_norms) >= 10 else None
    if factor and median and norm > factor * median:
        return f"grad norm {norm:.3g} > {factor}x median {median:.3g}"
    return None


def checkpoint(run, val_loss):
    """Saves the whole run to out_dir/ckpt.pt: weights, optimizer, scaler, progress, and every rank's data
    position and RNG, so that a resume continues exactly."""
    state = run.raw_model.state_dict()
    # a NaN in the weights would replace the last good checkpoint with one nothing can resume or sample from
    if not bool(torch.stack([torch.isfinite(v).all() for v in state.values() if v.is_floating_point()]).all()):
        raise UserError(f"iter {run.progress.iter_num}: the weights hold NaN or inf; not saving them over the last good "
                        f"checkpoint in {run.out_dir}: resume from it with a lower learning_rate")
    s = run.system
    ranks = gather({"loaders": {k: loader.state_dict() for k, loader in run.loaders.items()}, "rng": rng_state()},
                   s.ddp, s.world_size)
    if s.rank == 0:
        save_checkpoint(run.out_dir, {
            "model": state, "optimizer": run.optimizer.state_dict(), "scaler": s.scaler.state_dict(),
            "model_config": asdict(run.raw_model.config), "config": run.cfg, **asdict(run.progress),
            "val_loss": val_loss, "ranks": ranks, "tokenizer": run.tokenizer, "chat_template": None, **run.extra_ckpt})


def report(run, text, row=None):
    """A line for the console and a row for metrics.jsonl (and wandb), from the first process only."""
    if run.system.rank != 0:
        return
    print(text)
    if row is not None:
        log_row(run.metrics, run.wandb, row)


def log_step(run, lr, loss, norm, step_tokens, seconds):
    tok_s = step_tokens / seconds
    mfu = run.raw_model.estimate_mfu(tok_s / run.system.world_size, run.device_name, run.cfg["block_size"])
    # peak GPU memory since the start: what decides the largest micro-batch that fits
    dev = run.system.device
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.startswith("cuda") else None
    mfu_text = f", mfu {mfu * 100:.1f}%" if mfu is not None else ""
    mem_text = f", peak mem {mem:.1f} GiB" if mem is not None else ""
    p = run.progress
    report(run, f"iter {p.iter_num}: loss {loss:.4f}, lr {lr:.2e}, norm {norm:.2f}, {seconds * 1000:.1f}ms, "
                f"{tok_s:,.0f} tok/s{mfu_text}{mem_text}, skipped {p.skipped_total}",
           {"iter": p.iter_num, "tokens": p.tokens_seen, "loss": loss, "lr": lr, "grad_norm": norm,
            "ms": seconds * 1000, "tokens_per_s": tok_s, "mfu": mfu, "peak_mem_gib": mem, "skipped": p.skipped_total})


def finish_run(run, wall):
    """The summary train() returns (and metrics.jsonl's last row); out_dir unlocked."""
    p, s = run.progress, run.system
    summary = {"iters": p.iter_num, "tokens": p.tokens_seen, "train_loss": p.losses.get("train"),
               "val_loss": p.losses.get("val"), "wall_s": wall, "device_hours": wall * s.world_size / 3600,
               "skipped": p.skipped_total, "scaler_skips": p.scaler_skips}
    if s.rank == 0:
        print(f"done: {p.iter_num} steps, {p.tokens_seen / 1e6:,.2f}M tokens, {wall:.1f}s wall, "
              f"{summary['device_hours']:.3f} device-hours, {p.skipped_total} skipped steps; checkpoint in {run.out_dir}")
        log_row(run.metrics, run.wandb, {"summary": summary})
        run.metrics.close()
        data.unlock_folder(run.out_dir)
    return summary


# a resumed run cannot change these: its random streams, its data and its model are the checkpoint's
FIXED_AT_RESUME = ("seed", "dataset", "data_order")


def report_changes(old, new, iter_num):
    """Says which settings differ from the checkpoint's (they take effect now); refuses those that cannot."""
    changed = {k: (old[k], new[k]) for k in new if k in old and old[k] != new[k] and k != "init_from"}
    fixed = [f"{k}={b!r} (the checkpoint's is {a!r})" for k, (a, b) in changed.items() if k in FIXED_AT_RESUME]
    if fixed:
        raise UserError(f"a resumed run keeps its {', '.join(FIXED_AT_RESUME)}: {'; '.join(fixed)}; drop the "
                        "override, or start a new stage with --init_from=OUT_DIR --out_dir=NEW")
    if changed:
        print(f"resume: changed since the checkpoint, in effect from iter {iter_num}: "
              + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items())))


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
    data.write_atomic(path, "".join(rows).encode())  # rewritten whole, then renamed: a kill now loses no row
    return open(path, "a", buffering=1)


def log_row(metrics, wandb, row):
    metrics.write(json.dumps(row) + "\n")
    if wandb is not None:
        wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))})

# -----------------------------------------------------------------------------
# main: data, model, loop


def prepare_loaders(cfg, rank, world_size, device):
    """The train and val loaders over data_dir/<dataset> (or a weighted mixture), preparing missing bins."""
    sources = []
    recipe = configurator.load_preset(cfg["preset"]) if cfg["preset"] else {}
    for name, folder, weight in data.dataset_sources(cfg["dataset"], cfg["data_dir"]):
        # the recipe's data settings, with this run's overrides of the keys both share (vocab_size, seed)
        wanted = {**recipe, **cfg, "dataset": name, "data_name": ""}
        if (folder / "meta.json").exists() and recipe:
            # bins another recipe made (another vocabulary) must not be trained on without a word (issue 11)
            keys = [k for k in data.TOKENIZER_KEYS if k in recipe]
            differ = data.differing_settings(data.read_meta(folder).get("config", {}), data._config(wanted), keys)
            if differ:
                raise UserError(f"{folder} was prepared with other tokenizer settings than --preset={cfg['preset']} "
                                f"({differ}); keep both: data.py --preset={cfg['preset']} --data_name=NEW, then "
                                f"--dataset=NEW here")
        if not (folder / "meta.json").exists():
            if rank == 0:
                print(f"{folder} has no bins yet: preparing them with data.py")
                data.prepare(wanted)
            if world_size > 1:
                dist.barrier()
        sources.append((str(folder), weight))
    loaders = {split: data.Loader(sources, split, cfg["batch_size"], cfg["block_size"],
                                  order=cfg["data_order"] if split == "train" else "random",
                                  seed=cfg["seed"], rank=rank, world_size=world_size, device=device)
               for split in ("train", "val")}
    enc = data.load_tokenizer(sources[0][0])
    return loaders, enc


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


def check_architecture(saved, source):
    """A run continued from a checkpoint has its architecture: a flag set to another value is refused, not ignored."""
    # dropout and block_size may change between stages; pad_vocab_multiple is speed, not architecture: a run keeps
    # the padding it started with (a parchment_166m run from before the preset padded resumes unpadded)
    differ = [f"{k}={cfg_value!r} (it has {saved[k]!r})" for k, cfg_value in model_args.items()
              if k in saved and k not in ("dropout", "block_size", "pad_vocab_multiple") and saved[k] != cfg_value]
    if differ:
        raise UserError(f"{source} was trained with another architecture: {'; '.join(differ)}; drop these flags "
                        "(a checkpoint's architecture cannot change) or train from scratch into a new --out_dir")


def init_model(cfg, enc, loaders, dev):
    """(model, tokenizer, checkpoint to resume or None) as init_from says, checked against the data and memory."""
    resume = None
    if cfg["init_from"] == "scratch":
        margs = {**model_args, "block_size": cfg["block_size"]}
        margs.setdefault("vocab_size", loaders["train"].vocab_size)
        check_memory(GPTConfig(**margs), cfg, dev)  # before the weights are allocated
        model = GPT(GPTConfig(**margs))
        name, tok_hash = enc.name, data.tokenizer_hash(enc)
    elif cfg["init_from"].startswith("hf:"):  # a Hugging Face folder or hub repo (hf.py); the data must use its tokenizer
        model, enc, _ = hf.load_hf(cfg["init_from"][3:], **{k: v for k, v in model_args.items() if k == "dropout"})
        name, tok_hash = enc.name, data.tokenizer_hash(enc)
    elif cfg["init_from"] == "resume":
        resume = read_checkpoint(cfg["out_dir"])
        check_architecture(resume["model_config"], cfg["out_dir"])
        model = GPT(GPTConfig.from_dict(resume["model_config"]))
        model.load_state_dict(resume["model"])
        name, tok_hash = checkpoint_tokenizer(resume, cfg["out_dir"])
    else:  # a new stage from an earlier run: its weights, fresh optimizer and schedule (cards 002 and 004)
        model, stage_enc, stage = load_checkpoint(cfg["init_from"], "cpu", **{k: v for k, v in model_args.items()
                                                                               if k == "dropout"})
        check_architecture(stage["model_config"], cfg["init_from"])
        name, tok_hash = stage_enc.name, data.tokenizer_hash(stage_enc)
    check_memory(model.config, cfg, dev)
    # the checkpoint's tokenizer against the data's: re-prepared bins or a later stage's bins may hold another one
    data.check_meta(loaders["train"].meta, model.config.vocab_size, tok_hash, name)
    if cfg["block_size"] > model.config.block_size:
        raise UserError(f"block_size={cfg['block_size']} is longer than the model's context "
                        f"({model.config.block_size}); lower --block_size")
    return model, enc, resume


def main():
    cfg = configurator.effective_config(globals())  # every value checked against configurator.RANGES
    s = setup(cfg)
    if s.rank == 0:
        print("config:")
        configurator.print_config(cfg)
    torch.manual_seed(cfg["seed"] + s.rank)
    random.seed(cfg["seed"] + s.rank)
    np.random.seed(cfg["seed"] + s.rank)
    loaders, enc = prepare_loaders(cfg, s.rank, s.world_size, s.device)
    model, enc, resume = init_model(cfg, enc, loaders, s.device)
    summary = train(cfg, model, enc, loaders, resume=resume, system=s)
    if cfg["sample_prompt"] and s.rank == 0:
        # one look at what the model learned; sample.py is the full sampler (streaming, chat, FIM)
        ids = torch.tensor([data.start_ids(enc) + enc.encode_ordinary(cfg["sample_prompt"])], device=s.device)
        gen = torch.Generator(device=s.device).manual_seed(cfg["seed"])
        stops = data.end_ids(enc)
        new = [t.item() for t in model.eval().generate(ids, cfg["sample_tokens"], temperature=0.8, top_k=50,
                                                       stop_tokens=stops, generator=gen)]
        print("sample:\n" + cfg["sample_prompt"] + enc.decode(new[:-1] if new and new[-1] in stops else new))
    if s.ddp:
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    configurator.configure(globals())
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C before the loop began (preparing data, loading): nothing to save yet
        raise SystemExit(130)
