# OctoThinker stable stage on Llama-3.2-3B (Wang, Zhou, Li, Liu 2025).
# Stable stage: 200B tokens at a constant LR (no warmup), AdamW with weight decay 0.1, gradient clipping
# 1.0, on a math-web-heavy mixture. The decay branches (octothinker_3b_decay_{long,short,hybrid}.py) start from it.
# Data: every mixture source is a shard folder data_root/<name> tokenized with the model's own (Llama 3) tokenizer,
# one call of data/prepare.py per source, BOS before every document, e.g.
#   python -m data.prepare --input 'raw/megamath-web-pro-max/*.parquet' --tokenizer checkpoints/Llama-3.2-3B \
#       --out data/octothinker/megamath_web_pro_max --bos --val_tokens 2000000
# Run: torchrun --nproc_per_node=8 midtrain.py config/octothinker_3b_stable.py
# Batch: 512 sequences x 8192 tokens; grad_accum = 512 * 8192 / (8 GPUs * micro_batch * 8192) = 64. Other GPU
# counts work as long as 512 is divisible by (GPUs * micro_batch); raise micro_batch if memory allows.
stage = "stable"
init_from = "checkpoints/Llama-3.2-3B"  # local snapshot of meta-llama/Llama-3.2-3B (HF download)
stable_out_dir = "out/octothinker_3b_stable"
stable_mixture = {
    "megamath_web_pro_max": 0.725,  # MegaMath-Web-Pro-Max
    "dclm_baseline": 0.10,  # DCLM-Baseline
    "megamath_text_code_block": 0.10,  # MegaMath text & code blocks
    "megamath_qa": 0.05,  # MegaMath-QA
    "megamath_code": 0.0125,  # MegaMath-Code
    "megamath_translated_code": 0.0125,  # MegaMath translated code
}
warmup_tokens = 0  # the paper uses no warmup
stable_tokens = 200 * 10**9
data_root = "data/octothinker"
synth_dir = ""  # no built-in synthetic data
seq_len = 8192
micro_batch = 1
total_batch_tokens = 512 * 8192
lr = 2e-5  # the stable LR; the decay stage starts from it
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dtype = "bfloat16"  # autocast over fp32 master weights
compile = True
# "auto": memory_model decides at start; 80 GB cards on 8 GPUs (fsdp): off (49.9 GB without it, 13.8 GB with, 68 GB
# usable), 40-48 GB cards: on
grad_checkpointing = "auto"
# Parallel, per-GPU memory of the 3.21B parameters on 8 GPUs (8192-token sequences, micro_batch 1, gradient
# checkpointing; memory_model, printed by `python bench/memory.py --plan=<this file>`): ddp = 16 bytes a parameter
# (fp32 weights, grads, AdamW moments) 51.4 GB + 6.4 GB of bf16 autocast weight copies + 4.2 GB activations + 1.9 GB
# logits chunk = 64.0 GB, 80 GB cards only; fsdp = 16 / 8 bytes a parameter 6.4 GB of shards + 1.2 GB of gathered
# bf16 blocks and embedding + 4.2 GB activations + 1.9 GB logits chunk = 13.8 GB, fits 40-48 GB cards
parallel = "fsdp"
eval_interval = 500
eval_batches = 4
eval_sources = []  # the mixture's own sources (those prepared with --val_tokens)
sample_prompt = "Question: Muffins cost 3 dollars each. Mia buys 7 muffins. How many dollars does she pay?\nAnswer:"
sample_tokens = 64
log_interval = 10
ckpt_interval = 1000
keep_last_n = 3
