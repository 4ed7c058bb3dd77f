"""
Paged KV cache: one pool of fixed-size blocks per layer, shared by every sequence in flight (vLLM's PagedAttention,
as nano-vllm lays it out). A sequence owns a block table (list of block ids); token p of it lives in block
table[p // block_size] at offset p % block_size. Blocks are reference-counted so the n samples of a prompt can
point at the same full prompt blocks (written once by one prefill, never written again).

    pool = BlockPool(num_blocks)                           # the allocator (pure bookkeeping, no tensors)
    cache = PagedKVCache.for_model(model, num_blocks, block_size)
    cache.set_batch(tables, lens)                          # rows of the next model call: tables, tokens cached
    logits = model(tokens[:, None], cache=cache)           # attention reads/writes through the tables
    cache.advance(1)

The model sees the same interface as model.KVCache (positions / update / mask / advance), so the torch path of
model.py runs unchanged: update() scatters the new keys into their slots and gathers each row's blocks into a
contiguous [B, Hkv, L, D] view for SDPA (a copy: the CPU path trades it for not holding max_len per row).
"""
from __future__ import annotations

import torch

from configurator import UserError
from lm_head import autocast_dtype


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class BlockPool:
    """Free list + reference counts over block ids 0 .. num_blocks-1."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.free = list(range(num_blocks - 1, -1, -1))  # pop() hands out low ids first
        self.refs = [0] * num_blocks
        self.peak_used = 0

    @property
    def n_free(self) -> int:
        return len(self.free)

    def allocate(self) -> int:
        if not self.free:
            raise RuntimeError("KV block pool exhausted (the scheduler must preempt before allocating)")
        b = self.free.pop()
        self.refs[b] = 1
        self.peak_used = max(self.peak_used, self.num_blocks - len(self.free))
        return b

    def grow(self, num_blocks: int):
        """Add ids num_blocks_before .. num_blocks-1 (free)."""
        self.free[:0] = range(num_blocks - 1, self.num_blocks - 1, -1)  # new ids go last: low ids stay first
        self.refs += [0] * (num_blocks - self.num_blocks)
        self.num_blocks = num_blocks

    def share(self, b: int) -> int:
        self.refs[b] += 1
        return b

    def release(self, blocks: list[int]):
        for b in blocks:
            self.refs[b] -= 1
            if self.refs[b] == 0:
                self.free.append(b)


def bytes_per_block(cfg, block_size: int, dtype: torch.dtype) -> int:
    """K and V of every layer for block_size tokens."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.n_layers * block_size * cfg.n_kv_heads * cfg.head_dim * itemsize


def blocks_for_budget(cfg, budget: float, block_size: int, dtype: torch.dtype, device) -> int:
    """budget > 1: GB for the pool; 0 < budget <= 1: that fraction of the device's free memory (CUDA only)."""
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget <= 0:
        raise UserError(f"kv_budget must be > 0 (GB, or a fraction <= 1 of free GPU memory), got {budget!r}")
    if budget <= 1:
        if device.type != "cuda":
            raise UserError(f"kv_budget={budget} is a fraction of free GPU memory, but the model is on "
                            f"{device.type}: give the pool size in GB (> 1) or leave kv_budget=None")
        free, _ = torch.cuda.mem_get_info(device)
        nbytes = budget * free
    else:
        nbytes = budget * 1e9
    return int(nbytes // bytes_per_block(cfg, block_size, dtype))


class PagedKVCache:
    """Per layer k/v pools [num_blocks, Hkv, block_size, D] in the compute dtype, plus the rows of the current model
    call: table [B, nb] (block ids, padded with 0: padding is never attended) and lens [B] (tokens already cached).
    The pools are stored [num_blocks, block_size, Hkv, D] (k[l], v[l] are transposed views; the kernels take any
    strides) so that the torch path's gather of a row's blocks is one copy: [B, nb, bs, Hkv, D] is already
    [B, nb * bs, Hkv, D] in memory."""

    paged = True

    def __init__(self, n_layers, num_blocks, block_size, n_kv_heads, head_dim, dtype=torch.float32, device="cpu"):
        shape = (num_blocks, block_size, n_kv_heads, head_dim)
        self._k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self._v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.k = [t.transpose(1, 2) for t in self._k]  # [NB, Hkv, bs, D] views
        self.v = [t.transpose(1, 2) for t in self._v]
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self.device = torch.device(device)
        self._gather_buf = [torch.empty(0, dtype=dtype, device=device) for _ in range(2)]  # k, v; reused
        self.table = torch.zeros(0, 1, dtype=torch.long, device=device)
        self.lens = torch.zeros(0, dtype=torch.long, device=device)
        self.new = None  # [B] tokens each row adds this call, when rows are padded (set_batch)
        self._slots = self._ctx = None

    @classmethod
    def for_model(cls, model, num_blocks: int, block_size: int, dtype=None):
        """dtype defaults to the compute dtype (autocast's inside an autocast region), as model.KVCache.for_model."""
        cfg, p = model.config, model.embed_tokens.weight
        if dtype is None:
            dtype = autocast_dtype(p)
        return cls(cfg.n_layers, num_blocks, block_size, cfg.n_kv_heads, cfg.head_dim, dtype, p.device)

    @property
    def batch(self) -> int:
        return self.lens.shape[0]

    @property
    def capacity(self) -> int:
        """Blocks the pool tensors hold (>= pool.num_blocks, the ids in use: a kept cache may be larger)."""
        return self._k[0].shape[0]

    def reset(self, num_blocks: int):
        """A fresh allocator over num_blocks ids (every block free) for the next generate call; the tensors are
        kept (a captured graph reads their addresses) unless they hold fewer blocks. Old contents are never read:
        a block is written before any row attends to it."""
        self.pool = BlockPool(min(num_blocks, self.capacity))
        if num_blocks > self.capacity:
            self.grow(num_blocks)

    def grow(self, num_blocks: int):
        """Enlarge the pools to num_blocks (a copy: old and new pools coexist for a moment); block ids keep their
        contents. For a pool sized by use rather than up front. Within the tensors' capacity only ids are added."""
        if num_blocks <= self.capacity:
            self.pool.grow(num_blocks)
            return

        def bigger(t):
            out = t.new_zeros((num_blocks,) + tuple(t.shape[1:]))
            out[:t.shape[0]] = t
            return out
        self._k = [bigger(t) for t in self._k]
        self._v = [bigger(t) for t in self._v]
        self.k = [t.transpose(1, 2) for t in self._k]
        self.v = [t.transpose(1, 2) for t in self._v]
        self.pool.grow(num_blocks)

    def copy_block(self, src: int, dst: int):
        """A fork's private copy of a shared partial block (the samples of a prompt diverge inside it)."""
        for t in self._k + self._v:
            t[dst].copy_(t[src])

    def set_batch(self, tables: list[list[int]], lens: list[int], width: int, new: list[int] | None = None):
        """Rows of the next model call; every row's table must cover lens[b] + the tokens that call adds.
        width: table columns (block slots) to gather, enough for the longest row after the call. new: tokens each
        row adds when rows are right-padded to one length T (a batched prefill): row b's tokens past new[b] are
        padding, whose keys are never written (and, being later than every real token, never attended)."""
        rows = [t[:width] + [0] * (width - len(t)) for t in tables]  # one host -> device copy per call
        self.table = torch.tensor(rows, dtype=torch.long).to(self.device)
        self.lens = torch.tensor(lens, dtype=torch.long).to(self.device)
        self.new = None if new is None else torch.tensor(new, dtype=torch.long).to(self.device)
        self._slots = self._ctx = None

    def positions(self, T: int) -> torch.Tensor:
        """Rotary positions [B, T] of the next T tokens: no padding, a row's position is its token index."""
        return self.lens[:, None] + torch.arange(T, device=self.device)[None, :]

    def slot_mapping(self, T: int) -> torch.Tensor:
        """[B, T] flat slot (block * block_size + offset) of each new token; computed once per model call."""
        if self._slots is None or self._slots.shape[1] != T:
            pos = self.positions(T)
            col = (pos // self.block_size).clamp(max=self.table.shape[1] - 1)  # a pad may point past the table
            self._slots = self.table.gather(1, col) * self.block_size + pos % self.block_size  # [B, T]
            if self.new is not None:  # padding: slot -1, dropped by update()
                pad = torch.arange(T, device=self.device)[None, :] >= self.new[:, None]
                self._slots = self._slots.masked_fill(pad, -1)
        return self._slots

    def context_lens(self, T: int) -> torch.Tensor:
        """[B] keys each row attends to after writing its next T tokens; computed once per model call (every
        layer's attention reads it)."""
        if self._ctx is None or self._ctx[0] != T:
            self._ctx = (T, self.lens + T)
        return self._ctx[1]

    def update(self, layer: int, k, v):
        """k, v [B, Hkv, T, D] -> every row's keys/values so far, gathered [B, Hkv, width * block_size, D]."""
        B, Hkv, T, D = k.shape
        slots = self.slot_mapping(T).reshape(-1)  # [B*T]
        keep = None if self.new is None else slots >= 0  # padded rows: their real tokens only
        bs = self.block_size
        for pool, new in ((self._k[layer], k), (self._v[layer], v)):
            new = new.transpose(1, 2).reshape(B * T, Hkv, D).to(pool.dtype)
            if keep is None:
                pool[slots // bs, slots % bs] = new
            else:
                pool[slots[keep] // bs, slots[keep] % bs] = new[keep]
        W = self.table.shape[1]
        rows = self.table.reshape(-1)  # [B*W] block ids

        def gather(pool, which):  # [NB, bs*Hkv*D] rows -> [B, W*bs, Hkv, D] -> [B, Hkv, W*bs, D] (views)
            # into a buffer kept across layers and steps: the layer's attention consumes it before the next layer
            # gathers, and writing into warm memory is ~5x faster on CPU than filling a fresh allocation
            n = B * W * bs * Hkv * D
            if self._gather_buf[which].numel() < n:
                self._gather_buf[which] = pool.new_empty(n)
            out = self._gather_buf[which][:n].view(B * W, bs * Hkv * D)
            torch.index_select(pool.view(pool.shape[0], -1), 0, rows, out=out)
            return out.view(B, W * bs, Hkv, D).transpose(1, 2)

        return gather(self._k[layer], 0), gather(self._v[layer], 1)

    def mask(self, T: int) -> torch.Tensor:
        """[B, 1, T, width*block_size]: query i of row b sees keys 0 .. lens[b]+i (its own slot included, so no row
        is fully masked); gathered slots past that (other rows' lengths, padding blocks) are hidden."""
        S = self.table.shape[1] * self.block_size
        kpos = torch.arange(S, device=self.device)
        qpos = self.positions(T)  # [B, T]
        return (kpos[None, None, :] <= qpos[:, :, None])[:, None]

    def advance(self, T: int):
        self.lens = self.lens + (T if self.new is None else self.new)
        self._slots = self._ctx = None
