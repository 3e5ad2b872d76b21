# tiny: the quick start. A few-million-parameter model of the pycraft_55m architecture (GQA, RoPE,
# QK-norm, SwiGLU, RMSNorm) trained on the Python standard library of the interpreter running it:
# no download, no GPU, minutes on a laptop CPU.
#   python train.py --preset=tiny      # prepares data/stdlib_python (BPE + bins), trains, samples
#   python sft.py --preset=tiny        # fine-tunes on embedded instruction sets
#   python sample.py --out_dir=out/tiny_sft --chat=True

# Each value below cites the row of BENCHMARKS.md's "CPU speedrun" record table that chose it (R0 is the
# quick start before the speedrun); rows not cited kept the value R0 had.

# model: pycraft's flags at a size a 2-core CPU trains in minutes (2.48M parameters)
n_layer = 4                # R0; more layers cost steps (step-time table)
n_embd = 160               # R0; 128 wide with the steps it saves was no better (R6)
n_head = 4                 # head_dim 40 (R0)
n_kv_head = 2              # GQA 2:1 as in card 000 (there 8:2)
ffn_hidden = 448           # SwiGLU's 8/3 x n_embd, rounded up to a multiple of 64 (R0)
block_size = 256           # R0; 128 saves little of the step (step-time table)
vocab_size = 4096          # R0; 2,048 ids save step time but need more tokens per byte (step-time table)
pos = "rope"               # pycraft's architecture (card 000)
norm = "rmsnorm"
norm_eps = 1e-6
mlp = "swiglu"
qk_norm = "before_rope"
tie_embeddings = False     # card 000; tying saves little of the step (step-time table)
bias = False
dropout = 0.0              # under one epoch: nothing to regularize

# data: the interpreter's own standard library, our BPE, FIM as in card 000
dataset = "stdlib_python"
tokenizer = "bpe"
special_tokens = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|pad|>"]
split_pattern = "gpt4"
max_chars = 0                      # the whole standard library
tokenizer_train_chars = 10_000_000
filters = "code_quality"           # card 001's filter
dedup = True
quality_order = False
max_literal_share = 0.5            # R1: drops codec and entity tables, keeps every hand-written module
test_fraction = 0.1                # R1: most of the stdlib's bytes are tests; keep a tenth of them
val_fraction = 0.05                # R1: a random 5% of the files, never trained on
fim_rate = 0.5                     # card 000; R2: 0 was no better in bits per byte

# training
batch_size = 8                     # R4: twice the steps of 16 at about the same tokens/s
gradient_accumulation_steps = 1
max_iters = 960                    # R8: what fits R0's wall time (R7's 1,200 steps did not)
lr_decay_iters = 0                 # 0 = max_iters, so a stage that raises --max_iters decays over all of it
learning_rate = 8e-3               # R7 (AdamW: embeddings, head, norms); R5's 4e-3 and R0's 2e-3 were worse
min_lr = 8e-4                      # a tenth of the peak, as nanoGPT
muon_lr = 0.02                     # R3: Muon for the block matrices at nanochat's LR (R3b: twice was worse)
warmup_iters = 100                 # R4: R0's 50 steps of warmup, in steps of half the batch
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
eval_interval = 240                # R8: five points on the curves
eval_iters = 20                    # 20 batches of each split per point (R0)
log_interval = 20
device = "cpu"
dtype = "float32"
out_dir = "out/tiny"
sample_prompt = 'def read_lines(path):\n    """Return the lines of a text file, without their line ends."""\n'

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
