# picochat_335m: PicoChat, a 335M nanochat-style chat model (card 004: seeds/004; nanochat as of Nov 2025).
#   python data.py --preset=picochat_335m      # FineWeb-Edu, own BPE 65,536 (digits grouped 1-2), <|bos|> per document
#   python train.py --preset=picochat_335m     # base: ~442M tokens at 8,192 tokens/step
#   python sft.py --preset=picochat_335m --midtrain_ratio=0.5 --init_from=out/picochat_335m --out_dir=out/picochat_335m_mid \
#       --sft_data=smoltalk,mmlu_aux,gsm8k,identity,spelling --max_iters=4000   # midtraining: all tokens, packed, mixed
#   python sft.py --preset=picochat_335m       # SFT from out/picochat_335m_mid: 1,000 steps at batch 8
#   python sample.py --out_dir=out/picochat_335m_sft --chat=True

# model (config/README.md): 335.5M computed
n_layer = 16
n_embd = 1024
n_head = 8
n_kv_head = 8              # card 004: GQA-capable, configured 1:1
ffn_hidden = 4096          # ReLU^2 MLP, 4x
block_size = 1024
vocab_size = 65536         # 65,527 merged tokens + 9 specials
pos = "rope"
rope_theta = 10000.0
norm = "rmsnorm"
norm_affine = False        # parameter-free RMSNorm
mlp = "relu2"
qk_norm = "after_rope"     # nanochat normalises q and k after the rotation
tie_embeddings = False
bias = False
dropout = 0.0
init = "zero_out"          # nanochat: zero LM head and every output projection
logit_softcap = 15.0       # 15 * tanh(x / 15)
embed_norm = True          # a norm right after the token embedding

# data
dataset = "fineweb_edu"
tokenizer = "bpe"
split_pattern = "gpt4_digits2"     # GPT-4's split with numbers grouped 1-2 (nanochat)
special_tokens = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
                  "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]
tokenizer_train_chars = 200_000_000  # our choice for a pure-Python trainer (nanochat uses 2B characters)
bos_token = "<|bos|>"              # every document starts with <|bos|>
fim_rate = 0.0

# base pretraining: card 004 ~442M tokens; batch 8 x 1024, no accumulation (config/README.md)
batch_size = 8
gradient_accumulation_steps = 1
max_iters = 54000                  # 442M / 8,192; the card's "~60,000 steps" rounds this up
lr_decay_iters = 0                  # 0 = max_iters, so a stage that raises --max_iters decays over all of it
learning_rate = 3e-4               # our choice for AdamW on every tensor; nanochat runs Muon on the block
muon_lr = 0.0                      # matrices: --muon_lr=0.02 does that here (untested at this scale, so off)
lr_schedule = "wsd"                # nanochat: constant, then linear warmdown over the last 20% to 0
warmdown_frac = 0.2
min_lr = 0.0
warmup_iters = 0
weight_decay = 0.0                 # nanochat: no weight decay
beta1 = 0.8                        # nanochat's AdamW betas and eps
beta2 = 0.95
adam_eps = 1e-10
grad_clip = 1.0
dtype = "auto"                     # card 004 trained on an M2 (MPS): bf16 autocast where supported
out_dir = "out/picochat_335m"

# SFT (card 004): ARC-Easy + Challenge, GSM8K, 10K SmolTalk, identity, 300 + 300 spelling; masked, padded
sft_init_from = "out/picochat_335m_mid"
sft_out_dir = "out/picochat_335m_sft"
chat_template = "nanochat"
sft_data = "arc,gsm8k,smoltalk:10000,identity,spelling:600"
sft_max_iters = 1000               # card 004: 1,000 steps at batch 8
sft_batch_size = 8
sft_gradient_accumulation_steps = 1
sft_learning_rate = 2e-5           # our choice
sft_min_lr = 0.0
sft_warmup_iters = 0
sft_eval_interval = 100
identity_name = "PicoChat"
identity_description = "a 335M-parameter language model trained from scratch on a MacBook Air; a bit silly, often wrong, sometimes delightful"

eval_tasks = "val_ppl,arc_easy,arc_challenge,gsm8k,hellaswag"
