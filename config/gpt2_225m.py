# gpt2_225m: the 225m model of the GPT-2 scaling study on Python (card 001: seeds/001).
#   python data.py --preset=gpt2_225m       # The Stack (Python), card 001's filters, StarCoder2 BPE, packed bins
#   python train.py --preset=gpt2_225m      # ~3B tokens of Python
#   python sft.py --preset=gpt2_225m        # python_code_instructions_18k (Alpaca template), response-only loss, 3 epochs
#   python eval.py --preset=gpt2_225m --out_dir=out/gpt2_225m_sft   # val perplexity + syntax pass rate
# Only the README is public: every number not marked "card" is our choice, said where it is made.

# model: the GPT-2 block (card 001: pre-LN, learned positions, GELU-tanh, tied, residual scaling)
n_layer = 16               # card 001
n_embd = 960
n_head = 16
block_size = 1024
vocab_size = 49152         # card 001: StarCoder2 BPE
pos = "learned"
norm = "layernorm"
mlp = "gelu"
tie_embeddings = True
bias = True                # GPT-2 keeps biases
dropout = 0.0
init = "scaled_residual"   # card 001: residual projections / sqrt(2 n_layer)

# data
dataset = "the_stack_python"   # card 001: bigcode/the-stack-dedup, Python (gated: set HF_TOKEN)
tokenizer = "hf:bigcode/starcoder2-15b"
filters = "code_quality"   # card 001: char/line counts, alphanumeric ratio, compile(); thresholds are ours (config/README.md)
dedup = True
fim_rate = 0.0

# pretraining: AdamW, linear warmup + cosine (card 001); batch and LR ours
batch_size = 8             # fits a 16 GB T4 in fp16 at 1024 tokens
gradient_accumulation_steps = 16   # 8 x 16 x 1024 = 131,072 tokens/step
max_iters = 22900     # ~3B tokens (card 001) / 131,072 tokens per step
lr_decay_iters = 0                  # 0 = max_iters, so a stage that raises --max_iters decays over all of it
learning_rate = 3e-4     # GPT-3 table (Brown et al. 2020) for this size
min_lr = 3e-5
warmup_iters = 1000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0            # card 001: hard clipping against loss spikes
grad_skip_factor = 6.0     # card 001's "gradient skip blocks": skip a step whose norm is 6x the recent median
dtype = "auto"             # card 001: bf16 where supported, else fp16 + GradScaler (T4)
out_dir = "out/gpt2_225m"

# SFT (card 001): 18,612 Alpaca-format Python pairs, response-only loss
sft_init_from = "out/gpt2_225m"
sft_out_dir = "out/gpt2_225m_sft"
chat_template = "alpaca"
sft_data = "python_code_instructions_18k"
sft_epochs = 3             # card 001: 3 epochs
sft_batch_size = 8
sft_gradient_accumulation_steps = 4
sft_learning_rate = 5e-5   # our choice
sft_min_lr = 5e-6
sft_warmup_iters = 50
sft_weight_decay = 0.0     # our choice

# eval (card 001): validation perplexity and syntax pass rate (compile())
eval_tasks = "val_ppl,syntax"
