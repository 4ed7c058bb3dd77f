"""
The static decode step (sample.py's engine, issue 24): one function of preallocated device buffers, captured as a
CUDA graph per batch-size bucket and replayed, as vLLM and nano-vllm do; its rows live in fixed slots whose host
mirrors change only where a row changes, so a step costs the host a few copies, not a rebuild of the batch.

    step = DecodeStep(model, cache, rows=64, width=40, graphs=True)   # buffers for <= 64 rows; kept across calls
    step.begin(sampler, sample_key, per_row_dtype, vocab_mask)       # per generate call: the draw, the weights
    slot = step.add(seq, token, length, blocks, rid, t)               # a row joins (after its prefill)
    step.set_block(slot, k, block)                                    # it got block k of its table
    tok, lp = step.run(state_fn)                                      # one token for slots [:B], numpy on the host
    step.advance(slots, tokens); step.remove(slot)                    # after the host has read them

What a step reads is only its buffers: each slot's last token, cached length (= the new token's position) and block
table (one int64 row each, packed so the host sends them in one copy), and the sampler's per-row state (the kernel
sampler's keys, or the torch sampler's uniforms). `compute` has no host synchronisation and no data-dependent Python:
the rotary angles, the slot mapping, every layer through the decode kernels (model.decode_layers over the fused
weights of Llama.decode_weights), the lm_head and the draw. The step runs slots [:B], B the bucket (a power of two)
above the highest slot in use; a free slot points at a scratch block nobody reads and its output is ignored. Rows
keep their slot while they run (compact() moves the highest ones down when the live count drops a bucket).

On CUDA with graphs on, `compute` for a (bucket, sampler) pair is captured once (after a warm-up that compiles the
Triton kernels) and replayed; a captured graph reads fixed addresses, so the step keeps the KV pools (a pool that
grows gets new graphs) and the weights (Llama.decode_weights refreshes in place) it was captured with. sample.py
keeps one DecodeStep (and its cache) per model across generate calls, so the captures are paid once, not per call.
Elsewhere `compute` runs eagerly, on the table columns in use only. `compute` also runs under
torch.compile(fullgraph=True) (tests), the property capture needs.
"""
from __future__ import annotations

import heapq

import numpy as np
import torch
import torch.nn.functional as F

from kvcache import cdiv
from model import rope_cos_sin


def bucket(rows: int) -> int:
    """The padded batch a step of `rows` rows runs at: the next power of two. Few buckets keep the captures few (8
    for 128 rows); a padding row costs little in a step that reads every weight once anyway."""
    return 1 << max(0, rows - 1).bit_length()


class StepCache:
    """What the decode kernels read of a paged cache (model.Attention.decode_step): the pools, the rows' tables,
    each new token's slot and each row's key count, all views of DecodeStep's buffers."""

    paged = True

    def __init__(self, k, v, table, slots, ctx):
        self.k, self.v, self.table, self._slots, self._ctx = k, v, table, slots, ctx

    def slot_mapping(self, T: int) -> torch.Tensor:
        return self._slots

    def context_lens(self, T: int) -> torch.Tensor:
        return self._ctx


class DecodeStep:
    SCRATCH = 0  # the block free slots point at: the first one a fresh pool hands out (sample.py reserves it)

    def __init__(self, model, cache, rows: int, width: int, graphs: bool):
        """rows: most rows a step runs (its largest bucket); width: most blocks a sequence holds. graphs: capture
        CUDA graphs (on a CUDA device only; begin() may turn them off per call)."""
        dev = cache.device
        self.model, self.cache, self.width = model, cache, width
        self.rows = bucket(rows)
        self.can_graph = graphs and dev.type == "cuda"
        self.graphs_on = self.can_graph
        R, pin = self.rows, dev.type == "cuda"  # pinned host mirrors: the copies up are asynchronous
        # [R, 2 + W] per slot: its last token, its cached length, its block table; one copy host -> device a step
        self.host = torch.zeros(R, 2 + width, dtype=torch.long, pin_memory=pin)
        self.h = self.host.numpy()
        self.h[:, 2:] = self.SCRATCH
        self.buf = self.host.to(dev)
        self.tokens, self.lens, self.table = self.buf[:, 0], self.buf[:, 1], self.buf[:, 2:]  # views [R], [R], [R, W]
        # the sampler's per-row state (int64 kernel keys or fp32 uniforms), host mirror and device buffer, per dtype
        self.state_host = {dt: torch.zeros(R, dtype=dt, pin_memory=pin) for dt in (torch.long, torch.float32)}
        self.state_buf = {dt: torch.zeros(R, dtype=dt, device=dev) for dt in (torch.long, torch.float32)}
        self.per_row = None
        self.out = torch.zeros(R, 2, dtype=torch.float64, device=dev)  # [R, (token, log-prob)]: one copy down
        # per slot on the host only: the row's index in the call (i * n + j), the tokens it has generated, its owner
        self.rid = np.zeros(R, dtype=np.int64)
        self.t = np.zeros(R, dtype=np.int64)
        self.owner: list = [None] * R
        self.free = list(range(R))  # a heap: the lowest free slot first, so the live rows stay low
        self.used = np.zeros(R, dtype=bool)
        self.graphs: dict = {}
        self.masks: dict = {}  # sample_key -> the vocab mask tensor its graphs read
        self.graph_key = None  # the pools and weights the graphs were captured with
        self.mempool = None

    # --- per generate call ---------------------------------------------------------------------------------------

    def begin(self, sampler, sample_key, per_row_dtype, vocab_mask, graphs: bool = True):
        """sampler(logits [B, V] fp32, per_row [B] or None) -> (tokens [B], log-probs [B]): the draw, traceable;
        sample_key: what the draw's graph depends on (a captured graph bakes in the temperature and the kind);
        per_row_dtype: the dtype of its per-row state (int64 keys, fp32 uniforms), None when it has none (greedy).
        Refreshes the fused weights once (they do not move inside a call)."""
        for slot in np.flatnonzero(self.used):  # rows an interrupted call left behind
            self.remove(slot)
        self.sampler, self.sample_key = sampler, (sample_key, per_row_dtype)
        # a captured graph reads the mask it was captured with: keep that one (the key fixes its contents)
        self.vocab_mask = None if vocab_mask is None else self.masks.setdefault(self.sample_key, vocab_mask)
        self.per_row = None if per_row_dtype is None else self.state_buf[per_row_dtype]
        self.graphs_on = self.can_graph and graphs
        self.weights = self.model.decode_weights()  # a no-op unless the parameters moved since the last call

    # --- rows: the host mirrors ----------------------------------------------------------------------------------

    def add(self, owner, token: int, length: int, blocks: list[int], rid: int, t: int) -> int:
        """A row joins: its last token, its cached length, its blocks, its index in the call and the tokens it
        has generated; -> its slot (also set as owner.slot)."""
        slot = heapq.heappop(self.free)
        h = self.h[slot]
        h[0], h[1] = token, length
        h[2:2 + len(blocks)] = blocks
        self.rid[slot], self.t[slot], self.owner[slot], self.used[slot] = rid, t, owner, True
        owner.slot = slot
        return slot

    def set_block(self, slot: int, k: int, block: int):
        self.h[slot, 2 + k] = block

    def remove(self, slot: int):
        self.h[slot] = 0
        self.h[slot, 2:] = self.SCRATCH
        self.rid[slot] = self.t[slot] = 0  # a free slot's sampler state must index like a row's (u[rid, t])
        self.owner[slot].slot = -1
        self.owner[slot], self.used[slot] = None, False
        heapq.heappush(self.free, slot)

    def advance(self, slots: np.ndarray, tokens: np.ndarray):
        """The rows in slots each cached one more token and drew the next one, tokens."""
        self.h[slots, 0] = tokens
        self.h[slots, 1] += 1
        self.t[slots] += 1

    def compact(self) -> int:
        """Move the rows above the live count's bucket into free slots below it (lowest first); -> the bucket
        the next step runs at."""
        live = np.flatnonzero(self.used)
        B = bucket(len(live))
        for slot in live[live >= B]:
            owner = self.owner[slot]
            to = heapq.heappop(self.free)
            self.h[to], self.rid[to], self.t[to] = self.h[slot], self.rid[slot], self.t[slot]
            self.owner[to], self.used[to] = owner, True
            self.remove(slot)
            owner.slot = to
        return B

    # --- the step ------------------------------------------------------------------------------------------------

    def upload(self, state_fn=None) -> int:
        """Compact, then the mirrors of slots [:B] -> the device (state_fn(rid [B], t [B]) -> the sampler's per-row
        state [B] (numpy), when it has one); -> B."""
        B = self.compact()
        if self.per_row is not None:
            host = self.state_host[self.per_row.dtype]
            host.numpy()[:B] = state_fn(self.rid[:B], self.t[:B])
            self.per_row[:B].copy_(host[:B], non_blocking=True)
        self.buf[:B].copy_(self.host[:B], non_blocking=True)
        return B

    def run(self, state_fn=None) -> tuple[np.ndarray, np.ndarray]:
        """One decode step over slots [:B] -> (tokens [B] int64, log-probs [B] float64) on the host (free slots'
        entries are junk)."""
        B = self.upload(state_fn)
        if self.graphs_on:
            self.replay(B)
        else:  # eager: only the table columns in use
            self.compute(B, max(1, cdiv(int(self.h[:B, 1].max()) + 1, self.cache.block_size)))
        out = self.out[:B].cpu().numpy()  # the one host sync of a step
        return out[:, 0].astype(np.int64), out[:, 1]

    def compute(self, B: int, W: int):
        """One decode step over buffer rows :B and table columns :W; writes out [:B]."""
        tok, lp = self.sampler(self.logits(B, W), None if self.per_row is None else self.per_row[:B])
        self.out[:B, 0].copy_(tok)
        self.out[:B, 1].copy_(lp)

    def logits(self, B: int, W: int) -> torch.Tensor:
        """The next-token logits [B, V] fp32 of buffer rows :B (vocab mask applied)."""
        model, cache = self.model, self.cache
        lens, table = self.lens[:B], self.table[:B, :W]
        pos = lens[:, None]  # [B, 1]
        cos, sin = rope_cos_sin(model.inv_freq, pos)
        slots = table.gather(1, pos // cache.block_size) * cache.block_size + pos % cache.block_size  # [B, 1]
        view = StepCache(cache.k, cache.v, table, slots, lens + 1)
        x = model.embed_tokens(self.tokens[:B, None])  # [B, 1, dim]
        blocks, lm_head = self.weights
        logits = F.linear(model.decode_layers(x, cos, sin, view, (blocks, lm_head)), lm_head)[:, 0].float()  # [B, V]
        if self.vocab_mask is not None:
            logits = logits.masked_fill(self.vocab_mask, float("-inf"))
        return logits

    def replay(self, B: int):
        key = (self.cache.k[0].data_ptr(), self.weights[1].data_ptr())
        if key != self.graph_key:  # the pool grew (new tensors) or the weights were re-made: capture again
            # into a fresh memory pool: the old graphs were that pool's only users, and capturing into a pool whose
            # graphs are gone trips the caching allocator (seen on an H200 when the KV pool grew mid-generate)
            self.graphs, self.graph_key = {}, key
            self.mempool = torch.cuda.graph_pool_handle()
        gk = (B, self.sample_key)
        if gk not in self.graphs:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up: Triton compiles, allocator settles (writes what replay writes)
                self.compute(B, self.width)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.mempool):
                self.compute(B, self.width)
            self.graphs[gk] = graph
        self.graphs[gk].replay()
