# pycraft_55m: PyCraft-1, a 55.3M Python code model (card 000: seeds/000; shapes from config/README.md).
#   python data.py --preset=pycraft_55m        # filter, score, order best-first, train BPE, FIM, bins
#   python train.py --preset=pycraft_55m       # 4,000 steps x 262,144 tokens = 1.05B tokens
#   python sft.py --preset=pycraft_55m         # Magicoder-OSS-Instruct (Python), 400 steps
#   python eval.py --preset=pycraft_55m --out_dir=out/pycraft_55m_sft --allow_code_execution=True

# model (card 000 gives no layer/width; config/README.md: the published code's shape, 55.32M computed)
n_layer = 8
n_embd = 512
n_head = 8
n_kv_head = 2              # card 000: GQA 8Q / 2KV
ffn_hidden = 1408          # SwiGLU hidden (code), not 2/3*4*512 = 1365
block_size = 1024          # card 000: context 1024
vocab_size = 32000         # card 000: custom BPE 32,000
pos = "rope"
rope_theta = 10000.0
norm = "rmsnorm"
norm_eps = 1e-6
mlp = "swiglu"
qk_norm = "before_rope"    # card 000: RMSNorm on Q and K before RoPE (OLMo 2 / Qwen 3)
tie_embeddings = False     # untied: 55.3M (tied would be 38.9M)
bias = False
dropout = 0.1              # pretraining only; SFT sets 0 (config/README.md)
init = "scaled_residual"   # N(0, 0.02), residual projections / sqrt(2 n_layer)

# data: the card's six sources are not published; The Stack's Python, filtered, stands in.
dataset = "the_stack_python"
tokenizer = "bpe"          # trained by data.py on the training split
special_tokens = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|pad|>"]
split_pattern = "gpt4"
tokenizer_train_chars = 30_000_000   # our choice: 30 MB of Python is enough for 32k merges
filters = "code_quality"   # our choice: the card only says "curated"
dedup = True
quality_order = True       # card 000: scored on five heuristics, ordered best-first
fim_rate = 0.5             # card 000: FIM 50%, PSM
fim_spm_rate = 0.0
data_order = "sequential"  # the loader walks the best-first order instead of sampling windows

# pretraining (config/README.md, from the published code)
batch_size = 4
gradient_accumulation_steps = 64   # 4 x 64 x 1024 = 262,144 tokens/step
max_iters = 4000                   # card 000: 4,000 steps, 1.05B tokens
learning_rate = 3e-4
min_lr = 3e-5                      # our choice: the code decays with cosine; 10% floor as in card 003
warmup_iters = 500
lr_decay_iters = 0                  # 0 = max_iters, so a stage that raises --max_iters decays over all of it
weight_decay = 0.1                 # on 2-D tensors only
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dtype = "bfloat16"
activation_checkpointing = True    # card 000: how it fit a 4 GB RTX 3050
eval_interval = 250
out_dir = "out/pycraft_55m"

# SFT (config/README.md): 40,000 Python rows of Magicoder-OSS-Instruct-75K
sft_init_from = "out/pycraft_55m"
sft_out_dir = "out/pycraft_55m_sft"
chat_template = "magicoder"
sft_data = "magicoder_python"
max_examples = 40000
sft_batch_size = 4
sft_gradient_accumulation_steps = 16
sft_learning_rate = 1e-4
sft_warmup_iters = 100
sft_max_iters = 400
sft_weight_decay = 0.01
sft_eval_interval = 100
sft_dtype = "float32"
sft_dropout = 0.0

# sampling and eval (card 000's defaults; HumanEval pass@1 greedy: 3.66%)
temperature = 0.2
top_k = 20
repetition_penalty = 1.1
eval_tasks = "val_ppl,file_ppl,humaneval"
