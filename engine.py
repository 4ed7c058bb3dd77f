"""
The generation engine's scheduler (sample.py's engine, nano-vllm's design): the model calls it makes (a prefill of
one sequence or of several padded into one forward, one decode step of the batch) and continuous batching over a
paged KV cache (kvcache.py): sequences with their block tables, admission while slots and blocks are free (the n
samples of a prompt share its full prompt blocks), a block for each row's next token, preemption of the newest
sequence when the pool runs out (recomputed later), and the slots of the static decode step (decode_step.py).

    eng = Engine(model, cache, prompts, n, cap, max_blocks, step)   # step: a DecodeStep or None
    fresh = eng.admit()                  # [(seq, next-token logits [V])]: prefilled now
    rows = eng.reserve_decode(running)   # the rows that decode this step (each has a slot for its next token)
    logits = eng.decode(rows)            # or eng.decode_static(rows, state_fn) -> (tokens, log-probs) on the host

sample.py's run_engine drives it a step at a time.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from decode_step import DecodeStep
from kvcache import PagedKVCache, cdiv

# -----------------------------------------------------------------------------------------------------------------
# the model calls: prefill (one sequence, or several padded into one forward) and one decode step for the batch


def prefill(model, ids: list[int], cache: PagedKVCache, blocks: list[int], start: int = 0,
            max_tokens: int = 2**14) -> torch.Tensor:
    """Run tokens ids[start:] of one sequence into its blocks (ids[:start] are cached already); -> the last
    position's logits [V] fp32 (no other position's logits are computed). Long inputs go through in pieces of at
    most max_tokens tokens, which bounds the activations; the keys land in the same slots either way."""
    device = cache.device
    for a in range(start, len(ids), max_tokens):
        piece = ids[a:a + max_tokens]
        cache.set_batch([blocks], [a], cdiv(a + len(piece), cache.block_size))
        logits = model(torch.tensor([piece], device=device), cache=cache, last_only=True)  # [1, 1, V]
    return logits[0, -1].float()


def prefill_batch(model, seqs: list[tuple[list[int], list[int]]], cache: PagedKVCache,
                  max_tokens: int = 2**14) -> tuple[list[torch.Tensor], int]:
    """Prefill sequences (ids, blocks), nothing of them cached yet, several per forward: rows right-padded to the
    longest of their forward (padding is neither written nor attended: PagedKVCache.set_batch's `new`), as many
    rows as keep rows * length <= max_tokens; a longer sequence goes alone, in pieces (prefill). -> each one's
    last-position logits [V] fp32, in order (what one prefill per sequence gives), and the forwards it took."""
    out: list = [None] * len(seqs)
    group: list[int] = []
    forwards = [0]

    def run_group():
        lens = [len(seqs[g][0]) for g in group]
        T = max(lens)
        idx = torch.tensor([seqs[g][0] + [0] * (T - n) for g, n in zip(group, lens)], device=cache.device)  # [B, T]
        cache.set_batch([seqs[g][1] for g in group], [0] * len(group), cdiv(T, cache.block_size), new=lens)
        last = torch.tensor(lens, device=cache.device) - 1  # [B]: each row's last real position
        logits = model(idx, cache=cache, last_only=last)  # [B, 1, V]
        for r, g in enumerate(group):
            out[g] = logits[r, -1].float()
        group.clear()
        forwards[0] += 1

    for k, (ids, blocks) in enumerate(seqs):
        if len(ids) > max_tokens:
            out[k] = prefill(model, ids, cache, blocks, max_tokens=max_tokens)
            forwards[0] += cdiv(len(ids), max_tokens)
            continue
        if group and max(len(ids), *(len(seqs[g][0]) for g in group)) * (len(group) + 1) > max_tokens:
            run_group()
        group.append(k)
    if group:
        run_group()
    return out, forwards[0]


def decode_one_token(model, tokens: torch.Tensor, cache: PagedKVCache) -> torch.Tensor:
    """tokens [B] (the last sampled token of each row; cache.set_batch done) -> next-token logits [B, V] fp32."""
    logits = model(tokens[:, None], cache=cache)  # [B, 1, V]
    cache.advance(1)
    return logits[:, -1].float()


# -----------------------------------------------------------------------------------------------------------------
# the scheduler: sequences, block tables, admission, preemption


@dataclass(eq=False)
class Seq:
    i: int  # prompt index
    j: int  # sample index
    prompt: list[int]
    order: int  # admission order: the newest running sequence is preempted first
    out: list[int] = field(default_factory=list)
    lp: list[float] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    cached: int = 0  # tokens whose keys/values are in the blocks (prompt + out[:-1] while running)
    reason: str | None = None
    live: bool = False  # in Engine.running
    slot: int = -1  # its row in the static decode step's buffers while it decodes there (decode_step.py)


class Engine:
    """Continuous batching over a paged cache: `waiting` holds (prompt i, [sample j ...]) groups not started yet
    and preempted sequences (to resume first); `running` holds at most `cap` sequences."""

    def __init__(self, model, cache: PagedKVCache, prompts: list[list[int]], n: int, cap: int, max_blocks: int,
                 step: DecodeStep | None = None):
        self.model, self.cache, self.pool, self.prompts, self.cap = model, cache, cache.pool, prompts, cap
        self.step = step  # the static decode step whose slots hold the decoding rows, or None (plain path)
        self.n = n
        self.max_blocks = max_blocks  # > the pool's size: it doubles (up to this) before anything is preempted
        self.waiting: deque = deque((i, list(range(n))) for i in range(len(prompts)))
        self.running: list[Seq] = []
        self.admitted = 0
        self.prefills = 0  # sequences prefilled (one per prompt group admitted, one per resumed sequence)
        self.prefill_forwards = 0  # model calls they took (several sequences share one: prefill_batch)
        self.preemptions = 0

    def _fits(self, need: int, length: int, adding: int) -> bool:
        """Admit (adding sequences of `length` cached tokens, `need` new blocks) only if the next decode step can
        still give every running row a slot: else it would preempt what was just prefilled. A lone sequence
        always fits (checked against the pool size up front)."""
        bs = self.cache.block_size
        growth = sum(s.cached == len(s.blocks) * bs for s in self.running) + (adding if length % bs == 0 else 0)
        return self.make_free(need + (growth if self.running else 0))

    def make_free(self, k: int) -> bool:
        """Are k blocks free, after growing the pool if it may grow?"""
        while self.pool.n_free < k and self.pool.num_blocks < self.max_blocks:
            self.cache.grow(min(self.max_blocks, 2 * self.pool.num_blocks))
        return self.pool.n_free >= k

    def admit(self) -> list[tuple[Seq, torch.Tensor]]:
        """Start waiting sequences while batch slots and blocks are free, prefilled together (prefill_batch);
        -> (sequence, next-token logits [V])."""
        todo, forks, bs = [], [], self.cache.block_size  # todo: (ids, blocks, the sequences they start)
        while self.waiting and len(self.running) < self.cap:
            item = self.waiting[0]
            if isinstance(item, Seq):  # resume: re-prefill prompt + generated tokens into fresh blocks
                ids = item.prompt + item.out
                if not self._fits(cdiv(len(ids), bs), len(ids), 1):
                    break
                self.waiting.popleft()
                item.blocks = [self.pool.allocate() for _ in range(cdiv(len(ids), bs))]
                item.cached, item.order, item.live = len(ids), self._next_order(), True
                self.running.append(item)
                todo.append((ids, item.blocks, [item]))
                continue
            started = self._admit_group(*item, forks)
            if not started:
                break
            todo.append(started)
        if not todo:
            return []
        logits, forwards = prefill_batch(self.model, [(ids, blocks) for ids, blocks, _ in todo], self.cache)
        self.prefills += len(todo)
        self.prefill_forwards += forwards
        for src, dst in forks:  # after the prefill wrote the shared partial block
            self.cache.copy_block(src, dst)
        return [(s, lg) for (_, _, seqs), lg in zip(todo, logits) for s in seqs]

    def _next_order(self) -> int:
        self.admitted += 1
        return self.admitted

    def _admit_group(self, i: int, js: list[int], forks: list):
        """Up to the free slots of prompt i's waiting samples: one prefill (the caller's), full prompt blocks
        shared by all of them, the last partial block copied per sample (they write their own tokens into it:
        (source, copy) pairs go to forks, copied once the prefill is done); -> (ids, blocks, sequences) or None."""
        bs, ids = self.cache.block_size, self.prompts[i]
        k = min(len(js), self.cap - len(self.running))
        n_full, part = divmod(len(ids), bs)
        if not self._fits(n_full + (k if part else 0), len(ids), k):
            return None
        first = [self.pool.allocate() for _ in range(cdiv(len(ids), bs))]
        seqs = []
        for m, j in enumerate(js[:k]):
            blocks = first if m == 0 else [self.pool.share(b) for b in first[:n_full]]
            if m > 0 and part:
                blocks.append(self.pool.allocate())
                forks.append((first[-1], blocks[-1]))
            seqs.append(Seq(i, j, ids, self._next_order(), blocks=list(blocks), cached=len(ids), live=True))
        if k < len(js):
            self.waiting[0] = (i, js[k:])
        else:
            self.waiting.popleft()
        self.running += seqs
        return ids, first, seqs

    def preempt(self, s: Seq):
        """Free a sequence's blocks and queue it to resume first (its tokens so far are kept)."""
        self.finish(s)
        s.cached = 0
        self.waiting.appendleft(s)
        self.preemptions += 1

    def reserve_decode(self, rows: list[Seq]) -> list[Seq]:
        """Give every row a slot for its next token, preempting the newest running sequences when the pool is
        empty; -> the rows still running (oldest first)."""
        bs = self.cache.block_size
        for s in sorted(rows, key=lambda s: s.order):
            if not s.live or s.cached < len(s.blocks) * bs:
                continue
            while not self.make_free(1):
                self.preempt(max(self.running, key=lambda r: r.order))
                if not s.live:
                    break
            if s.live:
                s.blocks.append(self.pool.allocate())
                if s.slot >= 0:
                    self.step.set_block(s.slot, len(s.blocks) - 1, s.blocks[-1])
        return [s for s in rows if s.live]

    def decode(self, rows: list[Seq]) -> torch.Tensor:
        """One decode step for rows (each feeds its last token) -> logits [len(rows), V]."""
        bs = self.cache.block_size
        self.cache.set_batch([s.blocks for s in rows], [s.cached for s in rows],
                             max(cdiv(s.cached + 1, bs) for s in rows))
        tokens = torch.tensor([s.out[-1] for s in rows], device=self.cache.device)
        logits = decode_one_token(self.model, tokens, self.cache)
        for s in rows:
            s.cached += 1
        return logits

    def decode_static(self, rows: list[Seq], state_fn) -> tuple[np.ndarray, np.ndarray]:
        """One static decode step (decode_step.py) over the slots of rows -> (tokens, log-probs) [len(rows)] on
        the host; each row's slot then holds its new token."""
        tok, lp = self.step.run(state_fn)  # [B] over the step's slots
        slots = np.fromiter((s.slot for s in rows), dtype=np.int64, count=len(rows))
        tok, lp = tok[slots], lp[slots]
        self.step.advance(slots, tok)
        for s in rows:
            s.cached += 1
        return tok, lp

    def join_step(self, s: Seq):
        """A row that drew its first token from its prefill's logits decodes in the static step from now on."""
        self.step.add(s, s.out[-1], s.cached, s.blocks, s.i * self.n + s.j, len(s.out))

    def finish(self, s: Seq):
        self.pool.release(s.blocks)
        s.blocks = []
        self.running.remove(s)
        s.live = False
        if s.slot >= 0:
            self.step.remove(s.slot)
