"""
The static decode step (sample.py's engine, issue 24): one function of preallocated device buffers, captured as a
CUDA graph per batch-size bucket and replayed, as vLLM and nano-vllm do.

    step = DecodeStep(model, cache, rows=64, width=40, sampler=..., ...)   # buffers for <= 64 rows
    tok, lp = step(tokens, lens, tables, per_row)        # one token for each row: [B] int64, [B] fp32 (on device)

What a step reads is only its buffers: the rows' last tokens, their cached lengths (= the new token's position),
their block tables, and the sampler's per-row state (the kernel sampler's keys, or the torch sampler's uniforms).
The host fills them (one copy each) and calls `compute`, which has no host synchronisation and no data-dependent
Python: the rotary angles, the slot mapping, every layer through the decode kernels (model.decode_layers over the
fused weights of Llama.decode_weights), the lm_head and the draw. Rows are padded up to a bucket (a power of two):
a padding row writes its key into a scratch block nobody reads and its outputs are ignored.

On CUDA with graphs on, `compute` for a bucket is captured once (after a warm-up that compiles the Triton kernels)
and replayed; a captured graph reads fixed addresses, so the step keeps the KV pools (a pool that grows gets new
graphs) and the weights (Llama.decode_weights refreshes in place) it was captured with. Elsewhere `compute` runs
eagerly, on the current table width only. `compute` also runs under torch.compile(fullgraph=True) (tests), the
property capture needs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kvcache import cdiv
from model import rope_cos_sin

def bucket(rows: int) -> int:
    """The padded batch a step of `rows` rows runs at: the next power of two. Graphs are captured per generate call
    (its KV pool is its own), so few buckets keep the captures few (8 for 128 rows); a padding row costs little in
    a step that reads every weight once anyway."""
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
    def __init__(self, model, cache, rows: int, width: int, *, sampler, per_row_dtype, vocab_mask, graphs: bool):
        """rows: most rows a step runs (its largest bucket); width: most blocks a sequence holds. sampler(logits
        [B, V] fp32, per_row [B] or None) -> (tokens [B], log-probs [B]): the draw, traceable; per_row_dtype: the
        dtype of its per-row state (int64 keys, fp32 uniforms), None when it has none (greedy). graphs: capture
        CUDA graphs (on a CUDA device only)."""
        dev = cache.device
        self.model, self.cache, self.width = model, cache, width
        self.rows = bucket(rows)
        self.sampler, self.vocab_mask = sampler, vocab_mask
        self.graphs_on = graphs and dev.type == "cuda"
        self.scratch = cache.pool.allocate()  # padding rows write here; never freed, never read as a real key
        long = dict(dtype=torch.long, device=dev)
        self.tokens = torch.zeros(self.rows, **long)  # [R] each row's last token
        self.lens = torch.zeros(self.rows, **long)  # [R] tokens cached = the new token's position
        self.table = torch.full((self.rows, width), self.scratch, **long)  # [R, W] block tables
        # [R] the sampler's per-row state at each row's step: the kernel's keys or the torch sampler's uniforms
        self.per_row = None if per_row_dtype is None else torch.zeros(self.rows, dtype=per_row_dtype, device=dev)
        self.out_tok = torch.zeros(self.rows, **long)
        self.out_lp = torch.zeros(self.rows, dtype=torch.float32, device=dev)
        self.graphs: dict = {}
        self.graph_key = None  # the pools the graphs were captured with
        self.mempool = torch.cuda.graph_pool_handle() if self.graphs_on else None

    def compute(self, B: int, W: int):
        """One decode step over buffer rows :B and table columns :W; writes out_tok / out_lp [:B]."""
        tok, lp = self.sampler(self.logits(B, W), None if self.per_row is None else self.per_row[:B])
        self.out_tok[:B].copy_(tok)
        self.out_lp[:B].copy_(lp)

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

    def load(self, tokens: list[int], lens: list[int], tables: list[list[int]], per_row: list):
        """Host -> the buffers, one copy each: rows past len(tokens) (the bucket's padding) point at the scratch
        block. per_row: the sampler's state [len(tokens)] on the host (kernel keys, or uniforms), or None."""
        n, R, W = len(tokens), self.rows, self.width
        pad = R - n
        self.tokens.copy_(torch.tensor(tokens + [0] * pad))
        self.lens.copy_(torch.tensor(lens + [0] * pad))
        self.table.copy_(torch.tensor([t + [self.scratch] * (W - len(t)) for t in tables] + [[self.scratch] * W] * pad))
        if self.per_row is not None:
            self.per_row.copy_(F.pad(per_row, (0, pad)))

    def __call__(self, tokens, lens, tables, per_row) -> tuple[torch.Tensor, torch.Tensor]:
        """One token for each of len(tokens) rows -> (tokens [B], log-probs [B]) on the device."""
        n = len(tokens)
        self.weights = self.model.decode_weights()  # a no-op unless the parameters moved since the last call
        self.load(tokens, lens, tables, per_row)
        if not self.graphs_on:
            W = max(cdiv(x + 1, self.cache.block_size) for x in lens)  # eager: only the columns in use
            self.compute(n, W)
        else:
            self.replay(bucket(n))
        return self.out_tok[:n], self.out_lp[:n]

    def replay(self, B: int):
        key = (self.cache.k[0].data_ptr(), self.weights[1].data_ptr())
        if key != self.graph_key:  # the pool grew (new tensors) or the weights were re-made: capture again
            # into a fresh memory pool: the old graphs were that pool's only users, and capturing into a pool whose
            # graphs are gone trips the caching allocator (seen on an H200 when the KV pool grew mid-generate)
            self.graphs, self.graph_key = {}, key
            self.mempool = torch.cuda.graph_pool_handle()
        if B not in self.graphs:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up: Triton compiles, allocator settles (writes what replay writes)
                self.compute(B, self.width)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.mempool):
                self.compute(B, self.width)
            self.graphs[B] = graph
        self.graphs[B].replay()
