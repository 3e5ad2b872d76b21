"""
Pretraining: token bins -> GPT (model.py) -> out_dir/ckpt.pt, the tokenizer, metrics.jsonl.

    python train.py --preset=tiny                         # the quick start: CPU, no download, minutes
    python train.py --preset=parchment_166m               # one GPU
    python train.py --preset=tiny --init_from=resume      # continue out_dir exactly where it stopped
    torchrun --standalone --nproc_per_node=8 train.py --preset=parchment_166m
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 --nproc_per_node=8 \
        train.py --preset=parchment_166m                  # and --node_rank=1 on the second machine

From a notebook: `import train; train.configure(preset="tiny", max_iters=50); train.main()`.
sft.py imports the pieces below (setup, configure_optimizer, get_lr, train) rather than writing a second loop.
What keeps a run safe (checkpoint files, resume checks, Ctrl-C) is checkpoint.py's; the loop calls it in one line.
"""

import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import fields
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint
import configurator
import data
import hf
from checkpoint import STOP_REQUESTED, finish_run, report, save_run, start_run
from configurator import UserError
from model import GPT, GPTConfig
from muon import Muon, Optimizers

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
# the model: every field of model.GPTConfig (its comments say what each means), set here as nanoGPT does
vocab_size = 0              # 0: the size of the data's tokenizer
n_layer = 12
n_embd = 768
n_head = 12
n_kv_head = 0               # 0 means n_head; fewer is grouped-query attention
head_dim = 0                # 0 means n_embd // n_head
ffn_hidden = 0              # 0: the MLP kind's default width
pos = "learned"             # "learned" | "rope"
rope_theta = 10000.0
rope_scaling = 1.0          # Llama 3's RoPE frequency scaling; 1 is off
rope_low_freq_factor = 1.0
rope_high_freq_factor = 4.0
rope_original_context = 8192
norm = "layernorm"          # "layernorm" | "rmsnorm"
norm_affine = True
norm_eps = 1e-5
mlp = "gelu"                # "gelu" | "swiglu" | "relu2"
qk_norm = "none"            # "none" | "before_rope" | "after_rope"
tie_embeddings = True
bias = True
qkv_bias = False            # a bias on q, k, v alone (Qwen2)
dropout = 0.0
init = "scaled_residual"    # "scaled_residual" | "zero_out"
init_std = 0.02
emb_init_std = 0.0
logit_softcap = 0.0
embed_norm = False
pad_vocab_multiple = 1
# and data.py's settings (special_tokens, filters, fim_rate, ...), handed on to the bins train.py prepares itself
PASSES_ON = {k: v for k, v in data.DEFAULTS.items() if k != "data_name"}


def configure(**overrides):
    """For notebooks: train.configure(preset="tiny", max_iters=50), then train.main()."""
    return configurator.configure(globals(), [], cumulative=True, **overrides)


def model_flags(cfg):
    """The GPTConfig fields among cfg's settings."""
    return {f.name: cfg[f.name] for f in fields(GPTConfig) if f.name in cfg}

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
    assert dtype in ("float32", "bfloat16", "float16"), dtype  # configurator.CHOICES
    ctx = nullcontext()
    if dtype != "float32":
        try:
            ctx = torch.autocast(device_type=kind, dtype=getattr(torch, dtype))
        except RuntimeError as e:
            if not chosen:
                raise UserError(f"{dtype} autocast is not supported on {device} ({e}); use --dtype=float32")
            print(f"note: {dtype} autocast is not supported on {device} in this PyTorch; training in float32")
            dtype = "float32"  # older PyTorch on MPS: autocast only where supported (card 004)
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
    qkv = {id(block.attn.qkv.weight): model.config.qkv_rows for block in model.blocks}  # q, k, v orthogonalized apart
    return Optimizers(adamw, Muon(matrices, lr=muon_lr, lr_scale=muon_lr / learning_rate, row_blocks=qkv))


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
    assert schedule == "cosine", schedule  # configurator.CHOICES admits no other
    return low + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - low)

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


def log_step(run, lr, loss, norm, step_tokens, seconds):
    tok_s = step_tokens / seconds
    mfu = run.raw_model.estimate_mfu(tok_s / run.system.world_size, run.device_name, run.cfg["block_size"])
    # peak GPU memory since the start: what decides the largest micro-batch that fits
    dev = run.system.device
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.startswith("cuda") else None
    mfu_text = f", mfu {mfu * 100:.1f}%" if mfu is not None else ""
    mem_text = f", peak mem {mem:.1f} GiB" if mem is not None else ""
    progress = run.progress
    report(run, f"iter {progress.iter_num}: loss {loss:.4f}, lr {lr:.2e}, norm {norm:.2f}, {seconds * 1000:.1f}ms, "
                f"{tok_s:,.0f} tok/s{mfu_text}{mem_text}, skipped {progress.skipped_total}",
           {"iter": progress.iter_num, "tokens": progress.tokens_seen, "loss": loss, "lr": lr, "grad_norm": norm,
            "ms": seconds * 1000, "tokens_per_s": tok_s, "mfu": mfu, "peak_mem_gib": mem,
            "skipped": progress.skipped_total})


@checkpoint.stop_on_ctrl_c
def train(cfg, model, enc, loaders, extra_ckpt=None, resume=None, system=None):
    """Runs the training loop described by cfg on model; returns a summary dict. sft.py runs it too.
    system is setup(cfg)'s result where the caller has one (main), else it is made here."""
    configurator.check_ranges(cfg)  # sft.py and notebooks hand in dicts of their own
    system = system or setup(cfg)
    raw_model = model.to(system.device)
    raw_model.grad_checkpointing = cfg.get("activation_checkpointing", False)
    optimizer = configure_optimizer(raw_model, cfg["weight_decay"], cfg["learning_rate"], (cfg["beta1"], cfg["beta2"]),
                                    cfg["adam_eps"], system.device, cfg.get("muon_lr", 0.0))
    run = start_run(cfg, raw_model, optimizer, enc, loaders, system, resume, extra_ckpt)
    progress, scaler = run.progress, system.scaler
    model = torch.compile(raw_model) if cfg["compile"] else raw_model
    if system.ddp:
        model = DDP(model, device_ids=[system.local_rank] if system.device.startswith("cuda") else None)
    accum = cfg["gradient_accumulation_steps"]
    t_start = time.time()
    just_resumed = resume is not None
    model.train()
    while True:
        lr = get_lr(progress.iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        at_end = progress.iter_num >= cfg["max_iters"]
        if just_resumed and at_end:  # nothing left to train: report the final evaluation the checkpoint holds
            progress.losses = resume.get("losses") or {"val": resume.get("val_loss")}
            report(run, f"{run.out_dir} already reached max_iters={cfg['max_iters']}: "
                        f"final val loss {progress.losses.get('val')}")
        if (progress.iter_num % cfg["eval_interval"] == 0 or at_end) and not just_resumed:
            splits = {k: loaders[k] for k in ("train", "val") if k in loaders}
            progress.losses = estimate_loss(model, splits, cfg["eval_iters"], system.ctx, system.ddp)
            # nats per token -> bits per byte: comparable across tokenizers and with a file compressor
            per_byte = {k: getattr(loader, "tokens_per_byte", None) for k, loader in splits.items()}  # SFT's: none
            progress.losses.update({f"{k}_bpb": loss * per_byte[k] / math.log(2)
                                    for k, loss in list(progress.losses.items()) if per_byte[k]})
            val = progress.losses.get("val", float("inf"))
            improved, progress.best_val_loss = val < progress.best_val_loss, min(progress.best_val_loss, val)
            bpb_text = f" ({progress.losses['val_bpb']:.3f} bits per byte)" if "val_bpb" in progress.losses else ""
            compressors = getattr(splits.get("val"), "compressed_bpb", None) if progress.iter_num == 0 else None
            report(run, f"eval {progress.iter_num}: train loss {progress.losses['train']:.4f}, "
                        f"val loss {progress.losses.get('val', float('nan')):.4f}{bpb_text}",
                   {"iter": progress.iter_num, "tokens": progress.tokens_seen, "train_loss": progress.losses["train"],
                    "val_loss": progress.losses.get("val"), "train_bpb": progress.losses.get("train_bpb"),
                    "val_bpb": progress.losses.get("val_bpb"),
                    **({"compressors_bpb": compressors} if compressors else {})})
            worth_saving = improved or cfg["always_save_checkpoint"] or at_end
            if (progress.iter_num > 0 or cfg["max_iters"] == 0) and worth_saving:
                save_run(run, progress.losses.get("val"))
        just_resumed = False
        if at_end or cfg["eval_only"]:
            break
        if STOP_REQUESTED:
            save_run(run, progress.losses.get("val"))
            print(f"\ninterrupted at step {progress.iter_num}: checkpoint saved in {run.out_dir}; resume with the same "
                  "command plus --init_from=resume", file=sys.stderr)
            raise SystemExit(130)

        # one optimizer step: forward under autocast, scaled backward, unscale, clip, guard, step, update
        t0 = time.time()
        loss_sum = torch.zeros((), device=system.device)
        step_tokens = 0  # counted from the batches: padded SFT batches are shorter than block_size
        for micro in range(accum):
            x, y = loaders["train"].next_batch()
            step_tokens += x.numel() * system.world_size
            # gradients are all-reduced only on the last micro-step (DDP no_sync on the others)
            with model.no_sync() if system.ddp and micro < accum - 1 else nullcontext():
                with system.ctx:
                    _, loss = model(x, y)
                    loss = loss / accum
                scaler.scale(loss).backward()
            loss_sum += loss.detach()
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg["grad_clip"] or float("inf"))
        if system.ddp:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        loss_val, norm_val = loss_sum.item(), norm.item()  # the one host sync per step: the guard needs the numbers
        # fp16: inf/NaN gradients with a finite loss are the GradScaler's overflow; it skips the step and lowers
        # its scale (its job, counted apart): the guard's divergence count is for the model's own failures
        overflow = scaler.is_enabled() and math.isfinite(loss_val) and not math.isfinite(norm_val)
        reason = None if overflow else skip_reason(loss_val, norm_val, progress.recent_grad_norms,
                                                   cfg["grad_skip_factor"])
        if overflow:
            progress.scaler_skips += 1
            report(run, f"iter {progress.iter_num}: fp16 overflow, the GradScaler skipped the step and lowers its "
                        f"scale ({progress.scaler_skips} so far)",
                   {"iter": progress.iter_num, "scaler_skip": progress.scaler_skips})
        elif reason is None:
            scaler.step(optimizer)
            progress.recent_grad_norms = (progress.recent_grad_norms + [norm_val])[-cfg["grad_skip_window"]:]
            progress.skips_in_row = 0
        else:
            progress.skipped_total += 1
            progress.skips_in_row += 1
            report(run, f"iter {progress.iter_num}: skipped step ({reason}); {progress.skipped_total} skipped so far",
                   {"iter": progress.iter_num, "skipped_step": reason, "skipped": progress.skipped_total})
        scaler.update()  # with fp16 an overflow lowers the scale; a no-op otherwise
        optimizer.zero_grad(set_to_none=True)
        progress.iter_num += 1
        progress.tokens_seen += step_tokens
        if progress.skips_in_row >= cfg["max_skips_in_row"]:
            save_run(run, None)
            raise UserError(f"{progress.skips_in_row} steps in a row were skipped ({reason}); the run is diverging: "
                            f"resume from {run.out_dir} with a lower learning_rate or a higher grad_skip_factor")
        if progress.iter_num % cfg["log_interval"] == 0:
            log_step(run, lr, loss_val, norm_val, step_tokens, time.time() - t0)
    return finish_run(run, time.time() - t_start)


# -----------------------------------------------------------------------------
# main: data, model, loop


def prepare_loaders(cfg, rank, world_size, device, by_user=None):
    """The train and val loaders over data_dir/<dataset> (or a weighted mixture), preparing missing bins.

    Bins already there are trained on as they were prepared: their meta.json names the tokenizer. Only a data
    setting the user gave this run (by_user: configurator.given, never a preset's; None: all of cfg) that they
    disagree with is refused, with the data.py command that prepares bins to its liking beside them."""
    sources = []
    recipe = configurator.load_preset(cfg["preset"]) if cfg["preset"] else {}
    wishes = {k: v for k, v in (cfg if by_user is None else by_user).items()
              if k in data.CONFIG_KEYS and k not in ("dataset", "data_dir", "data_name")}
    for name, folder, weight in data.dataset_sources(cfg["dataset"], cfg["data_dir"]):
        # the recipe's data settings, with this run's: the keys both scripts share (vocab_size, seed) and data.py's
        wanted = {**recipe, **cfg, **wishes, "dataset": name, "data_name": ""}
        if not wanted["vocab_size"]:  # 0 (the model takes the data's size): data.py's own default then
            del wanted["vocab_size"]
        if (folder / "meta.json").exists():
            # the run's seed is not the data's, and a model's vocab_size may exceed the data's (check_meta: not less)
            made, keys = data.read_meta(folder).get("config", {}), [k for k in wishes if k not in ("seed", "vocab_size")]
            differ = keys and data.differing_settings(made, data._config(wanted), keys)
            if differ:
                again = data.prepare_command(made, **wishes, data_dir=cfg["data_dir"], data_name="NEW")
                raise UserError(f"{folder} holds bins prepared with other settings than this run gives ({differ}); "
                                f"leave those flags out to train on them as they are, or keep both: {again}, then "
                                "run this again with --dataset=NEW")
        else:
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


def init_model(cfg, enc, loaders, dev, by_user=None):
    """(model, tokenizer, checkpoint to resume or None) as init_from says, checked against the data and memory."""
    resume = None
    flags = model_flags(cfg)
    if by_user is not None and "vocab_size" not in by_user:  # a preset's is that of the bins it would prepare
        flags["vocab_size"] = 0  # the data's, as they were prepared
    # flags this run sets (a preset, the command line, a notebook): a checkpoint continued must agree with them
    defaults = {f.name: f.default for f in fields(GPTConfig)}
    given = {k: v for k, v in flags.items() if v != defaults[k] and not (k == "vocab_size" and v == 0)}
    keep_dropout = {"dropout": flags["dropout"]} if "dropout" in given else {}
    if cfg["init_from"] == "scratch":
        config = GPTConfig.from_dict({**flags, "vocab_size": flags["vocab_size"] or loaders["train"].vocab_size})
        checkpoint.check_memory(config, cfg, dev)  # before the weights are allocated
        model = GPT(config)
        name, tok_hash = enc.name, data.tokenizer_hash(enc)
    elif cfg["init_from"].startswith("hf:"):  # a Hugging Face folder or hub repo (hf.py); the data must use its tokenizer
        model, enc, _ = hf.load_hf(cfg["init_from"][3:], **keep_dropout)
        name, tok_hash = enc.name, data.tokenizer_hash(enc)
    elif cfg["init_from"] == "resume":
        resume = checkpoint.read_checkpoint(cfg["out_dir"])
        checkpoint.check_architecture(resume["model_config"], given, cfg["out_dir"])
        model = GPT(GPTConfig.from_dict(resume["model_config"]))
        model.load_state_dict(resume["model"])
        name, tok_hash = resume["tokenizer"]["name"], resume["tokenizer"]["hash"]
    else:  # a new stage from another run's checkpoint: its weights, fresh optimizer and schedule (cards 002 and 004)
        model, stage_enc, stage = checkpoint.load_checkpoint(cfg["init_from"], "cpu", **keep_dropout)
        checkpoint.check_architecture(stage["model_config"], given, cfg["init_from"])
        name, tok_hash = stage_enc.name, data.tokenizer_hash(stage_enc)
    checkpoint.check_memory(model.config, cfg, dev)
    # the checkpoint's tokenizer against the data's: re-prepared bins or a later stage's bins may hold another one
    data.check_meta(loaders["train"].meta, model.config.vocab_size, tok_hash, name,
                    tok_dir=cfg["out_dir"] if cfg["init_from"] == "resume" else cfg["init_from"])
    if cfg["block_size"] > model.config.block_size:
        raise UserError(f"block_size={cfg['block_size']} is longer than the model's context "
                        f"({model.config.block_size}); lower --block_size")
    return model, enc, resume


def main():
    cfg = configurator.effective_config(globals())  # every value checked against configurator.RANGES
    system = setup(cfg)
    if system.rank == 0:
        print("config:")
        configurator.print_config(cfg)
    torch.manual_seed(cfg["seed"] + system.rank)
    random.seed(cfg["seed"] + system.rank)
    np.random.seed(cfg["seed"] + system.rank)
    by_user = configurator.given(globals())  # a preset's values give way to the data; the user's are checked
    loaders, enc = prepare_loaders(cfg, system.rank, system.world_size, system.device, by_user)
    model, enc, resume = init_model(cfg, enc, loaders, system.device, by_user)
    summary = train(cfg, model, enc, loaders, resume=resume, system=system)
    if cfg["sample_prompt"] and system.rank == 0:
        # one look at what the model learned; sample.py is the full sampler (streaming, chat, FIM)
        ids = torch.tensor([data.start_ids(enc) + enc.encode_ordinary(cfg["sample_prompt"])], device=system.device)
        gen = torch.Generator(device=system.device).manual_seed(cfg["seed"])
        stops = data.end_ids(enc)
        new = [t.item() for t in model.eval().generate(ids, cfg["sample_tokens"], temperature=0.8, top_k=50,
                                                       stop_tokens=stops, generator=gen)]
        print("sample:\n" + cfg["sample_prompt"] + enc.decode(new[:-1] if new and new[-1] in stops else new))
    compressors = loaders["val"].compressed_bpb
    if system.rank == 0 and summary.get("val_bpb") and compressors:
        # what a language model is: a compressor of text it has never seen, beside the ones every computer has
        print(f"your model compresses unseen {loaders['val'].meta['dataset']} to {summary['val_bpb']:.3f} bits per byte; "
              + ", ".join(f"{name}: {v:.3f}" for name, v in compressors.items()))
    if system.ddp:
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    configurator.configure(globals())
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C before the loop began (preparing data, loading): nothing to save yet
        raise SystemExit(130)
