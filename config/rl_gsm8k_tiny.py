# The paper's RL code path at CPU scale: GSM8K train problems (gold after "####"), the R1-Zero-style template and
# its stop string, greedy validation on GSM8K in the R1 style, starting from the built-in mid-trained model.
# A plumbing check, not an experiment: the tiny synthetic-world model solves almost no GSM8K problem, so most
# groups are uniform (all -1) and carry no gradient. Point init_from at a real base model to make it one.
# Run: python rl.py config/rl_gsm8k_tiny.py
init_from = "out/midtrain"
out_dir = "out/rl_gsm8k_tiny"
prompt_file = "../shared/data/gsm8k/train.jsonl"  # fields question, answer ("... #### 72")
template = "r1"
stop = ["\nUser:"]
max_prompt_len = 352  # the built-in model's context is 512 tokens
max_response_len = 128
group_size = 8
prompts_per_step = 16
lr = 1e-4
max_steps = 6
eval_interval = 6
eval_benchmarks = "gsm8k"
eval_style = "r1"
eval_limit = 50
eval_max_new_tokens = 128
ckpt_interval = 6
log_interval = 1
