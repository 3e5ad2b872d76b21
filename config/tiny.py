# tiny: the quick start. A few-million-parameter model of the pycraft_55m architecture (GQA, RoPE,
# QK-norm, SwiGLU, RMSNorm) trained on the Python standard library of the interpreter running it:
# no download, no GPU, minutes on a laptop CPU.
#   python train.py --preset=tiny      # prepares data/stdlib_python (BPE + bins), trains, samples
#   python sft.py --preset=tiny        # fine-tunes on embedded instruction sets
#   python sample.py --out_dir=out/tiny_sft --chat=True

# model: pycraft's flags at a size a 2-core CPU trains in minutes
# (2.48M parameters: minutes end to end on 2 cores, BENCHMARKS.md; d=128 and vocab 2,048 would be 1.3M)
n_layer = 4
n_embd = 160
n_head = 4                 # head_dim 40
n_kv_head = 2              # GQA 2:1 as in card 000 (there 8:2)
ffn_hidden = 448
block_size = 256
vocab_size = 4096
pos = "rope"
norm = "rmsnorm"
norm_eps = 1e-6
mlp = "swiglu"
qk_norm = "before_rope"
tie_embeddings = False
bias = False
dropout = 0.0

# data: the interpreter's own standard library, our BPE, FIM as in card 000
dataset = "stdlib_python"
tokenizer = "bpe"
special_tokens = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|pad|>"]
split_pattern = "gpt4"
max_chars = 0                      # the whole standard library: ~6.8M training tokens, prepared in ~40 s
tokenizer_train_chars = 10_000_000
filters = "code_quality"
dedup = True
quality_order = False
max_literal_share = 0.5            # drops codec and entity tables (0.58-0.78 literals; programs < 0.35)
test_fraction = 0.1                # 61% of the stdlib's bytes are tests: keep a tenth of them
val_fraction = 0.05                # a random 5% of the files (about 40), never trained on
fim_rate = 0.5

# training
batch_size = 16
gradient_accumulation_steps = 1
max_iters = 600
lr_decay_iters = 0                  # 0 = max_iters, so a stage that raises --max_iters decays over all of it
learning_rate = 2e-3               # small models take a large LR
min_lr = 2e-4
warmup_iters = 50
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
eval_interval = 200
eval_iters = 20
log_interval = 20
device = "cpu"
dtype = "float32"
out_dir = "out/tiny"
sample_prompt = "import os\n\n\ndef "

# SFT on embedded, generated sets (no download)
sft_init_from = "out/tiny"
sft_out_dir = "out/tiny_sft"
chat_template = "user_assistant"
sft_data = "stdlib_functions,simplemath:2000,spelling:600,identity:200"
simplemath_max = 99                # two-digit sums: within reach of a 1M-parameter model
identity_name = "Tiny"
sft_max_iters = 300
sft_batch_size = 16
sft_learning_rate = 5e-4
sft_min_lr = 5e-5
sft_warmup_iters = 20
sft_weight_decay = 0.0
sft_eval_interval = 100
