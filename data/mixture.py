"""Weighted, seeded, rank-disjoint training batches from several shard folders, with a saveable position.

The loader defines ONE global stream of sequences, the same on every rank:
  * global sequence g comes from source S(g): S is drawn by weight with a seeded numpy generator that every rank
    advances identically (one uniform per global sequence, in order), so the stream does not depend on how it is
    cut into rounds;
  * each source walks its windows in a seeded permutation: window w is tokens [w*(T+1), (w+1)*(T+1)) of the
    source's token stream (its {split}_*.bin shards concatenated in name order, so a window may span two shards;
    only the last < T+1 tokens of a source are never used). Epoch e of source s uses the permutation seeded by
    (seed, s, e); a source that runs out starts its next epoch (logged once per source and epoch, on rank 0).
  * next_batch() consumes one round of world_size * micro_batch global sequences; rank r gets round positions
    [r*micro_batch, (r+1)*micro_batch). So one process doing 2 calls with micro_batch b sees exactly the sequences
    that 2 ranks with micro_batch b see in one call (rank 0's, then rank 1's).
state_dict() holds the global position (sequences drawn, per-source cursor and epoch, generator state); because
the stream is global, a run may resume with another world_size or micro_batch and continue the same stream.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Callable, Iterator

import numpy as np
import torch

from data.shards import read_header, read_shard

STATE_VERSION = 1


def _source_seed(name: str) -> int:
    """A stable 32-bit id for a source name (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "little")


def open_source(folder: str, split: str = "train") -> dict:
    """Memory-map a folder's {split}_*.bin shards. Returns {folder, shards (memmaps), offsets [n+1] (start of each
    shard in the concatenated stream), tokens, vocab_size}. Clear errors for a missing folder, no shards, shards
    written by different tokenizers, or shards that disagree with the folder's done.json."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"source folder not found: {folder!r}")
    paths = sorted(glob.glob(os.path.join(folder, f"{split}_*.bin")))
    if not paths:
        raise ValueError(f"{folder}: no {split}_*.bin shards (run python -m data.prepare to make them)")
    done_path = os.path.join(folder, "done.json")
    if os.path.isfile(done_path):  # catch stray or missing shards from another run
        with open(done_path, encoding="utf-8") as f:
            listed = json.load(f).get(f"{split}_shards")
        if listed is not None and sorted(listed) != [os.path.basename(p) for p in paths]:
            raise ValueError(f"{folder}: the {split} shards on disk do not match done.json ({len(paths)} files vs "
                             f"{len(listed)} listed)")
    vocab_sizes = {read_header(p)["vocab_size"] for p in paths}
    if len(vocab_sizes) != 1:
        raise ValueError(f"{folder}: {split} shards have different vocab sizes {sorted(vocab_sizes)} "
                         "(written by different tokenizers)")
    shards = [read_shard(p) for p in paths]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in shards])]).astype(np.int64)
    return {"folder": folder, "shards": shards, "offsets": offsets, "tokens": int(offsets[-1]),
            "vocab_size": vocab_sizes.pop()}


def read_span(src: dict, start: int, length: int) -> np.ndarray:
    """Tokens [start, start+length) of a source's concatenated stream as int64, across shard boundaries."""
    out = np.empty(length, dtype=np.int64)
    i = int(np.searchsorted(src["offsets"], start, side="right")) - 1  # shard holding `start`
    pos, filled = start, 0
    while filled < length:
        shard, base = src["shards"][i], int(src["offsets"][i])
        take = min(length - filled, len(shard) - (pos - base))
        out[filled:filled + take] = shard[pos - base:pos - base + take]
        filled, pos, i = filled + take, pos + take, i + 1
    return out


def _to_xy(windows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = torch.from_numpy(np.stack(windows))  # [B, T+1] int64
    return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()  # x, y: [B, T], y[t] = x[t+1]


class MixtureLoader:
    """next_batch() -> (x, y) int64 [micro_batch, seq_len]; see the module docstring for the exact stream."""

    def __init__(self, sources: dict[str, str], weights: dict[str, float], seq_len: int, micro_batch: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0, split: str = "train",
                 log: Callable[[str], None] = print):
        if not sources:
            raise ValueError("MixtureLoader needs at least one source")
        if set(weights) != set(sources):
            raise ValueError(f"weights and sources must name the same sources: weights without a source "
                             f"{sorted(set(weights) - set(sources))}, sources without a weight "
                             f"{sorted(set(sources) - set(weights))}")
        bad = {k: w for k, w in weights.items() if not (np.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        if sum(weights.values()) <= 0:
            raise ValueError(f"at least one weight must be > 0, got {weights}")
        if seq_len < 1 or micro_batch < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need seq_len >= 1, micro_batch >= 1, 0 <= rank < world_size; got seq_len={seq_len}, "
                             f"micro_batch={micro_batch}, rank={rank}, world_size={world_size}")
        self.names = sorted(sources)  # sorted: the stream must not depend on dict insertion order
        self.seq_len, self.micro_batch, self.rank, self.world_size = seq_len, micro_batch, rank, world_size
        self.seed, self.split, self.log = seed, split, log
        total = float(sum(weights.values()))
        self.weights = {n: float(weights[n]) / total for n in self.names}
        self.sources = {n: open_source(sources[n], split) for n in self.names}
        vocab = {n: s["vocab_size"] for n, s in self.sources.items()}
        if len(set(vocab.values())) != 1:
            raise ValueError(f"sources were tokenized with different vocab sizes: {vocab}")
        self.vocab_size = next(iter(vocab.values()))
        self.n_windows = {n: s["tokens"] // (seq_len + 1) for n, s in self.sources.items()}
        too_small = [n for n in self.names if self.weights[n] > 0 and self.n_windows[n] == 0]
        if too_small:
            raise ValueError(f"sources {too_small} have fewer than seq_len+1={seq_len + 1} {split} tokens")
        cdf = np.cumsum([self.weights[n] for n in self.names])
        cdf[-1] = 1.0  # u < 1 always lands in some bucket despite rounding
        self._cdf = cdf
        self._rng = np.random.Generator(np.random.PCG64([seed, _source_seed("mixture:" + split)]))
        self.cursor = {n: 0 for n in self.names}  # next position in the current epoch's permutation
        self.epoch = {n: 0 for n in self.names}
        self.sequences = 0  # global sequences drawn so far
        self._perm_cache: dict[str, tuple[int, np.ndarray]] = {}
        self.last_sources: list[str] = []  # source of each row of the latest batch (for logging)

    def _permutation(self, name: str, epoch: int) -> np.ndarray:
        cached = self._perm_cache.get(name)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, _source_seed(name), epoch])
            cached = (epoch, rng.permutation(self.n_windows[name]))
            self._perm_cache[name] = cached
        return cached[1]

    def _next_window(self, name: str) -> int:
        if self.cursor[name] == self.n_windows[name]:
            self.epoch[name] += 1
            self.cursor[name] = 0
            if self.rank == 0:
                self.log(f"mixture: source {name!r} ({self.split}) used all {self.n_windows[name]} windows; "
                         f"starting epoch {self.epoch[name]}")
        w = int(self._permutation(name, self.epoch[name])[self.cursor[name]])
        self.cursor[name] += 1
        return w

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_round = self.world_size * self.micro_batch
        # every rank draws the whole round (same generator, same cursors) and reads only its own rows
        picks = np.minimum(np.searchsorted(self._cdf, self._rng.random(n_round), side="right"), len(self.names) - 1)
        lo, hi = self.rank * self.micro_batch, (self.rank + 1) * self.micro_batch
        windows, mine = [], []
        for j, k in enumerate(picks):
            name = self.names[int(k)]
            w = self._next_window(name)
            if lo <= j < hi:
                windows.append(read_span(self.sources[name], w * (self.seq_len + 1), self.seq_len + 1))
                mine.append(name)
        self.sequences += n_round
        self.last_sources = mine
        return _to_xy(windows)

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "seed": self.seed, "split": self.split, "seq_len": self.seq_len,
                "weights": dict(self.weights), "n_windows": dict(self.n_windows), "sequences": self.sequences,
                "cursor": dict(self.cursor), "epoch": dict(self.epoch), "rng": self._rng.bit_generator.state,
                "world_size": self.world_size, "micro_batch": self.micro_batch}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where state was taken. The data (windows per source), seq_len, seed, split and
        weights must match; world_size and micro_batch may differ (the stream is global)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"mixture state version {state.get('version')!r}, this code reads {STATE_VERSION}")
        for key in ("seed", "split", "seq_len", "n_windows"):
            if state[key] != getattr(self, key):
                raise ValueError(f"mixture state does not match this loader: {key} {state[key]!r} != "
                                 f"{getattr(self, key)!r}")
        if set(state["weights"]) != set(self.weights) or any(
                abs(state["weights"][n] - self.weights[n]) > 1e-12 for n in self.names):
            raise ValueError(f"mixture state weights {state['weights']} != loader weights {self.weights}")
        for n in self.names:
            if not 0 <= state["cursor"][n] <= self.n_windows[n]:
                raise ValueError(f"mixture state cursor {state['cursor'][n]} out of range for source {n!r}")
        self.cursor, self.epoch = dict(state["cursor"]), dict(state["epoch"])
        self.sequences = int(state["sequences"])
        self._rng.bit_generator.state = state["rng"]
        self._perm_cache.clear()


def val_batches(folder: str, seq_len: int, batch_size: int, max_batches: int | None = None, rank: int = 0,
                world_size: int = 1, split: str = "val") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed, deterministic set of batches from one folder's val shards: windows in order 0, 1, 2, ...;
    batch i gives rank r windows [i*W*B + r*B, i*W*B + (r+1)*B). Every rank yields the same number of batches
    (only whole rounds), so DDP ranks stay in step. max_batches caps the count."""
    if seq_len < 1 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need seq_len, batch_size >= 1 and 0 <= rank < world_size; got {seq_len}, {batch_size}, "
                         f"{rank}, {world_size}")
    src = open_source(folder, split)
    per_round = world_size * batch_size
    n_batches = (src["tokens"] // (seq_len + 1)) // per_round
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    if n_batches == 0:
        raise ValueError(f"{folder}: {src['tokens']} {split} tokens are fewer than one batch of "
                         f"{per_round} x {seq_len + 1}")

    def batches():  # a nested generator, so bad arguments fail at the call, not at the first next()
        for i in range(n_batches):
            first = i * per_round + rank * batch_size
            yield _to_xy([read_span(src, w * (seq_len + 1), seq_len + 1) for w in range(first, first + batch_size)])
    return batches()
