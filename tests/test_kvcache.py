import pytest
import torch

from configurator import UserError
from kvcache import BlockPool, PagedKVCache, blocks_for_budget, bytes_per_block
from model import Llama, LlamaConfig


def test_block_pool_refcounts_and_reuse():
    pool = BlockPool(4)
    a, b = pool.allocate(), pool.allocate()
    assert (a, b) == (0, 1) and pool.n_free == 2
    pool.share(a)  # a second sequence points at block a
    pool.release([a])
    assert pool.n_free == 2  # still held by the other one
    pool.release([a, b])
    assert pool.n_free == 4 and pool.peak_used == 2
    assert sorted(pool.allocate() for _ in range(4)) == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="exhausted"):
        pool.allocate()


def test_budget_sizes_the_pool():
    cfg = LlamaConfig.from_preset("test")
    per = bytes_per_block(cfg, 16, torch.bfloat16)
    assert per == 2 * cfg.n_layers * 16 * cfg.n_kv_heads * cfg.head_dim * 2
    assert blocks_for_budget(cfg, 2.0, 16, torch.bfloat16, torch.device("cpu")) == int(2e9 // per)
    with pytest.raises(UserError, match="fraction of free GPU memory"):
        blocks_for_budget(cfg, 0.5, 16, torch.bfloat16, torch.device("cpu"))
    with pytest.raises(UserError, match="kv_budget must be > 0"):
        blocks_for_budget(cfg, 0, 16, torch.bfloat16, torch.device("cpu"))


def test_mask_and_positions_follow_each_rows_length():
    """Rows of different lengths in one call: query i of row b sees keys 0 .. lens[b] + i of its gathered
    blocks, never another row's or a padding block's."""
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("test")).eval()
    cache = PagedKVCache.for_model(model, 6, 4)
    cache.set_batch([[2, 5], [1]], [5, 1], 2)
    assert cache.positions(2).tolist() == [[5, 6], [1, 2]]
    assert cache.slot_mapping(2).tolist() == [[5 * 4 + 1, 5 * 4 + 2], [1 * 4 + 1, 1 * 4 + 2]]
    m = cache.mask(2)[:, 0]  # [B, T, 8]
    assert m[0, 0].tolist() == [True] * 6 + [False] * 2
    assert m[1, 1].tolist() == [True] * 3 + [False] * 5
    cache.advance(2)
    assert cache.lens.tolist() == [7, 3]


def test_grow_keeps_blocks_and_hands_out_new_ids_last():
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("test")).eval()
    cache = PagedKVCache.for_model(model, 2, 4)
    a = cache.pool.allocate()
    cache.k[0][a].normal_()
    before = cache.k[0][a].clone()
    cache.grow(5)
    assert cache.k[0].shape[0] == 5 and torch.equal(cache.k[0][a], before)
    assert [cache.pool.allocate() for _ in range(4)] == [1, 2, 3, 4] and cache.pool.n_free == 0
