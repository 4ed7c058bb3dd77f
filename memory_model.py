"""
What one GPU holds during a run, by arithmetic on the model's shapes and the run's knobs (no model is built): the
training stages print it at start (runtime.memory_table), `python bench/memory.py --plan=<config file>`
prints it for a preset, and tests/test_memory_model.py checks it against peak memory measured on CPU.

Terms, in bytes per GPU (P = parameters, s = the FSDP shard count, 1 under ddp):
  weights      fp32 master weights, 4P / s
  grads        fp32 gradients, 4P / s (freed between updates: set_to_none)
  optimizer    AdamW's two fp32 moments, 8P / s
  compute copy bf16 autocast copies of the weights in the update (ddp: all of them, 2P; fsdp: two gathered
               blocks and the embedding)
  inference    what rollouts decode from: fsdp's full copy in the training dtype (runtime.full_model), or ddp's
  copy         bf16 autocast casts
  activations  what backward keeps per token and layer (model.Block: its RMSNorm inputs/outputs, q/k/v, attention
               output, the SwiGLU's four ffn-wide tensors); with gradient checkpointing only each block's input plus
               one block recomputed
  logits       the lm_head transient: chunk x vocab fp32 matrices (3 live at once in the chunked log-probs with
               entropy, 2 in the chunked cross-entropy) plus the fp32 [vocab, dim] weight gradient the chunked
               backward accumulates; logits_chunk=0 holds all tokens' logits (4 copies: logits, fp32, softmax, grad)
  KV cache     (prompt + max response) slots per row in flight, in the compute dtype: a contiguous per-row
               cache, and sample.py's paged pool at its default size (kv_budget None), which is what rl.py runs.
               A pool given a budget: pass kv_pool_bytes; the rows it guarantees in flight are then
               pool / (bytes a token x prompt + cap slots), every row at the cap; rows that stop early leave room
               for more (bench/sample.py --rl measures how much).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

GB = 1e9
ORDER = ("weights", "grads", "optimizer", "reference", "compute copy", "inference copy", "decode weights",
         "activations", "logits", "KV cache")  # the table's rows


@dataclass
class Plan:
    """A run's per-GPU memory: terms (name -> bytes) of each phase, and the rollout engine's capacity."""
    stage: str
    phases: dict = field(default_factory=dict)  # phase -> {term: bytes}
    kv_bytes_per_token: int = 0
    seq_tokens: int = 0  # prompt + response slots of one row
    rows_in_flight: int = 0  # rows decoded together by the engine
    gpu_bytes: float = 80 * GB
    notes: list = field(default_factory=list)

    def total(self, phase: str) -> float:
        return sum(self.phases[phase].values())

    def peak(self) -> float:
        return max(self.total(p) for p in self.phases)

    def kv_capacity(self) -> int:
        """Sequences of seq_tokens a contiguous cache could keep in flight in what the rollout phase leaves free."""
        if "rollout" not in self.phases or not self.seq_tokens:
            return 0
        rest = self.total("rollout") - self.phases["rollout"].get("KV cache", 0)
        return max(0, int((self.gpu_bytes - rest) // (self.kv_bytes_per_token * self.seq_tokens)))


def param_count(cfg) -> int:
    d, kv = cfg.dim, cfg.n_kv_heads * cfg.head_dim
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * cfg.ffn_dim + 2 * d
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    return cfg.vocab_size * d + cfg.n_layers * per_layer + d + head


def decode_weight_bytes(cfg, param_bytes: int, compute_bytes: int) -> int:
    """What Llama.decode_weights holds beside the parameters: q/k/v and gate/up concatenated (always new tensors),
    and o, down and the lm_head cast to the compute dtype when the parameters are in another one."""
    d, kv, f, L = cfg.dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim, cfg.n_layers
    fused = L * d * (d + 2 * kv + 2 * f)
    cast = L * (d * d + d * f) + cfg.vocab_size * d if param_bytes != compute_bytes else 0
    return compute_bytes * (fused + cast)


def block_params(cfg) -> int:
    d, kv = cfg.dim, cfg.n_kv_heads * cfg.head_dim
    return 2 * d * d + 2 * d * kv + 3 * d * cfg.ffn_dim + 2 * d


def layer_activation_bytes(cfg, bf16: bool) -> int:
    """Bytes backward keeps per token for one block. fp32 residual stream and norms: the two RMSNorms keep input,
    normalised and output (6 x dim); matmul-side tensors (q, k, v, the attention output and its [T, H*D] copy, the
    SwiGLU's gate, up, silu and product) are in the compute dtype."""
    d, kv, f = cfg.dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_dim
    mm = 2 if bf16 else 4
    matmul_side = 3 * d + 2 * kv + 4 * f + (2 * d if bf16 else 0)  # bf16: the casts of the two norm outputs
    return 4 * 6 * d + mm * matmul_side


def activation_bytes(cfg, tokens: int, bf16: bool, checkpointing: bool) -> int:
    per_layer = layer_activation_bytes(cfg, bf16)
    if checkpointing:  # every block's fp32 input, plus one block's full set while it is recomputed
        return tokens * (cfg.n_layers * 4 * cfg.dim + per_layer)
    return tokens * (cfg.n_layers * per_layer + 4 * 4 * cfg.dim)  # + embedding out, final norm (in, normed, out)


def logits_bytes(cfg, tokens: int, chunk: int, copies: int) -> int:
    """The lm_head transient: `copies` fp32 [chunk, V] matrices, plus the chunked backward's fp32 [V, dim] gradient;
    chunk 0 = every token's logits at once (4 copies, and autograd's own weight gradient)."""
    V = cfg.vocab_size
    if chunk == 0:
        return 4 * tokens * V * 4
    return copies * min(chunk, tokens) * V * 4 + 4 * V * cfg.dim


def kv_bytes_per_token(cfg, bf16: bool) -> int:
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * (2 if bf16 else 4)


def state_terms(cfg, shards: int, bf16: bool, fsdp: bool, optimizer: str) -> dict:
    """Weights, gradients, optimizer state and the compute copy held during an update."""
    P = param_count(cfg)
    terms = {"weights": 4 * P / shards, "grads": 4 * P / shards,
             "optimizer": (8 * P if optimizer == "adamw" else 0) / shards}
    if bf16:  # autocast's cached bf16 casts (ddp), or FSDP's gathered bf16 parameters (two blocks + the embedding)
        terms["compute copy"] = 2 * (2 * block_params(cfg) + cfg.vocab_size * cfg.dim) if fsdp else 2 * P
    elif fsdp and shards > 1:  # fp32 gathers of two blocks and the root
        terms["compute copy"] = 4 * (2 * block_params(cfg) + cfg.vocab_size * cfg.dim)
    return terms


def midtrain_plan(cfg, *, micro_batch: int, seq_len: int, bf16: bool, checkpointing: bool, logits_chunk: int,
                  parallel: str = "ddp", world_size: int = 1, optimizer: str = "adamw",
                  gpu_bytes: float = 80 * GB) -> Plan:
    fsdp = parallel == "fsdp" and world_size > 1
    shards = world_size if fsdp else 1
    tokens = micro_batch * seq_len
    terms = state_terms(cfg, shards, bf16, fsdp, optimizer)
    terms["activations"] = activation_bytes(cfg, tokens, bf16, checkpointing)
    # the chunked cross-entropy keeps its dh [N, dim] (and its dw, counted in logits) from forward to backward
    terms["logits"] = logits_bytes(cfg, tokens, logits_chunk, 2) + (4 * tokens * cfg.dim if logits_chunk else 0)
    return Plan("midtrain", {"update": terms}, gpu_bytes=gpu_bytes)


def rl_plan(cfg, *, micro_batch: int, prompt_len: int, response_len: int, rollout_rows: int, bf16: bool,
            checkpointing: bool, logits_chunk: int, parallel: str = "ddp", world_size: int = 1,
            optimizer: str = "adamw", reference: bool = False, kv_pool_bytes: float | None = None,
            gpu_bytes: float = 80 * GB, micro_batch_tokens: int = 0) -> Plan:
    """rollout phase: the training state (grads freed) + the engine's weights + its KV cache; update phase: one
    micro-batch's forward and backward over prompt_len + response_len tokens a sequence: micro_batch of them, or
    with micro_batch_tokens > 0 that many tokens (padding included; at least one whole sequence)."""
    fsdp = parallel == "fsdp" and world_size > 1
    shards = world_size if fsdp else 1
    P = param_count(cfg)
    update = state_terms(cfg, shards, bf16, fsdp, optimizer)
    seq = prompt_len + response_len
    tokens = max(micro_batch_tokens, seq) if micro_batch_tokens > 0 else micro_batch * seq
    update["activations"] = activation_bytes(cfg, tokens, bf16, checkpointing)
    update["logits"] = logits_bytes(cfg, tokens * response_len // seq, logits_chunk, 3)
    if reference:  # kl_coef > 0: a frozen fp32 copy of the starting weights, sharded like the policy
        update["reference"] = 4 * P / shards
    rollout = {k: v for k, v in update.items() if k not in ("grads", "activations", "logits", "compute copy")}
    compute = 2 if bf16 else 4
    if fsdp:  # runtime.full_model: every rank decodes from a full copy in the training dtype
        rollout["inference copy"] = compute * P
        rollout["decode weights"] = decode_weight_bytes(cfg, compute, compute)
    else:
        if bf16:  # autocast's cached bf16 casts of the weights (the prefill's forward)
            rollout["inference copy"] = 2 * P
        rollout["decode weights"] = decode_weight_bytes(cfg, 4, compute)
    per_tok = kv_bytes_per_token(cfg, bf16)
    rollout["KV cache"] = kv_pool_bytes if kv_pool_bytes is not None else rollout_rows * seq * per_tok
    plan = Plan("rl", {"rollout": rollout, "update": update}, kv_bytes_per_token=per_tok, seq_tokens=seq,
                rows_in_flight=rollout_rows, gpu_bytes=gpu_bytes)
    if kv_pool_bytes is not None:
        plan.rows_in_flight = int(kv_pool_bytes // (per_tok * seq))
    return plan


def format_plan(plan: Plan, title: str = "") -> str:
    """One compact table: a row per term, a column per phase (GB), totals, and the engine's in-flight sequences."""
    phases = list(plan.phases)
    names = [n for n in ORDER if any(n in plan.phases[p] for p in phases)]
    unit, scale = ("GB", GB) if plan.peak() >= GB else ("MB", 1e6)  # tiny CPU runs read in MB
    lines = [f"memory per GPU{': ' + title if title else ''} ({unit})",
             f"  {'':<15}" + "".join(f"{p:>10}" for p in phases)]
    for n in names:
        lines.append(f"  {n:<15}" + "".join(f"{plan.phases[p].get(n, 0) / scale:>10.2f}" for p in phases))
    lines.append(f"  {'total':<15}" + "".join(f"{plan.total(p) / scale:>10.2f}" for p in phases))
    if plan.seq_tokens:
        lines.append(f"  KV cache: {plan.kv_bytes_per_token / 1024:.0f} KiB a token, "
                     f"{plan.kv_bytes_per_token * plan.seq_tokens / scale:.2f} {unit} a {plan.seq_tokens:,}-slot row; "
                     f"{plan.rows_in_flight} rows in flight; a {plan.gpu_bytes / GB:.0f} GB GPU fits "
                     f"{plan.kv_capacity()} such rows")
    if plan.peak() > plan.gpu_bytes:
        lines.append(f"  warning: the peak {plan.peak() / GB:.1f} GB exceeds the GPU's {plan.gpu_bytes / GB:.0f} GB")
    return "\n".join(lines)


# -----------------------------------------------------------------------------------------------------------------
# from a stage's knobs


def uses_bf16(dtype_knob: str, device_type: str) -> bool:
    return dtype_knob == "bfloat16" or (dtype_knob == "auto" and device_type == "cuda")


def plan_for_knobs(stage: str, cfg, c, world_size: int, device_type: str = "cuda", gpu_bytes: float = 80 * GB,
                   kv_pool_bytes: float | None = None, checkpointing: bool | str | None = None) -> Plan:
    """c: the stage's knobs (midtrain.py / rl.py names). RL's lengths are the largest of the max_response_len
    schedule (the update packs to the longest sequence, so this is its worst case); a rank's rows in flight are
    rollout_batch_size, or its whole share when that is 0, in a KV pool of kv_budget when set. checkpointing:
    overrides c.grad_checkpointing; "auto" is decided by auto_checkpointing against gpu_bytes."""
    ckpt = c.grad_checkpointing if checkpointing is None else checkpointing
    if ckpt == "auto":
        ckpt = auto_checkpointing(stage, cfg, c, world_size, device_type, gpu_bytes)[0]
    bf16 = uses_bf16(c.dtype, device_type)
    common = dict(bf16=bf16, checkpointing=bool(ckpt), logits_chunk=c.logits_chunk,
                  parallel=c.parallel, world_size=world_size, gpu_bytes=gpu_bytes)
    if stage == "midtrain":
        micro = min(c.micro_batch, max(1, c.total_batch_tokens // (c.seq_len * world_size)))
        return midtrain_plan(cfg, micro_batch=micro, seq_len=c.seq_len, **common)
    sched = c.max_response_len
    response = max(sched.values()) if isinstance(sched, dict) else int(sched)
    share = c.prompts_per_step * c.group_size // world_size
    rows = min(c.rollout_batch_size, share) if c.rollout_batch_size else share
    micro = min(c.micro_batch, max(1, share // c.mini_batches))  # a forward never holds more than a mini-batch
    budget = getattr(c, "micro_batch_tokens", 0)
    if budget:
        budget = min(budget, max(1, share // c.mini_batches) * (c.max_prompt_len + response))
    kv = getattr(c, "kv_budget", 0)
    if kv_pool_bytes is None and kv:  # rl.py's pool: GB, or a fraction of the free memory (at most of the card)
        kv_pool_bytes = kv * GB if kv > 1 else kv * gpu_bytes
    return rl_plan(cfg, micro_batch=micro, prompt_len=c.max_prompt_len, response_len=response,
                   rollout_rows=rows, reference=c.kl_coef > 0, kv_pool_bytes=kv_pool_bytes,
                   micro_batch_tokens=budget, **common)


# grad_checkpointing="auto" turns checkpointing on when the step's plan without it needs more than this fraction
# of the device: the model leaves out the CUDA context and allocator fragmentation (~1-2 GB), NCCL buffers and
# torch.compile's workspaces, and it is within +-15% of measured peaks on CPU (tests/test_memory_model.py)
FIT_FRACTION = 0.85


def auto_checkpointing(stage: str, cfg, c, world_size: int, device_type: str, device_bytes: float,
                       device_name: str = "") -> tuple[bool, str]:
    """grad_checkpointing="auto": -> (on, one line with the numbers). On when the peak of the plan without
    checkpointing exceeds FIT_FRACTION x device_bytes (recomputing every block costs ~30% more compute, so it is
    only worth it where the activations do not fit)."""
    without, with_ = (plan_for_knobs(stage, cfg, c, world_size, device_type, device_bytes, checkpointing=flag).peak()
                      for flag in (False, True))
    usable = FIT_FRACTION * device_bytes
    on = without > usable
    where = f" of {device_name}" if device_name else ""
    return on, (f"grad_checkpointing auto -> {'on' if on else 'off'}: the step needs {without / GB:.2f} GB without "
                f"it, {with_ / GB:.2f} GB with it; {usable / GB:.1f} GB usable ({FIT_FRACTION:.0%} of "
                f"{device_bytes / GB:.1f} GB{where})")


def auto_keep_engine(cfg, c, world_size: int, device_type: str, device_bytes: float, checkpointing: bool,
                     device_name: str = "") -> tuple[bool, str]:
    """rl.py's keep_engine="auto": -> (keep, one line with the numbers). Keep the rollout engine through the update
    (its KV pool and the decode weights; under FSDP also the full-weight copy it decodes from) when the update's
    peak (with the checkpointing already decided) plus those fits FIT_FRACTION x device_bytes: keeping it never
    turns checkpointing on or shrinks a micro-batch, it only saves re-making the engine (and re-capturing its CUDA
    graphs) every step."""
    plan = plan_for_knobs("rl", cfg, c, world_size, device_type, device_bytes, checkpointing=checkpointing)
    rollout = plan.phases["rollout"]
    sharded = c.parallel == "fsdp" and world_size > 1
    kept = {"KV pool": rollout["KV cache"], "decode weights": rollout["decode weights"]}
    if sharded:
        kept["full-weight copy"] = rollout["inference copy"]
    update = plan.total("update")
    need = update + sum(kept.values())
    usable = FIT_FRACTION * device_bytes
    keep = need <= usable
    where = f" of {device_name}" if device_name else ""
    parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in kept.items())
    return keep, (f"keep_engine auto -> {'on' if keep else 'off'}: the update needs {update / GB:.2f} GB, "
                  f"{need / GB:.2f} GB beside the kept engine ({parts} GB); "
                  f"{usable / GB:.1f} GB usable ({FIT_FRACTION:.0%} of {device_bytes / GB:.1f} GB{where})")


def largest_micro_batch_tokens(cfg, c, world_size: int, device_bytes: float, checkpointing: bool = False,
                               device_type: str = "cuda", step: int = 1024) -> int:
    """The largest RL micro_batch_tokens (a multiple of step) whose update fits FIT_FRACTION of device_bytes (with
    or without checkpointing); 0 when not even one whole sequence at the longest stair fits. The RL presets take
    their budget from it."""
    def fits(budget):
        k = type(c)(**{**vars(c), "micro_batch_tokens": budget})
        plan = plan_for_knobs("rl", cfg, k, world_size, device_type, device_bytes, checkpointing=checkpointing)
        return plan.peak() <= FIT_FRACTION * device_bytes
    lo, hi = 0, step
    while fits(hi) and hi < 1 << 24:
        lo, hi = hi, 2 * hi
    while hi - lo > step:  # fits(lo) (or lo == 0), not fits(hi)
        mid = (lo + hi) // 2 // step * step
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def model_config_for(init_from: str):
    """The LlamaConfig a run starts from, without loading weights: a folder's config.json (our run folders follow
    `latest`), "scratch:<preset>", or, for a path that does not exist yet (a preset's checkpoint), the Llama 3.2
    size its name says ("...3b..." -> llama3.2-3b). None when none of these applies."""
    import json

    import model as model_lib
    if init_from.startswith("scratch:"):
        return model_lib.LlamaConfig.from_preset(init_from.split(":", 1)[1])
    if os.path.isdir(init_from):
        folder = model_lib.resolve_checkpoint(init_from)
        with open(os.path.join(folder, "config.json")) as f:
            return model_lib.LlamaConfig.from_hf_dict(json.load(f))
    m = re.search(r"(?<![0-9.])([13])b(?![a-z0-9])", os.path.basename(init_from.rstrip("/")).lower()) or \
        re.search(r"(?<![0-9.])([13])b(?![a-z0-9])", init_from.lower())
    return model_lib.LlamaConfig.from_preset(f"llama3.2-{m.group(1)}b") if m else None
