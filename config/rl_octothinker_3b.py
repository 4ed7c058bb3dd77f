# OctoThinker RL stage on a mid-trained Llama-3.2-3B (Wang, Zhou, Li, Liu 2025): GRPO with a rule-based reward.
# The recipe: group size 16, 128 prompts per step, constant LR 1e-6, no KL term (so no reference model is loaded),
# no entropy bonus, clip ratio 0.2, gradient clipping 1.0, temperature 1.0, top-p 1.0, the R1-Zero-style template,
# reward +1 when the last \boxed{} answer is correct and -1 otherwise (no box = wrong), prompts of at most 400
# tokens, the response budget on a stair schedule for long chain-of-thought bases, greedy validation on MATH500 and
# GSM8K every few steps.
# Start: the long branch of mid-training (config/octothinker_3b_decay_long.py writes out/octothinker_3b_decay_long).
# For the short-QA branch, a flat budget (e.g. max_response_len = 2048) suits its shorter answers.
# Prompts: a jsonl of math training problems with final answers, one {"question", "answer"} per line (rename with
# question_field / answer_field; a GSM8K-style "... #### N" answer gives N), e.g. the MATH training problems.
# Run: torchrun --nproc_per_node=8 rl.py config/rl_octothinker_3b.py
# Memory (per GPU, see parallel below): fp32 master weights + AdamW + grads are ~51 GB for 3B under ddp;
# the sampler's bf16 KV cache is 0.99 GB per 8.6k-token sequence (112 KiB a token): the 20 GB pool below holds 20
# such rows, and all of a rank's 256 rollouts while responses stay under ~600 tokens;
# training runs one sequence per micro-batch with gradient checkpointing.
init_from = "out/octothinker_3b_decay_long"
out_dir = "out/rl_octothinker_3b"
prompt_file = "data/rl/math_train.jsonl"
question_field = "question"
answer_field = "answer"
template = "r1"  # eval_math.R1_TEMPLATE
stop = ["\nUser:"]
max_prompt_len = 400
group_size = 16
prompts_per_step = 128  # the paper's range is 128-256
max_response_len = {0: 2048, 100: 4096, 160: 8192}  # from step: tokens
temperature = 1.0
top_p = 1.0
# all of a rank's rollouts decode together (the more rows in flight, the more of each decode step's weight read is
# shared); the KV pool is 20 GB, allocated once per step and freed before the update: the engine admits rows while
# blocks are free and preempts (later recomputes) the newest when the pool runs out, so memory stays bounded
rollout_batch_size = 0
kv_budget = 20  # GB
reward_correct = 1.0
reward_wrong = -1.0
reward_no_answer = -1.0
norm_adv_by_std = True
drop_uniform_groups = False
loss_agg = "token-mean"
ppo_epochs = 1
mini_batches = 1  # one on-policy step per rollout batch; raise to take several smaller steps per batch
micro_batch = 1
# the log-prob recompute and update take length-sorted sequences up to this many tokens (padding included) per
# forward/backward, not micro_batch sequences: memory_model.largest_micro_batch_tokens for an 80 GB card, 8 GPUs,
# fsdp, without gradient checkpointing (the update's peak 65.0 GB of the 68 usable; `python bench/memory.py
# --plan=<this file>` prints it). Smaller cards: lower it, or grad_checkpointing=True with a larger one
micro_batch_tokens = 11264
lr = 1e-6
lr_warmup_steps = 0  # constant
weight_decay = 0.01  # verl's AdamW default
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0
clip_low = 0.2
clip_high = 0.2
kl_coef = 0.0
entropy_coef = 0.0
max_steps = 300  # the last stair (8192 tokens) starts at step 160
eval_interval = 20
eval_benchmarks = "math500,gsm8k"
eval_style = "r1"
eval_limit = 0
eval_max_new_tokens = 4096
eval_batch_size = 32
log_interval = 1
ckpt_interval = 20
keep_last_n = 3
device = "cuda"
dtype = "bfloat16"  # autocast over fp32 master weights
# off until timed on a GPU (rl.py's compile is new and was measured on CPU only): the update's micro-batches change
# shape every time, so the blocks compile dynamic-shape graphs (4: with and without grad, each also for 1-sequence
# micro-batches; rollouts decode eagerly either way), and the memory plan behind micro_batch_tokens models eager
# activations. Time `rl.py --compile=True` against False (train_tok_s in metrics.jsonl) before turning it on
compile = False
# "auto": memory_model decides at start; 80 GB cards on 8 GPUs (fsdp): off (at micro_batch_tokens the update's
# peak is 65.0 GB without it; with it the rollouts' 34.9 GB is the peak; 68 GB usable), 40-48 GB cards: on
grad_checkpointing = "auto"
# Parallel, per-GPU memory of the 3.21B policy on 8 GPUs at micro_batch=1 sequence with gradient checkpointing
# (memory_model, printed by `python bench/memory.py --plan=<this file>`): ddp = 51.4 GB (fp32 weights, grads, AdamW
# moments) + 6.4 GB bf16 weight copies + 4.5 GB activations + 2.0 GB logits chunk = 64.3 GB in the update, 71.4 GB
# during rollouts (grads freed; the 20 GB KV pool, 6.4 GB of decode weights): over an 80 GB card's 68 GB usable, so
# ddp needs kv_budget <= 16; fsdp = 6.4 GB of shards + a 6.4 GB bf16 rollout copy of the weights with its 3.7 GB of
# fused decode weights and its 20 GB KV pool (all freed before the update) = 34.9 GB during rollouts, 14.0 GB during
# the update: fits 40-48 GB cards (lower kv_budget there). On 80 GB cards the rollout phase has room for 66 rows at
# the last stair (29 under ddp)
parallel = "fsdp"
