# smallcoder_303m: SmallCoder, a 303M LLaMA code model trained in a 4-stage curriculum (card 002: seeds/002).
# Each stage starts from the previous checkpoint with a fresh optimizer and schedule (init_from=<dir>):
#   python data.py --preset=smallcoder_303m                                  # stage 1 bins: FineWeb-Edu
#   python train.py --preset=smallcoder_303m                                 # stage 1: 6.3B tokens of English
#   python data.py --preset=smallcoder_303m --dataset=hf:nvidia/... (code)   # stage 2 bins, one per source
#   python train.py --preset=smallcoder_303m --init_from=out/smallcoder_303m --out_dir=out/smallcoder_303m_code \
#       --dataset=synthetic_code:0.6,starcoderdata:0.4 --max_iters=14305      # stage 2: 7.5B tokens, 60/40 mixture
#   python train.py --preset=smallcoder_303m --init_from=out/smallcoder_303m_code --out_dir=out/smallcoder_303m_math \
#       --dataset=<math bins> --max_iters=19073                              # stage 3: 10B tokens of math and knowledge
#   python sft.py --preset=smallcoder_303m                                   # stage 4: SFT with the EOS trained
#   python eval.py --preset=smallcoder_303m --out_dir=out/smallcoder_303m_sft --allow_code_execution=True
# Stage 2-3 corpora (Nemotron synthetic code, StarCoderData, CC-Math, FineWiki, OpenWebMath) are named by the
# card but have no plain-HTTP source wired in here: prepare them with data.py's files:PATH or hf:REPO/FILE sources.

# model (card 002: LlamaConfig)
n_layer = 24
n_embd = 768
n_head = 8                 # head_dim 96
n_kv_head = 8              # MHA, not GQA
ffn_hidden = 3072
block_size = 1024
vocab_size = 49152         # card 002: bigcode/starcoder (gated); StarCoder2's public tokenizer has the same size
pos = "rope"
rope_theta = 10000.0       # LLaMA default
norm = "rmsnorm"
norm_eps = 1e-6            # LLaMA default
mlp = "swiglu"
tie_embeddings = False     # 302.0M computed (card: 303M)
bias = False
dropout = 0.0

# data, stage 1
dataset = "fineweb_edu"
tokenizer = "hf:bigcode/starcoder2-15b"
fim_rate = 0.0

# pretraining: AdamW on TPU (card 002); LR and batch unpublished, ours
batch_size = 16
gradient_accumulation_steps = 32   # 16 x 32 x 1024 = 524,288 tokens/step
max_iters = 12016                  # card 002 stage 1: 6.3B tokens / 524,288
lr_decay_iters = 0                  # 0 = max_iters, so a stage that raises --max_iters decays over all of it
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 2000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dtype = "bfloat16"                 # card 002
out_dir = "out/smallcoder_303m"

# stage 4 SFT: the card's Nemotron SFT / OpenCodeInstruct / OpenMathInstruct-2 (6B tokens) are not wired in;
# Magicoder (Python) + GSM8K stand in. "User:/Assistant:" with the EOS trained (card 002's fix).
sft_init_from = "out/smallcoder_303m_math"
sft_out_dir = "out/smallcoder_303m_sft"
chat_template = "user_assistant"
sft_data = "magicoder_python,gsm8k"
sft_epochs = 2
sft_batch_size = 16
sft_gradient_accumulation_steps = 4
sft_learning_rate = 5e-5
sft_min_lr = 5e-6
sft_warmup_iters = 100
sft_weight_decay = 0.0     # our choice

# eval (card 002's table: HumanEval 0-shot and MBPP 3-shot at temperature 0.2, 512 new tokens)
temperature = 0.2
max_new_tokens = 512
mbpp_sampled = True    # card 002 samples MBPP too; eval.py names that pass@k as its own (lm-eval's mbpp is greedy)
eval_tasks = "humaneval,mbpp,gsm8k,wikitext2,arc_easy,arc_challenge,hellaswag"
