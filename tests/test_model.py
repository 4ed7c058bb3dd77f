import json
import os

import pytest
import torch

from model import (KVCache, Llama, LlamaConfig, atomic_dir, load_safetensors_folder, remove_stale_temp_dirs,
                   resolve_checkpoint, save_checkpoint)

transformers = pytest.importorskip("transformers")
from bench.hf_peer import load_llama  # noqa: E402

SCALING = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 64}


def make_hf(tmp_path, name="hf", tied=True, scaling=True, kv_heads=2, vocab=301):
    torch.manual_seed(0)
    kw = dict(vocab_size=vocab, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=kv_heads, tie_word_embeddings=tied, max_position_embeddings=512,
              rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    if scaling:
        kw["rope_scaling"], kw["rope_theta"] = dict(SCALING), 500000.0
    cfg = transformers.LlamaConfig(**kw)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    path = str(tmp_path / name)
    hf.save_pretrained(path)
    return hf, path


def hf_logits(hf, idx, pos=None):
    with torch.no_grad():
        return hf(idx, position_ids=pos).logits


@pytest.mark.parametrize("tied,scaling,kv_heads", [(True, True, 2), (False, False, 4), (True, False, 1)])
def test_parity_with_transformers(tmp_path, tied, scaling, kv_heads):
    hf, path = make_hf(tmp_path, tied=tied, scaling=scaling, kv_heads=kv_heads)
    model = Llama.from_pretrained(path).eval()
    assert model.config.tie_embeddings == tied and model.config.n_kv_heads == kv_heads
    idx = torch.randint(0, 301, (2, 23))
    # positions past original_max_position_embeddings exercise every band of the llama3 frequency scaling
    pos = torch.arange(100, 123)[None].expand(2, -1)
    with torch.no_grad():
        for p in (None, pos):
            ours = model(idx, pos=p)
            assert (ours - hf_logits(hf, idx, p)).abs().max().item() < 1e-4

    # export -> transformers loads it -> same logits
    out = str(tmp_path / "export")
    model.save_pretrained(out)
    hf2 = load_llama(out)
    assert (hf_logits(hf2, idx, pos) - model(idx, pos=pos).detach()).abs().max().item() < 1e-4
    keys = set(load_safetensors_folder(out))
    assert ("lm_head.weight" in keys) == (not tied)


def test_old_config_layout(tmp_path):
    hf, path = make_hf(tmp_path)
    cfg_path = os.path.join(path, "config.json")
    d = json.load(open(cfg_path))
    if "rope_parameters" in d:  # transformers 5 writes the new layout; 4.x writes the old one itself
        rp = d.pop("rope_parameters")
        d["rope_theta"] = rp.pop("rope_theta")
        d["rope_scaling"] = rp
    assert "rope_parameters" not in d and d["rope_scaling"]["original_max_position_embeddings"] == 64
    json.dump(d, open(cfg_path, "w"))
    model = Llama.from_pretrained(path)
    assert model.config.rope_scaling["original_max_position_embeddings"] == 64
    assert model.config.rope_theta == 500000.0
    idx = torch.randint(0, 301, (1, 17))
    pos = torch.arange(200, 217)[None]
    assert (model(idx, pos=pos).detach() - hf_logits(hf, idx, pos)).abs().max().item() < 1e-4


def test_sharded_checkpoint_and_dtype(tmp_path):
    hf, _ = make_hf(tmp_path)
    path = str(tmp_path / "sharded")
    hf.save_pretrained(path, max_shard_size="40KB")
    assert os.path.isfile(os.path.join(path, "model.safetensors.index.json"))
    model = Llama.from_pretrained(path)
    idx = torch.randint(0, 301, (1, 9))
    assert (model(idx).detach() - hf_logits(hf, idx)).abs().max().item() < 1e-4
    bf = Llama.from_pretrained(path, dtype=torch.bfloat16)
    assert bf.embed_tokens.weight.dtype == torch.bfloat16
    assert bf.lm_head.weight is bf.embed_tokens.weight


def test_load_errors(tmp_path):
    _, path = make_hf(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Llama.from_pretrained(str(tmp_path / "nope"))
    # missing weights
    os.rename(os.path.join(path, "model.safetensors"), os.path.join(path, "w.bak"))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Llama.from_pretrained(path)
    # truncated weights
    data = open(os.path.join(path, "w.bak"), "rb").read()
    open(os.path.join(path, "model.safetensors"), "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        Llama.from_pretrained(path)
    open(os.path.join(path, "model.safetensors"), "wb").write(data)
    cfg_path = os.path.join(path, "config.json")
    good = json.load(open(cfg_path))

    def with_cfg(**changes):
        json.dump({**good, **changes}, open(cfg_path, "w"))

    with_cfg(vocab_size=300)
    with pytest.raises(ValueError, match="embed_tokens.*vocab size mismatch"):
        Llama.from_pretrained(path)
    with_cfg(intermediate_size=100)
    with pytest.raises(ValueError, match="mlp.*shape"):
        Llama.from_pretrained(path)
    with_cfg(num_attention_heads=3)
    with pytest.raises(ValueError, match="not divisible"):
        Llama.from_pretrained(path)
    with_cfg(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    with pytest.raises(ValueError, match="unsupported architecture"):
        Llama.from_pretrained(path)
    with_cfg(tie_word_embeddings=False)
    with pytest.raises(ValueError, match="lm_head.weight"):
        Llama.from_pretrained(path)
    with_cfg(num_hidden_layers=3)
    with pytest.raises(ValueError, match="missing tensor.*layers.2"):
        Llama.from_pretrained(path)
    open(cfg_path, "w").write("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Llama.from_pretrained(path)


def test_config_validation():
    with pytest.raises(ValueError, match="n_kv_heads"):
        LlamaConfig.from_preset("test", n_kv_heads=3)
    with pytest.raises(ValueError, match="positive int"):
        LlamaConfig.from_preset("test", n_layers=0)
    with pytest.raises(ValueError, match="unknown model preset"):
        LlamaConfig.from_preset("llama9")
    c = LlamaConfig.from_preset("llama3.2-3b")
    assert (c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.ffn_dim, c.vocab_size) == (28, 3072, 24, 8, 8192, 128256)
    c = LlamaConfig.from_preset("llama3.2-1b")
    assert (c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.ffn_dim, c.tie_embeddings) == (16, 2048, 32, 8, 8192, True)
    with torch.device("meta"):
        m = Llama(c)
    assert abs(m.num_params() - 1.236e9) / 1.236e9 < 0.01  # Llama-3.2-1B has 1.24B parameters


def test_kv_cache_matches_full_forward_on_ragged_batch():
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("test")).eval()
    seqs = [torch.randint(0, 256, (n,)) for n in (11, 5, 8)]
    steps = 4
    with torch.no_grad():
        full = [model(s[None])[0] for s in seqs]
        L = max(len(s) for s in seqs) - steps
        prompts = [s[: len(s) - steps] for s in seqs]
        P = max(len(p) for p in prompts)
        idx = torch.zeros(3, P, dtype=torch.long)
        cache = KVCache.for_model(model, 3, P + steps)
        for b, p in enumerate(prompts):  # left-pad
            idx[b, P - len(p):] = p
            cache.start[b] = P - len(p)
        out = model(idx, cache=cache)
        cache.advance(P)
        for b, p in enumerate(prompts):
            assert (out[b, P - len(p):] - full[b][: len(p)]).abs().max() < 1e-4
        for t in range(steps):
            nxt = torch.stack([s[len(s) - steps + t] for s in seqs])[:, None]
            out = model(nxt, cache=cache)
            cache.advance(1)
            for b, s in enumerate(seqs):
                assert (out[b, 0] - full[b][len(s) - steps + t]).abs().max() < 1e-4
        # select: row reordering/repetition carries the cache along
        cache.select(torch.tensor([2, 2, 0]))
        assert cache.start.tolist() == [P - len(prompts[2])] * 2 + [P - len(prompts[0])]
    assert L >= 0


def test_last_only_logits_equal_the_full_last_row():
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("test")).eval()
    idx = torch.randint(0, 256, (3, 9))
    with torch.no_grad():
        full = model(idx)
        last = model(idx, last_only=True)
        assert last.shape == (3, 1, 256)
        assert torch.allclose(last, full[:, -1:], atol=1e-6)
        caches = [KVCache.for_model(model, 3, 12) for _ in range(2)]  # a ragged prefill, as sample.py runs it
        for c in caches:
            c.start = torch.tensor([0, 2, 5])
        full_c, last_c = model(idx, cache=caches[0]), model(idx, cache=caches[1], last_only=True)
        assert torch.allclose(last_c, full_c[:, -1:], atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(caches[0].k + caches[0].v, caches[1].k + caches[1].v))
    with pytest.raises(ValueError, match="last_only"):
        model(idx, targets=idx, last_only=True)


def naive_sdpa(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False):
    """Attention as some CUDA SDPA kernels compute it: -inf fill then softmax, so a fully masked row is NaN."""
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # [B, H, T, S]
    if is_causal:
        attn_mask = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
    return scores.masked_fill(~attn_mask, float("-inf")).softmax(-1) @ v


def test_kv_cache_mask_has_no_fully_masked_rows(monkeypatch):
    """Left-pad queries see their own slot (never an empty softmax row); real tokens' outputs do not change."""
    cache = KVCache(1, 2, 1, 10, 4)
    cache.start = torch.tensor([0, 3])
    m = cache.mask(6)[:, 0]  # [B, T, S]
    assert m.any(-1).all()
    for q in range(3):  # row 1's pad queries: exactly their own slot
        assert m[1, q].nonzero().flatten().tolist() == [q]
    for q in range(3, 6):  # real queries: keys start .. q, as before
        assert m[1, q].nonzero().flatten().tolist() == list(range(3, q + 1))
        assert m[0, q].nonzero().flatten().tolist() == list(range(q + 1))

    import model as model_lib
    monkeypatch.setattr(model_lib.F, "scaled_dot_product_attention", naive_sdpa)
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("test")).eval()
    seqs = [torch.randint(0, 256, (n,)) for n in (7, 3)]
    cache = KVCache.for_model(model, 2, 8)
    cache.start = torch.tensor([0, 4])
    idx = torch.zeros(2, 7, dtype=torch.long)
    idx[0], idx[1, 4:] = seqs
    with torch.no_grad():
        out = model(idx, cache=cache)  # [2, 7, V]
        assert torch.isfinite(out).all()  # the pad rows too
        for b, s in enumerate(seqs):
            assert (out[b, 7 - len(s):] - model(s[None])[0]).abs().max() < 1e-4


def test_training_step_and_checkpointing():
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("test"))
    idx = torch.randint(0, 256, (2, 16))
    tgt = idx.roll(-1, 1)
    tgt[:, -1] = -100
    _, loss = model(idx, targets=tgt)
    assert abs(loss.item() - torch.log(torch.tensor(256.0)).item()) < 0.3  # small init -> near-uniform
    loss.backward()
    g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing = True
    model.train()
    _, loss2 = model(idx, targets=tgt)
    loss2.backward()
    assert torch.allclose(loss, loss2)
    for a, p in zip(g1, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)
    opt = model.configure_optimizer(1e-3, 0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert all(p.dim() < 2 for p in opt.param_groups[1]["params"])
    # 6N rule: forward+backward FLOPs are ~6 per matmul weight per token
    n = model.config
    assert model.flops_per_token(0) == 6 * (n.n_layers * (2 * n.dim * n.dim + 2 * n.dim * n.dim // 2
                                            + 3 * n.dim * n.ffn_dim) + n.vocab_size * n.dim)


def test_save_checkpoint_atomic_and_compiled_keys(tmp_path):
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("test"))
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(str(run / "ckpt-1"), torch.compile(model), run_config={"lr": 1.0}, state={"step": 1})
    keys = set(load_safetensors_folder(str(run / "ckpt-1")))
    assert not any("_orig_mod" in k for k in keys) and "model.embed_tokens.weight" in keys
    assert resolve_checkpoint(str(run)).endswith("ckpt-1")

    class Boom(Exception):
        pass

    class BadTokenizer:
        def save(self, folder):
            raise Boom()

    with pytest.raises(Boom):  # a failure mid-write leaves the previous checkpoint intact and no temp folder
        save_checkpoint(str(run / "ckpt-1"), model, tokenizer=BadTokenizer())
    assert json.load(open(run / "ckpt-1" / "run_config.json")) == {"lr": 1.0}
    assert sorted(os.listdir(run)) == ["ckpt-1", "latest"]
    reloaded = Llama.from_pretrained(str(run))
    idx = torch.randint(0, 256, (1, 8))
    assert torch.equal(reloaded(idx), model(idx))


def test_atomic_dir_syncs_before_the_rename(tmp_path, monkeypatch):
    """The files and the temp folder reach the disk before the rename that publishes them, and the rename itself
    after: a power loss must not leave a name (or `latest`) pointing at empty files."""
    events, fsync, replace = [], os.fsync, os.replace

    def logged_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def logged_replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    path = tmp_path / "ck"
    with atomic_dir(str(path)) as tmp:
        os.makedirs(os.path.join(tmp, "sub"))
        for name in ("a.json", "sub/b.bin"):
            with open(os.path.join(tmp, name), "w") as f:
                f.write("x")
    publish = events.index(("replace", tmp, str(path)))
    synced_before = {e[1] for e in events[:publish] if e[0] == "fsync"}
    written = {os.path.join(tmp, "a.json"), os.path.join(tmp, "sub", "b.bin"), os.path.join(tmp, "sub"), tmp}
    assert written <= synced_before
    assert ("fsync", str(tmp_path)) in events[publish:]
    assert open(path / "sub" / "b.bin").read() == "x"


def test_remove_stale_temp_dirs_clears_only_atomic_dir_leftovers(tmp_path):
    for name in ("ckpt-1", "ckpt-1.old-11", "ckpt-2.tmp-12", "ckpt-3.old-13", "ckpt-3.tmp-13", "ckpt-4.tmp-x",
                 "notes.tmp-12abc", "ckpt-5.tmp-"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_text(name)
    (tmp_path / "log.tmp-14").write_text("a file, not a folder")
    (tmp_path / ".tmp-latest123").write_text("write_atomic's temp file")
    remove_stale_temp_dirs(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".tmp-latest123", "ckpt-1", "ckpt-3", "ckpt-4.tmp-x", "ckpt-5.tmp-",
                                            "log.tmp-14", "notes.tmp-12abc"]
    assert (tmp_path / "ckpt-1" / "model.safetensors").read_text() == "ckpt-1"  # the finished save stays
    # killed between the two renames: the moved-aside folder is the only copy, so it is put back
    assert (tmp_path / "ckpt-3" / "model.safetensors").read_text() == "ckpt-3.old-13"
