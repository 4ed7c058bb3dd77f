# OctoThinker decay stage (hybrid branch) on Llama-3.2-1B (Wang, Zhou, Li, Liu 2025).
# Decay stage, hybrid branch: 20B tokens from the stable checkpoint (fresh optimizer), LR cosine from the stable
# LR to 10% of it; 70% shared mixture (DCLM 5%, instructions 10%, MegaMath-Web-Pro 55%) +
# 30% a hybrid of short and long QA.
# Data: every mixture source is a shard folder data_root/<name> tokenized with the model's own (Llama 3) tokenizer,
# one call of data/prepare.py per source, BOS before every document, e.g.
#   python -m data.prepare --input 'raw/openr1-math/*.parquet' --tokenizer checkpoints/Llama-3.2-1B \
#       --out data/octothinker/openr1_math --bos --val_tokens 2000000
# Run: torchrun --nproc_per_node=8 midtrain.py config/octothinker_1b_decay_hybrid.py
# Batch: 512 sequences x 8192 tokens; grad_accum = 512 * 8192 / (8 GPUs * micro_batch * 8192) = 32. Other GPU
# counts work as long as 512 is divisible by (GPUs * micro_batch); raise micro_batch if memory allows.
stage = "decay"
decay_init_from = "out/octothinker_1b_stable"  # the stable run (its `latest` checkpoint); every branch forks here
fresh_optimizer = True
decay_warmup_tokens = 48 * 512 * 8192  # new AdamW moments: ramp the LR in over 48 steps, ~1% of the decay
decay_out_dir = "out/octothinker_1b_decay_hybrid"
decay_mixture = {
    "dclm_baseline": 0.05,  # DCLM-Baseline
    "instruction": 0.10,  # instruction-following data
    "megamath_web_pro": 0.55,  # MegaMath-Web-Pro
    "openmathinstruct2": 0.10,  # OpenMathInstruct-2 (short)
    "numinamath_1_5": 0.10,  # NuminaMath-1.5 (short)
    "openr1_math": 0.10,  # OpenR1-Math (long)
}
decay_tokens = 20 * 10**9
decay_shape = "cosine"
min_lr_ratio = 0.1  # cosine from the stable LR down to 10% of it
data_root = "data/octothinker"
synth_dir = ""  # no built-in synthetic data
seq_len = 8192
micro_batch = 2
total_batch_tokens = 512 * 8192
lr = 5e-5  # the stable LR; the decay stage starts from it
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dtype = "bfloat16"  # autocast over fp32 master weights
compile = True
# "auto": memory_model decides at start; 80 GB cards: off (60.2 GB without it, 28.1 GB with, 68 GB usable),
# 40-48 GB cards: on
grad_checkpointing = "auto"
# Parallel, per-GPU memory of the 1.24B parameters (8192-token sequences, micro_batch 1, gradient checkpointing;
# memory_model, printed by `python bench/memory.py --plan=<this file>`): ddp = 16 bytes a parameter 19.8 GB + 2.5 GB
# of bf16 autocast weight copies + 4.4 GB activations + 1.5 GB logits chunk = 28.1 GB, fits 40 GB cards, and skips
# FSDP's per-block all-gathers; fsdp on 8 GPUs would need 9.1 GB (2.5 GB of shards)
parallel = "ddp"
eval_interval = 500
eval_batches = 4
eval_sources = []  # the mixture's own sources (those prepared with --val_tokens)
sample_prompt = "Question: Muffins cost 3 dollars each. Mia buys 7 muffins. How many dollars does she pay?\nAnswer:"
sample_tokens = 64
log_interval = 10
ckpt_interval = 1000
keep_last_n = 3
