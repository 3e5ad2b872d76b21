# parchment_166m: ParchmentLM, a 166M LLaMA-style English model on FineWeb-Edu (card 003: seeds/003).
#   python data.py --preset=parchment_166m     # FineWeb-Edu sample/10BT shards 000-012, cl100k_base, uint32 bins
#   python train.py --preset=parchment_166m    # 30,000 steps x 131,072 tokens = 3.9B tokens
#   python sft.py --preset=parchment_166m      # dolly-15k (3 categories) + SimpleMath, 8 epochs
#   python sample.py --out_dir=out/parchment_166m_sft --chat=True

# model (card 003 + config/README.md): 161.97M computed (162.02M with 75 padding rows); the card's "166M" is rounded up
n_layer = 12
n_embd = 768
n_head = 12
ffn_hidden = 2048          # 2/3 * 4 * 768 rounded up to a multiple of 64
block_size = 1024
vocab_size = 100277        # cl100k_base: 100,256 merges + specials up to <|endofprompt|> = 100276
pad_vocab_multiple = 128   # our choice: 100,352 embedding rows. An odd row count sends the LM head's matmul to a slow
                           # kernel on a GPU (BENCHMARKS.md has the measured step times)
pos = "rope"
rope_theta = 10000.0
norm = "rmsnorm"
norm_eps = 1e-6
mlp = "swiglu"
tie_embeddings = True      # card 003
bias = False
dropout = 0.0
init = "scaled_residual"   # linears N(0, 0.02), residual projections / sqrt(2 n_layer)
emb_init_std = 0.0360844   # 768 ** -0.5 (config/README.md)

# data (config/README.md): end-of-text after each document, one flat uint32 file
dataset = "fineweb_edu"
max_shards = 13             # parquet files 000-012 of sample/10BT
tokenizer = "cl100k_base"
fim_rate = 0.0

# pretraining (card 003)
batch_size = 16
gradient_accumulation_steps = 8    # 16 x 8 x 1024 = 131,072 tokens/step
max_iters = 30000                  # ~3.9B tokens
lr_decay_iters = 0                  # 0 = max_iters, so a stage that raises --max_iters decays over all of it
learning_rate = 3e-4               # card 003: 3e-4 -> 3e-5 cosine
min_lr = 3e-5
warmup_iters = 2000                # card 003
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dtype = "bfloat16"
compile = True                     # config/README.md: torch.compile; their log ~75-90k tokens/s on one A100
out_dir = "out/parchment_166m"

# SFT (card 003): completion-only loss, pad = <|endofprompt|> so <|endoftext|> stays a trained stop signal
sft_init_from = "out/parchment_166m"
sft_out_dir = "out/parchment_166m_sft"
chat_template = "parchment"
sft_data = "dolly_qa,simplemath:10000"   # dolly-15k cleaned: closed_qa, open_qa, information_extraction; SimpleMath 2,500 per operator
simplemath_max = 999               # card 003's examples use up to 4-digit operands; reliable up to 2-3 digits
sft_epochs = 8                     # card 003
sft_batch_size = 16
sft_gradient_accumulation_steps = 2
sft_learning_rate = 1e-4           # card 003: cosine
sft_min_lr = 0.0
sft_weight_decay = 0.0             # our choice: the card is silent
sft_warmup_frac = 0.05             # config/README.md: 5% warmup
sft_compile = False

# sampling (card 003): greedy, repetition penalty 1.1, cut at <|endoftext|>
temperature = 0.0
repetition_penalty = 1.1
eval_tasks = "val_ppl,hellaswag,arc_easy"
