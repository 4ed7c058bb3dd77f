"""
The Llama 3 architecture (as in Llama-3.2-1B/3B), from scratch, in one file.

    model = Llama.from_pretrained("path/to/Llama-3.2-1B")      # any HF snapshot folder
    logits = model(idx)                                         # idx [B, T] -> logits [B, T, V]
    logits, loss = model(idx, targets=targets)                  # mean cross-entropy, ignore_index -100
    logits = model(idx, cache=cache, last_only=True)            # generation: [B, 1, V], the next token's only
    model.save_pretrained("out/export")                         # transformers loads it back

Module and parameter names follow Hugging Face's LlamaForCausalLM (minus its "model." prefix), so a checkpoint
maps one to one, with no conversion table to get wrong. Checkpoints of our own runs are HF folders too, plus the
tokenizer, the run's config and the training state (see save_checkpoint / load_checkpoint at the bottom).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

# the folder atomics live in data/files.py; save_pretrained / save_checkpoint use them (older callers import them here)
from data.files import atomic_dir, fsync_path, fsync_tree, remove_stale_temp_dirs, write_atomic  # noqa: F401
from lm_head import autocast_dtype, chunked_cross_entropy, chunked_logprobs, full_logprobs

# -----------------------------------------------------------------------------------------------------------------
# config


@dataclass
class LlamaConfig:
    vocab_size: int = 128256
    dim: int = 2048
    n_layers: int = 16
    n_heads: int = 32
    n_kv_heads: int = 8
    ffn_dim: int = 8192
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    # Llama 3.1+ frequency scaling: keys factor, low_freq_factor, high_freq_factor, original_max_position_embeddings
    rope_scaling: dict | None = None
    max_seq_len: int = 131072
    tie_embeddings: bool = True
    bos_id: int | None = 128000
    eos_id: int | None = 128001

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"LlamaConfig.{name} must be a positive int, got {v!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"LlamaConfig: dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"LlamaConfig: n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig: head_dim {self.head_dim} must be even for rotary embeddings")
        if not (self.norm_eps > 0 and self.rope_theta > 0):
            raise ValueError("LlamaConfig: norm_eps and rope_theta must be > 0")
        if self.rope_scaling is not None:
            need = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
            missing = need - set(self.rope_scaling)
            if missing:
                raise ValueError(f"LlamaConfig.rope_scaling is missing {sorted(missing)}")
            s = self.rope_scaling
            if not (s["factor"] > 0 and s["high_freq_factor"] > s["low_freq_factor"] > 0):
                raise ValueError(f"LlamaConfig.rope_scaling has invalid values: {s}")
            self.rope_scaling = {k: s[k] for k in sorted(need)}

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_preset(cls, name: str, **overrides) -> LlamaConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_hf_dict(self, dtype: torch.dtype = torch.float32) -> dict:
        # The older layout (rope_theta + rope_scaling) is read by every transformers version, 5.x included.
        d = {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": self.vocab_size, "hidden_size": self.dim, "intermediate_size": self.ffn_dim,
            "num_hidden_layers": self.n_layers, "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads, "head_dim": self.head_dim, "hidden_act": "silu",
            "max_position_embeddings": self.max_seq_len, "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta, "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": False, "mlp_bias": False, "bos_token_id": self.bos_id, "eos_token_id": self.eos_id,
            "torch_dtype": str(dtype).removeprefix("torch."),
        }
        d["rope_scaling"] = None if self.rope_scaling is None else {"rope_type": "llama3", **self.rope_scaling}
        return d

    @classmethod
    def from_hf_dict(cls, d: dict) -> LlamaConfig:
        archs = d.get("architectures") or ["LlamaForCausalLM"]
        if d.get("model_type", "llama") != "llama" or "LlamaForCausalLM" not in archs:
            raise ValueError(f"unsupported architecture: model_type={d.get('model_type')!r} architectures={archs}; "
                             "nanoOcto loads Llama (LlamaForCausalLM) checkpoints only")
        for flag in ("attention_bias", "mlp_bias"):
            if d.get(flag):
                raise ValueError(f"unsupported Llama variant: {flag}=true")
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {d['hidden_act']!r} (Llama uses silu)")
        # transformers >= 5 nests theta and scaling in rope_parameters; older files use rope_theta + rope_scaling.
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "llama3"):
            raise ValueError(f"unsupported rope type {rope_type!r} (supported: default, llama3)")
        scaling = None
        if rope_type == "llama3":
            scaling = {k: rope[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                            "original_max_position_embeddings") if k in rope}
        try:
            n_heads = d["num_attention_heads"]
            cfg = cls(
                vocab_size=d["vocab_size"], dim=d["hidden_size"], n_layers=d["num_hidden_layers"],
                n_heads=n_heads, n_kv_heads=d.get("num_key_value_heads") or n_heads,
                ffn_dim=d["intermediate_size"], norm_eps=float(d.get("rms_norm_eps", 1e-5)),
                rope_theta=float(theta), rope_scaling=scaling,
                max_seq_len=d.get("max_position_embeddings", 2048),
                tie_embeddings=bool(d.get("tie_word_embeddings", False)),
                bos_id=_first_id(d.get("bos_token_id")), eos_id=_first_id(d.get("eos_token_id")),
            )
        except KeyError as e:
            raise ValueError(f"config.json is missing the required key {e}") from None
        if d.get("head_dim") not in (None, cfg.head_dim):
            raise ValueError(f"unsupported head_dim {d['head_dim']} != hidden_size / num_attention_heads = {cfg.head_dim}")
        return cfg


def _first_id(x):
    return x[0] if isinstance(x, list) and x else x


PRESETS = {
    # The real shapes of Meta's Llama 3.2 base models.
    "llama3.2-1b": dict(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192, tie_embeddings=True,
                        rope_scaling=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
    "llama3.2-3b": dict(dim=3072, n_layers=28, n_heads=24, n_kv_heads=8, ffn_dim=8192, tie_embeddings=True,
                        rope_scaling=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
    # Small CPU presets: vocab_size is set from the tokenizer by the training script.
    "micro": dict(vocab_size=1024, dim=256, n_layers=6, n_heads=8, n_kv_heads=2, ffn_dim=768, max_seq_len=1024,
                  rope_theta=10000.0, rope_scaling=None, bos_id=None, eos_id=None),
    "nano": dict(vocab_size=1024, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, max_seq_len=512,
                 rope_theta=10000.0, rope_scaling=None, bos_id=None, eos_id=None),
    "test": dict(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=128,
                 rope_theta=10000.0, rope_scaling=None, bos_id=None, eos_id=None),
}

# -----------------------------------------------------------------------------------------------------------------
# building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # normalise in fp32 (bf16 squares lose too much), cast back, then scale: HF's order, for exact parity
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_inv_freq(cfg: LlamaConfig) -> torch.Tensor:
    """Rotary inverse frequencies [head_dim / 2], with Llama 3.1's long-context rescaling if configured."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    s = cfg.rope_scaling
    if s is None:
        return inv_freq.float()
    # Llama 3.1: long wavelengths (low frequencies) are slowed down by `factor`, short ones are kept, and the band
    # between low_freq_wavelen and high_freq_wavelen is interpolated smoothly.
    old_ctx = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = old_ctx / s["low_freq_factor"]
    high_freq_wavelen = old_ctx / s["high_freq_factor"]
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s["factor"], inv_freq)
    smooth = (old_ctx / wavelen - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
    blended = (1 - smooth) * scaled / s["factor"] + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(medium, blended, scaled).float()


def rope_cos_sin(inv_freq: torch.Tensor, pos: torch.Tensor):
    """pos [B, T] -> cos, sin [B, T, head_dim / 2] in fp32."""
    angles = pos.to(torch.float32)[..., None] * inv_freq  # [B, T, D/2]
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x [B, T, H, D]; HF's rotate_half layout: dims i and i + D/2 form a rotating pair."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[:, :, None, :], sin[:, :, None, :]  # broadcast over heads
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


class KVCache:
    """
    Preallocated keys/values for generation, per layer [B, Hkv, S, D] (GQA: only the kv heads are stored).
    All rows write at the same `slot`; ragged prompts are left-padded, and row b's real keys are the slots
    start[b] .. slot-1, so one integer moves the whole batch and every row's attention span stays contiguous.
    """

    def __init__(self, n_layers, batch, n_kv_heads, max_len, head_dim, dtype=torch.float32, device="cpu"):
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.start = torch.zeros(batch, dtype=torch.long, device=device)
        self.slot = 0
        self.max_len = max_len

    @classmethod
    def for_model(cls, model: Llama, batch: int, max_len: int, dtype=None):
        """dtype defaults to the compute dtype keys are made in: autocast's (bf16) inside an autocast region over
        fp32 weights, else the weights'. Half the memory of an fp32 cache, what serving engines keep, and no
        rounding the model does not do anyway: k/v come out of bf16 matmuls (DESIGN.md "GPU" has the numbers)."""
        cfg, p = model.config, model.embed_tokens.weight
        if dtype is None:
            dtype = autocast_dtype(p)
        return cls(cfg.n_layers, batch, cfg.n_kv_heads, max_len, cfg.head_dim, dtype, p.device)

    @property
    def batch(self) -> int:
        return self.start.shape[0]

    def positions(self, T: int) -> torch.Tensor:
        """Rotary positions [B, T] of the next T tokens: their slot minus the row's first real slot."""
        slots = torch.arange(self.slot, self.slot + T, device=self.start.device)
        return (slots[None, :] - self.start[:, None]).clamp(min=0)

    def update(self, layer: int, k, v):
        """k, v [B, Hkv, T, D] for the current slot; returns all keys/values so far [B, Hkv, slot+T, D]."""
        T = k.shape[2]
        if self.slot + T > self.max_len:
            raise ValueError(f"KV cache is full: {self.slot} + {T} tokens > max_len {self.max_len}")
        self.k[layer][:, :, self.slot:self.slot + T] = k
        self.v[layer][:, :, self.slot:self.slot + T] = v
        return self.k[layer][:, :, :self.slot + T], self.v[layer][:, :, :self.slot + T]

    def mask(self, T: int) -> torch.Tensor:
        """Boolean attention mask [B, 1, T, slot+T]: query i sees keys start[b] .. slot+i. A left-pad query
        (slot+i < start[b]) has no real key; it sees its own slot instead, so no softmax row is fully masked (some
        CUDA SDPA kernels return NaN for those, and a NaN in a pad row would poison any sum over the batch). Real
        queries never see a pad key either way: their own slot is already real."""
        S = self.slot + T
        kpos = torch.arange(S, device=self.start.device)
        qpos = torch.arange(self.slot, S, device=self.start.device)
        causal = kpos[None, :] <= qpos[:, None]  # [T, S]
        own = kpos[None, :] == qpos[:, None]  # [T, S]
        real = kpos[None, :] >= self.start[:, None]  # [B, S]
        return ((causal[None] & real[:, None, :]) | own[None])[:, None]

    def advance(self, T: int):
        self.slot += T

    def select(self, rows: torch.Tensor):
        """Keep, reorder or repeat rows (compaction of finished rows; n samples that share one prefill)."""
        rows = rows.to(self.start.device)
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]
        self.start = self.start.index_select(0, rows)


def use_decode_kernels(device) -> bool:
    """Triton decode kernels on CUDA (or when NANOOCTO_KERNELS=triton forces them); plain torch otherwise."""
    if device.type != "cuda" and os.environ.get("NANOOCTO_KERNELS", "auto").lower() != "triton":
        return False  # keeps CPU runs free of the triton import
    from octo_kernels import resolve_impl
    return resolve_impl(None, device) == "triton"


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer: int):
        super().__init__()
        self.layer, self.n_heads, self.n_kv_heads, self.head_dim = layer, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def qkv(self, x):
        """x [B, T, dim] -> q [B, T, H, D], k and v [B, T, Hkv, D]."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        return q, k, v

    def decode_step(self, x, cos, sin, cache: KVCache, w_qkv, w_o):
        """One token per row through the Triton kernels: q, k and v from one matmul with the fused weight w_qkv
        [(H + 2 Hkv) * D, dim] (Llama.decode_weights), rotary fused with the cache write, then split-K decode
        attention over each row's slots. x [B, 1, dim] -> [B, 1, dim]."""
        import octo_kernels
        B, H, Hkv, D = x.shape[0], self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = F.linear(x, w_qkv).split([H * D, Hkv * D, Hkv * D], dim=-1)  # [B, 1, (H + 2 Hkv) D] -> 3 views
        q, k, v = q.view(B, 1, H, D), k.view(B, 1, Hkv, D), v.view(B, 1, Hkv, D)
        if getattr(cache, "paged", False):  # kvcache.PagedKVCache: writes and reads go through the block table
            from octo_kernels.decode_attention import decode_attention_paged
            from octo_kernels.rope import rope_cache_update_paged
            kp, vp = cache.k[self.layer], cache.v[self.layer]
            q = rope_cache_update_paged(q, k, v, cos, sin, kp, vp, cache.slot_mapping(1))
            y = decode_attention_paged(q[:, 0], kp, vp, cache.table, cache.context_lens(1))  # [B, H, D]
            return F.linear(y.reshape(B, 1, -1), w_o)
        q = octo_kernels.rope_cache_update(q, k, v, cos, sin, cache.k[self.layer], cache.v[self.layer], cache.slot)
        y = octo_kernels.decode_attention(q[:, 0], cache.k[self.layer], cache.v[self.layer], cache.start,
                                          cache.slot + 1)  # [B, H, D]
        return F.linear(y.reshape(B, 1, -1), w_o)

    def forward(self, x, cos, sin, cache: KVCache | None = None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            k, v = cache.update(self.layer, k, v)  # [B, Hkv, slot+T, D]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=cache.mask(T), enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))  # [B, T, H*D]


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))

    def decode_step(self, x, delta, cos, sin, cache: KVCache, w):
        """forward() for one token per row through the Triton kernels, with every residual add fused into the
        RMSNorm that follows it. The add that ends a block is left to the next block's input norm, so this takes
        the residual stream x [B, 1, dim] *before* the previous block's MLP output delta was added (delta None for
        the first block) and returns its own (x, delta): the caller's final norm does the last add. w: this
        block's (qkv, o, gate_up, down) weights from Llama.decode_weights."""
        import octo_kernels
        w_qkv, w_o, w_gu, w_down = w
        norm1, norm2 = self.input_layernorm, self.post_attention_layernorm
        mm = w_qkv.dtype  # norms hand their output to a matmul in this dtype (bf16 under autocast): no cast between
        if delta is None:
            h = octo_kernels.rms_norm(x, norm1.weight, norm1.eps, y_dtype=mm)
        else:
            h, x = octo_kernels.rms_norm(delta, norm1.weight, norm1.eps, residual=x, y_dtype=mm)  # x <- x + delta
        attn = self.self_attn.decode_step(h, cos, sin, cache, w_qkv, w_o)
        h, x = octo_kernels.rms_norm(attn, norm2.weight, norm2.eps, residual=x, y_dtype=mm)
        return x, F.linear(octo_kernels.silu_mul(F.linear(h, w_gu)), w_down)  # SwiGLU: gate/up in one matmul


# -----------------------------------------------------------------------------------------------------------------
# the model


class Llama(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.gradient_checkpointing = False  # recompute each block in backward: less memory, ~30% more compute
        # the torch.compile backend runtime.compile_model compiled each block with (in place), None = eager; the
        # chunked loss / log-probs use it too (lm_head.chunk_fns), and a KV-cache forward runs the blocks eagerly
        self.compile_backend = None
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        """Init for training from scratch: std 0.02, residual projections (o_proj, down_proj) scaled by
        1/sqrt(2 * n_layers) so the residual stream's variance does not grow with depth; norm gains 1."""
        for b in self.layers:
            for m in (b.self_attn.o_proj, b.mlp.down_proj):
                nn.init.normal_(m.weight, 0.0, 0.02 / math.sqrt(2 * self.config.n_layers))
            for m in (b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj, b.mlp.gate_proj, b.mlp.up_proj):
                nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.ones_(b.input_layernorm.weight)
            nn.init.ones_(b.post_attention_layernorm.weight)
        nn.init.normal_(self.embed_tokens.weight, 0.0, 0.02)
        if not self.config.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, 0.0, 0.02)
        nn.init.ones_(self.norm.weight)

    def forward(self, idx, targets=None, pos=None, cache: KVCache | None = None, last_only: bool | torch.Tensor = False, *,
                chunk_size: int = 0, logprobs: bool = False, temperature: float = 1.0, vocab_size: int | None = None,
                need_entropy: bool = False, entropy_grad: bool = False):
        """idx [B, T] -> logits [B, T, V] (or (logits, loss) with targets). last_only: logits of the last position
        only, [B, 1, V] (a prefill that needs just the next token skips the [B, T, dim] x [dim, V] matmul); a
        LongTensor [B] instead names each row's last position (right-padded rows of a batched prefill).
        chunk_size > 0 with targets: the loss goes through the vocabulary chunk_size tokens at a time and
        (None, loss) is returned; no [B, T, V] logits exist, in forward or backward.
        logprobs=True (needs targets) -> (logp [B, T], entropy [B, T] or None) in fp32, 0 where targets == -100, under
        softmax(logits[..., :vocab_size] / temperature); the entropy with need_entropy, carrying a gradient only
        with entropy_grad; chunked by chunk_size (0: all logits at once). Computed here, in forward, because DDP's
        gradient hooks and FSDP's unsharding of lm_head.weight only run through the wrapper's __call__."""
        B, T = idx.shape
        if last_only is not False and targets is not None:
            raise ValueError("last_only=True computes the last position's logits only; the loss needs all of them")
        if logprobs and targets is None:
            raise ValueError("logprobs=True gives the log-probs of `targets`: pass targets [B, T] (-100 = skip)")
        if cache is not None and pos is None:
            pos = cache.positions(T)
        if pos is None:
            if T > self.config.max_seq_len:
                raise ValueError(f"sequence length {T} exceeds the model's context {self.config.max_seq_len}")
            pos = torch.arange(T, device=idx.device)[None].expand(B, T)
        cos, sin = rope_cos_sin(self.inv_freq, pos)
        x = self.embed_tokens(idx)
        if cache is not None and T == 1 and not torch.is_grad_enabled() and use_decode_kernels(idx.device):
            return F.linear(self.decode_layers(x, cos, sin, cache), self.decode_weights()[1])  # the decode hot path
        # compiled blocks run eagerly with a KV cache (prefill, decode): its length changes every call and the block
        # reads the cache's slot and the layer index, so each call would recompile (13 graphs for 12 tokens)
        eager = cache is not None and self.compile_backend is not None
        with torch.compiler.set_stance("force_eager") if eager else contextlib.nullcontext():
            for block in self.layers:
                if self.gradient_checkpointing and self.training and cache is None:
                    x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, use_reentrant=False)
                else:
                    x = block(x, cos, sin, cache)
        if isinstance(last_only, torch.Tensor):
            x = x[torch.arange(B, device=x.device), last_only][:, None]  # [B, 1, dim]
        elif last_only:
            x = x[:, -1:]  # [B, 1, dim]
        h = self.norm(x)  # [B, T, dim]
        if logprobs:
            return self.target_logprobs(h, targets, temperature, vocab_size, need_entropy, entropy_grad, chunk_size)
        if targets is not None and chunk_size > 0:
            return None, self.chunked_loss(h, targets, chunk_size)
        logits = self.lm_head(h)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def target_logprobs(self, h, targets, temperature, vocab_size, need_entropy, entropy_grad, chunk_size):
        """forward(logprobs=True) from the final hidden states h [B, T, dim]: only the target positions go through
        the vocabulary (prompt and padding positions are dropped first)."""
        mask = targets != -100
        tgt = targets[mask]  # [N], row-major
        if chunk_size > 0:
            w = self.lm_head.weight  # sliced only when rows are cut: a slice's backward writes a [V, dim] copy
            w = w[:vocab_size] if vocab_size is not None and vocab_size < w.shape[0] else w
            logp, ent = chunked_logprobs(h[mask], w, tgt, temperature, chunk_size, need_entropy,
                                         self.compile_backend)
            ent = (ent if entropy_grad else ent.detach()) if need_entropy else None
        else:  # all [B, T, V] logits at once: the previous path, kept as the reference
            logits = self.lm_head(h)[mask][:, :vocab_size]  # [N, V]
            logp, ent = full_logprobs(logits, tgt, temperature, need_entropy, entropy_grad)
        on_mask = lambda v: torch.zeros(mask.shape, dtype=torch.float32, device=h.device).masked_scatter(mask, v)  # noqa: E731
        return on_mask(logp), None if ent is None else on_mask(ent)

    def chunked_loss(self, h, targets, chunk_size: int):
        """Mean cross-entropy over targets != -100 from h [B, T, dim], chunk_size tokens at a time. Ignored positions
        go through too (with weight 0): no data-dependent shapes, so torch.compile keeps one graph."""
        return chunked_cross_entropy(h.reshape(-1, h.size(-1)), self.lm_head.weight, targets.reshape(-1), chunk_size,
                                     self.compile_backend)

    def decode_layers(self, x, cos, sin, cache: KVCache, weights=None):
        """The blocks and the final norm for one token per row, all through the kernels (no autograd): every
        RMSNorm is one kernel fused with the residual add before it. x [B, 1, dim] -> normed [B, 1, dim].
        weights: decode_weights(), when the caller holds them (a traced or captured step reads no version)."""
        import octo_kernels
        delta, (blocks, lm_head) = None, weights or self.decode_weights()
        for block, w in zip(self.layers, blocks):
            x, delta = block.decode_step(x, delta, cos, sin, cache, w)
        return octo_kernels.rms_norm(delta, self.norm.weight, self.norm.eps, residual=x,
                                     y_dtype=lm_head.dtype)[0]  # norm(x + delta)

    def decode_weights(self) -> tuple[list[tuple], torch.Tensor]:
        """The decode kernels' matrices in the compute dtype: ([(qkv, o, gate_up, down) per block], lm_head), with
        q/k/v and gate/up concatenated along the output dim so each is one matmul ([(H + 2 Hkv) D, dim] and
        [2 ffn, dim]). The parameters keep the HF layout (checkpoints, the optimizer and its state keyed by name,
        FSDP's per-block sharding and training never see the fused ones): these are copies beside them, made once
        and refreshed in place whenever a parameter moved (its data pointer or version counter changed: optimizer
        steps, load_state_dict), so their addresses stay fixed (a captured CUDA graph keeps reading them). A matrix
        already in the compute dtype (o, down, lm_head of a bf16 model) is the parameter itself. Costs the fused
        projections once more in memory (under autocast over fp32 weights: every matrix once more in bf16, and no
        per-step cast of each weight)."""
        dtype = autocast_dtype(self.embed_tokens.weight)
        groups = []
        for b in self.layers:
            a, m = b.self_attn, b.mlp
            groups += [(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight), (a.o_proj.weight,),
                       (m.gate_proj.weight, m.up_proj.weight), (m.down_proj.weight,)]
        groups.append((self.lm_head.weight,))
        key = tuple((p.data_ptr(), p._version) for g in groups for p in g)
        cached = self.__dict__.get("_decode_w")
        if cached is not None and cached[0] == key and cached[1] == dtype:
            return cached[2]
        old = cached[3] if cached is not None and cached[1] == dtype else [None] * len(groups)
        mats = []
        # plain tensors even inside inference_mode: a later call (outside it) refreshes them in place
        with torch.inference_mode(False), torch.no_grad():
            for g, buf in zip(groups, old):
                if len(g) == 1 and g[0].dtype == dtype:
                    mats.append(g[0])
                    continue
                if buf is None or buf.shape[0] != sum(p.shape[0] for p in g) or buf.device != g[0].device:
                    buf = torch.empty((sum(p.shape[0] for p in g),) + tuple(g[0].shape[1:]), dtype=dtype,
                                      device=g[0].device)
                torch.cat([p.detach().to(dtype) for p in g], out=buf)
                mats.append(buf)
        L = len(self.layers)
        out = ([tuple(mats[4 * i:4 * i + 4]) for i in range(L)], mats[-1])
        # the key is taken after the copies: reading a parameter does not move its version
        self.__dict__["_decode_w"] = (key, dtype, out, [None if m is g[0] else m for m, g in zip(mats, groups)])
        return out

    # --- bookkeeping -------------------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weights are counted once by parameters()
        if non_embedding:
            n -= self.embed_tokens.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward): 6 per matmul weight (the lm_head included,
        the embedding lookup not) plus the attention score/value matmuls, 12 * layers * dim * seq_len (PaLM)."""
        cfg = self.config
        n_matmul = self.num_params(non_embedding=True) + cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 0)
        n_matmul -= sum(p.numel() for n, p in self.named_parameters() if p.dim() == 1)
        return 6 * n_matmul + 12 * cfg.n_layers * cfg.dim * seq_len

    def configure_optimizer(self, lr, weight_decay, betas=(0.9, 0.95), eps=1e-8, device_type="cpu"):
        """AdamW with weight decay on matrices (and embeddings) only; norms' gains are not decayed."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=device_type == "cuda")

    # --- Hugging Face I/O --------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype | None = None, device="cpu") -> Llama:
        """Load an HF snapshot folder (config.json + model.safetensors or a sharded index). The model is built on
        the meta device and the loaded tensors are assigned directly, so only one copy of the weights exists."""
        path = resolve_checkpoint(path)
        cfg_path = os.path.join(path, "config.json")
        if not os.path.isfile(cfg_path):
            raise FileNotFoundError(f"no config.json in {path!r}: expected a Hugging Face model folder")
        try:
            with open(cfg_path) as f:
                hf = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
        config = LlamaConfig.from_hf_dict(hf)
        state = load_safetensors_folder(path, dtype=dtype, device=device)
        with torch.device("meta"):
            model = cls(config)
        model.load_hf_state_dict(state)
        model.inv_freq = rope_inv_freq(config).to(device)
        return model

    def load_hf_state_dict(self, state: dict):
        """Assign HF-named tensors (model.layers.0..., lm_head.weight) to this model, checking every name/shape."""
        ours = {}
        for name, t in state.items():
            key = name.removeprefix("model.")
            if name == "lm_head.weight" and self.config.tie_embeddings:
                continue  # tied: the output matrix is the embedding (some exports save both)
            ours[key] = t
        expected = {k: p.shape for k, p in self.state_dict().items() if not (k == "lm_head.weight" and self.config.tie_embeddings)}
        missing = sorted(set(expected) - set(ours))
        if missing:
            hint = " (config says untied embeddings but lm_head.weight is absent)" if missing == ["lm_head.weight"] else ""
            raise ValueError(f"checkpoint is missing tensor(s) {missing[:5]}{hint}")
        unexpected = sorted(set(ours) - set(expected))
        if unexpected:
            raise ValueError(f"checkpoint has unexpected tensor(s) {unexpected[:5]}")
        for k, shape in expected.items():
            if ours[k].shape != shape:
                what = " (vocab size mismatch with config.json)" if "embed_tokens" in k or "lm_head" in k else ""
                raise ValueError(f"tensor {k!r} has shape {tuple(ours[k].shape)}, expected {tuple(shape)}{what}")
        self.load_state_dict(ours, strict=False, assign=True)
        if self.config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def hf_state_dict(self) -> dict:
        sd = {}
        for k, t in unwrap_model(self).state_dict().items():
            name = hf_name(k, self.config.tie_embeddings)
            if name is not None:
                sd[name] = t
        return {k: v.detach().contiguous() for k, v in sd.items()}

    def save_pretrained(self, path: str, dtype: torch.dtype | None = None):
        """Write config.json + model.safetensors that transformers' LlamaForCausalLM loads, atomically."""
        with atomic_dir(path) as tmp:
            write_hf_files(self, tmp, dtype)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP (.module) and torch.compile (._orig_mod) wrappers, so saved keys never carry their prefixes."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def load_safetensors_folder(path: str, dtype=None, device="cpu") -> dict:
    from safetensors import SafetensorError, safe_open

    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
    elif os.path.isfile(single):
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path!r}")
    state = {}
    for fname in files:
        fpath = os.path.join(path, fname)
        if not os.path.isfile(fpath):
            raise FileNotFoundError(f"weight shard {fpath!r} listed in the index does not exist")
        try:
            with safe_open(fpath, framework="pt", device=str(device)) as f:
                for key in f.keys():
                    t = f.get_tensor(key)
                    state[key] = t.to(dtype) if dtype is not None else t
        except (SafetensorError, OSError, RuntimeError) as e:
            raise ValueError(f"cannot read weights from {fpath!r} (corrupted or truncated?): {e}") from None
    return state


def hf_name(key: str, tied: bool) -> str | None:
    """Our state_dict key -> its HF name (None: the tied lm_head, which HF folders leave out)."""
    key = key.removeprefix("_orig_mod.")  # a torch.compile'd module adds this prefix
    if key == "lm_head.weight":
        return None if tied else key
    return "model." + key


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
                      torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def write_safetensors(path: str, specs: list[tuple[str, tuple, torch.dtype]], tensors, metadata: dict | None = None):
    """A .safetensors file written one tensor at a time: specs (name, shape, dtype) in file order give the header
    up front, then tensors (an iterable of as many tensors, in that order) are written as they come, so a caller
    that gathers each from shards holds one at a time (the library's save_file wants them all in memory)."""
    header, offset = {}, 0
    for name, shape, dtype in specs:
        n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as the library writes it
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        count = 0
        for (name, shape, dtype), t in zip(specs, tensors):
            if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                raise ValueError(f"tensor {name!r} is {tuple(t.shape)} {t.dtype}, the header says {shape} {dtype}")
            f.write(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)  # raw little-endian
            count += 1
        if count != len(specs):
            raise ValueError(f"{path}: got {count} tensors for {len(specs)} header entries")


def write_hf_files(model: Llama, folder: str, dtype: torch.dtype | None = None, tensors=None):
    """config.json + model.safetensors in HF names. tensors: an iterable of (hf name, full tensor) in hf_names'
    order instead of the model's own (runtime gathers FSDP shards this way, one tensor at a time)."""
    model = unwrap_model(model)
    if tensors is None:
        tensors = model.hf_state_dict().items()
    names = hf_names(model)
    # shapes from the (possibly sharded) parameters: a DTensor's shape is the full one
    sd = model.state_dict()
    specs = [(name, tuple(sd[k].shape), dtype or sd[k].dtype) for k, name in names]

    def in_order():
        for (_, want), (name, t) in zip(names, tensors):
            if name != want:
                raise ValueError(f"tensor {name!r} came where {want!r} belongs")
            yield t.to(dtype) if dtype is not None else t

    write_safetensors(os.path.join(folder, "model.safetensors"), specs, in_order(), {"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(model.config.to_hf_dict(specs[0][2]), f, indent=2)


def hf_names(model: Llama) -> list[tuple[str, str]]:
    """[(state_dict key, HF name)] of the tensors an HF folder holds, in state_dict order."""
    tied = model.config.tie_embeddings
    return [(k, n) for k in unwrap_model(model).state_dict() if (n := hf_name(k, tied)) is not None]


# -----------------------------------------------------------------------------------------------------------------
# checkpoints of our runs: an HF folder + tokenizer + run config + training state, written atomically


def save_checkpoint(path, model, tokenizer=None, run_config: dict | None = None, state: dict | None = None,
                    dtype: torch.dtype | None = None, tensors=None):
    """One checkpoint folder, atomically, then `latest` naming it. tensors: see write_hf_files."""
    with atomic_dir(path) as tmp:
        write_hf_files(model, tmp, dtype, tensors)
        if tokenizer is not None:
            tokenizer.save(tmp)
        if run_config is not None:
            with open(os.path.join(tmp, "run_config.json"), "w") as f:
                json.dump(run_config, f, indent=2, default=str)
        if state is not None:
            torch.save(state, os.path.join(tmp, "state.pt"))
    # `latest` names the newest checkpoint of a run folder; written atomically too
    parent = os.path.dirname(os.path.abspath(path))
    write_atomic(os.path.join(parent, "latest"), os.path.basename(os.path.abspath(path)) + "\n")


def resolve_checkpoint(path: str) -> str:
    """A checkpoint folder as given, or a run folder whose `latest` file names one."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint path {path!r} does not exist")
    latest = os.path.join(path, "latest")
    if os.path.isfile(latest) and not os.path.isfile(os.path.join(path, "config.json")):
        with open(latest) as f:
            name = f.read().strip()
        target = os.path.join(path, name)
        if not os.path.isdir(target):
            raise FileNotFoundError(f"{latest} names {name!r}, which does not exist")
        return target
    return path


def load_checkpoint(path: str, dtype=None, device="cpu", load_state: bool = False):
    """-> (model, tokenizer, state or None). The tokenizer saved beside the weights is the one the model knows."""
    from data.tokenizer import Tokenizer

    path = resolve_checkpoint(path)
    model = Llama.from_pretrained(path, dtype=dtype, device=device)
    tokenizer = Tokenizer.from_pretrained(path)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer in {path!r} has {tokenizer.vocab_size} ids but the model's vocab_size is "
                         f"{model.config.vocab_size}: they do not belong together")
    state = None
    state_path = os.path.join(path, "state.pt")
    if load_state and os.path.isfile(state_path):
        # memory-mapped: each rank of a sharded run reads only its slices of the (full) optimizer moments
        state = torch.load(state_path, map_location="cpu", weights_only=False, mmap=True)
    return model, tokenizer, state

