import math

import pytest
import torch
import torch.nn.functional as F

import octo_kernels
import model as model_lib
import sample
import engine
from data.tokenizer import Tokenizer
from model import Llama, LlamaConfig
from kvcache import PagedKVCache
from sample import generate, inverse_cdf, sample_logits, stop_tail_len

TEXT = ["the quick brown fox jumps over the lazy dog; 12345 + 678 = ? café naïve déjà vu"] * 40


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXT, vocab_size=290)


def random_model(tok, seed=0, std=None, **overrides):
    torch.manual_seed(seed)
    m = Llama(LlamaConfig.from_preset("test", **{"vocab_size": tok.vocab_size, **overrides})).eval()
    if std is not None:  # larger weights: peakier next-token distributions
        with torch.no_grad():
            for p in m.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, std)
    return m


@pytest.fixture(scope="module")
def model(tok):
    return random_model(tok, std=0.1)


PROMPTS = ["the fox", "12345 + 678 = ? the lazy dog jumps", "a", "quick brown"]


# ---------------------------------------------------------------------------------------------------------------
# greedy: parity with transformers, batch invariance


def test_greedy_matches_transformers_generate_on_ragged_batch(tok, tmp_path):
    """HF weights -> ours -> our checkpoint folder -> transformers' Auto classes (model and tokenizer) -> the same
    prompt ids and the same greedy tokens as our sampler, on a left-padded batch of prompts of different lengths."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, initializer_range=0.15, tie_word_embeddings=True)
    transformers.LlamaForCausalLM(cfg).save_pretrained(str(tmp_path / "hf"))
    ours = Llama.from_pretrained(str(tmp_path / "hf"))
    model_lib.save_checkpoint(str(tmp_path / "ckpt"), ours, tokenizer=tok)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "ckpt")).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ckpt"), padding_side="left")
    batch = hf_tok(PROMPTS, return_tensors="pt", padding=True)
    inp, att = batch["input_ids"], batch["attention_mask"]  # [B, P], left-padded with tok.pad_id
    P = inp.shape[1]
    ids = [tok.encode(p, bos=True) for p in PROMPTS]
    assert [row[P - len(i):].tolist() for row, i in zip(inp, ids)] == ids and att.sum(1).tolist() == list(map(len, ids))
    M = 16
    with torch.no_grad():
        ref = hf.generate(inp, attention_mask=att, max_new_tokens=M, do_sample=False,
                          eos_token_id=sorted(tok.stop_ids), pad_token_id=hf_tok.pad_token_id)[:, P:]
    outs = generate(ours, tok, PROMPTS, max_new_tokens=M)
    assert len({tuple(c.tokens) for c in outs}) == len(PROMPTS)  # rows really differ
    for b, c in enumerate(outs):
        want = ref[b].tolist()
        stops = [k for k, x in enumerate(want) if x in tok.stop_ids]
        want = want[: stops[0] + 1] if stops else want
        assert c.tokens == want
        assert c.prompt_tokens == ids[b]
        assert c.finish_reason == ("eos" if stops else "length")


def test_greedy_batched_equals_one_at_a_time(tok, model):
    batched = generate(model, tok, PROMPTS, max_new_tokens=12)
    for b, p in enumerate(PROMPTS):
        (single,) = generate(model, tok, [p], max_new_tokens=12)
        assert single.tokens == batched[b].tokens
        assert torch.allclose(single.logprobs, batched[b].logprobs, atol=1e-5)
    small = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=3)
    assert [c.tokens for c in small] == [c.tokens for c in batched]


def test_greedy_logprobs_and_top_k_1(tok, model):
    outs = generate(model, tok, PROMPTS[:2], max_new_tokens=8)
    for c in outs:
        seq = torch.tensor(c.prompt_tokens + c.tokens)[None]
        with torch.no_grad():
            logits = model(seq)[0, len(c.prompt_tokens) - 1: -1]
        assert c.tokens == logits.argmax(-1).tolist()
        want = F.log_softmax(logits, -1).gather(-1, torch.tensor(c.tokens)[:, None])[:, 0]
        assert torch.allclose(c.logprobs, want, atol=1e-4)
    k1 = generate(model, tok, PROMPTS[:2], max_new_tokens=8, temperature=0.7, top_k=1, seed=3)
    assert [c.tokens for c in k1] == [c.tokens for c in outs]


# ---------------------------------------------------------------------------------------------------------------
# sampling: logprobs, truncation, seeds, batch invariance


def test_sampled_logprobs_match_full_forward_with_truncation(tok, model):
    T, K, TP = 0.7, 20, 0.8
    outs = generate(model, tok, PROMPTS[:2], n=3, max_new_tokens=12, temperature=T, top_k=K, top_p=TP, seed=5)
    assert len(outs) == 6 and [c.prompt_index for c in outs] == [0, 0, 0, 1, 1, 1]
    for c in outs:
        assert c.logprobs.dtype == torch.float32 and c.logprobs.shape == (len(c.tokens),)
        seq = torch.tensor(c.prompt_tokens + c.tokens)[None]
        with torch.no_grad():
            logits = model(seq)[0, len(c.prompt_tokens) - 1: -1]  # [len(tokens), V]
        logp = F.log_softmax(logits / T, -1)
        chosen = torch.tensor(c.tokens)
        assert torch.allclose(c.logprobs, logp.gather(-1, chosen[:, None])[:, 0], atol=1e-4)
        # every token survived the truncation: in the top K, and in the nucleus of the renormalised top K
        probs, order = logp.exp().topk(K, -1)
        probs = probs / probs.sum(-1, keepdim=True)
        for t, x in enumerate(c.tokens):
            rank = (order[t] == x).nonzero()
            assert len(rank) == 1
            assert probs[t, : rank.item()].sum() < TP
    # the three samples of a prompt are independent draws
    assert len({tuple(c.tokens) for c in outs[:3]}) > 1


def test_seed_determinism_and_batch_size_invariance(tok, model):
    kw = dict(n=3, max_new_tokens=10, temperature=1.0, top_p=0.9)
    a = generate(model, tok, PROMPTS, seed=7, **kw)
    b = generate(model, tok, PROMPTS, seed=7, **kw)
    c = generate(model, tok, PROMPTS, seed=8, **kw)
    assert [x.tokens for x in a] == [x.tokens for x in b]
    assert [x.tokens for x in a] != [x.tokens for x in c]
    # a sample's randomness is its own: the same samples whatever the batching (n split over chunks too)
    for bs in (1, 2, 4, 7):
        d = generate(model, tok, PROMPTS, seed=7, batch_size=bs, **kw)
        assert [x.tokens for x in d] == [x.tokens for x in a]
        for x, y in zip(d, a):
            assert torch.allclose(x.logprobs, y.logprobs, atol=1e-5)
    torch.manual_seed(0)  # seed=None follows torch's global RNG
    e = generate(model, tok, PROMPTS, **kw)
    torch.manual_seed(0)
    f = generate(model, tok, PROMPTS, **kw)
    assert [x.tokens for x in e] == [x.tokens for x in f]


@pytest.mark.skipif(not octo_kernels.HAVE_TRITON or not octo_kernels.INTERPRET,
                    reason="needs triton and TRITON_INTERPRET=1 (set by conftest) to run kernels on CPU")
def test_kernel_sampler_same_contract(tok, monkeypatch):
    """On the decode kernel path (NANOOCTO_KERNELS=triton, the interpreter here) greedy and plain temperature
    sampling go through octo_kernels.sample_logits, under the torch sampler's contract: logprobs under
    softmax(logits / T) before truncation, seeded per sample, the same samples whatever the batching."""
    model = random_model(tok, std=0.1, n_layers=1, n_heads=2, n_kv_heads=1)  # few interpreted programs per step
    calls = []
    real = octo_kernels.sample_logits_triton

    def spy(*a, **kw):
        calls.append(a[0].shape[0])
        return real(*a, **kw)

    monkeypatch.setattr(octo_kernels, "sample_logits_triton", spy)
    monkeypatch.setenv("NANOOCTO_KERNELS", "triton")
    T, kw = 0.8, dict(n=2, max_new_tokens=3, temperature=0.8)
    a = generate(model, tok, PROMPTS[:2], seed=7, **kw)
    assert calls and calls[0] == 4  # all 4 rows, one kernel call per step
    for c in a:
        assert all(0 <= x < tok.vocab_size for x in c.tokens)
        seq = torch.tensor(c.prompt_tokens + c.tokens)[None]
        with torch.no_grad():  # a full forward (T > 1: plain torch) recomputes the log-probs
            logits = model(seq)[0, len(c.prompt_tokens) - 1: -1]
        want = F.log_softmax(logits / T, -1).gather(-1, torch.tensor(c.tokens)[:, None])[:, 0]
        assert torch.allclose(c.logprobs, want, atol=1e-4)
    assert a[0].tokens != a[1].tokens or a[2].tokens != a[3].tokens  # a prompt's samples are independent draws
    # batch_size 2: one chunk per prompt instead of one for all, and the second prompt's rows at other indices
    b = generate(model, tok, PROMPTS[:2], seed=7, batch_size=2, **kw)
    assert [x.tokens for x in b] == [x.tokens for x in a]
    assert all(torch.allclose(x.logprobs, y.logprobs, atol=1e-5) for x, y in zip(a, b))

    calls.clear()  # greedy through the kernel = greedy through torch
    g = generate(model, tok, PROMPTS[:2], max_new_tokens=3)
    assert calls
    monkeypatch.setenv("NANOOCTO_KERNELS", "torch")
    g_ref = generate(model, tok, PROMPTS[:2], max_new_tokens=3)
    assert [x.tokens for x in g] == [x.tokens for x in g_ref]
    assert all(torch.allclose(x.logprobs, y.logprobs, atol=1e-5) for x, y in zip(g, g_ref))

    monkeypatch.setenv("NANOOCTO_KERNELS", "triton")  # top-p needs a sort over the vocab: the torch sampler
    calls.clear()
    generate(model, tok, PROMPTS[:1], temperature=T, top_p=0.9, seed=7, max_new_tokens=1)
    assert calls == []


def test_sample_logits_distribution():
    p = torch.tensor([0.1, 0.4, 0.05, 0.3, 0.15])  # unsorted on purpose: indices must map back
    N = 40000
    logits = p.log().expand(N, -1).contiguous()
    g = torch.Generator().manual_seed(0)

    def freq(**kw):
        tokens, lps = sample_logits(logits, u=torch.rand(N, generator=g), **kw)
        T = kw["temperature"]
        assert torch.allclose(lps, F.log_softmax(logits / T, -1).gather(-1, tokens[:, None])[:, 0])
        return torch.bincount(tokens, minlength=5).float() / N

    def renorm(q):
        q = torch.tensor(q)
        return q / q.sum()

    cases = [
        (dict(temperature=1.0), p),
        (dict(temperature=2.0), renorm(p.sqrt().tolist())),
        (dict(temperature=1.0, top_k=3), renorm([0, 0.4, 0, 0.3, 0.15])),
        (dict(temperature=1.0, top_p=0.65), renorm([0, 0.4, 0, 0.3, 0])),
        (dict(temperature=1.0, top_p=0.75), renorm([0, 0.4, 0, 0.3, 0.15])),
        # top-p after top-k measures the renormalised top-k mass: 0.4/0.85 + 0.3/0.85 > 0.8 -> two tokens
        (dict(temperature=1.0, top_k=3, top_p=0.8), renorm([0, 0.4, 0, 0.3, 0])),
        (dict(temperature=1.0, top_p=0.01), renorm([0, 1, 0, 0, 0])),
    ]
    for kw, want in cases:
        assert (freq(**kw) - want).abs().max() < 0.015, kw


def test_inverse_cdf_never_picks_zero_mass():
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    for u in (0.0, 0.5, 1 - 1e-12):
        idx = inverse_cdf(probs, torch.full((3,), u, dtype=torch.float64))
        assert all(probs[r, i] > 0 for r, i in enumerate(idx.tolist()))
    assert inverse_cdf(probs[:1], torch.tensor([0.49])).item() == 0
    assert inverse_cdf(probs[:1], torch.tensor([0.51])).item() == 1


# ---------------------------------------------------------------------------------------------------------------
# one prefill for n samples; batching plan


def test_n_samples_share_one_prefill(tok, model, monkeypatch):
    calls = []
    real = engine.prefill_batch

    def counting(m, seqs, cache, **kw):
        calls.append([len(ids) for ids, _ in seqs])
        return real(m, seqs, cache, **kw)

    monkeypatch.setattr(engine, "prefill_batch", counting)
    outs = generate(model, tok, PROMPTS[:3], n=4, max_new_tokens=4, temperature=1.0, seed=0)
    lens = [len(c.prompt_tokens) for c in outs[::4]]
    assert calls == [lens] and len(outs) == 12  # each prompt prefilled once for its 4 samples, all in one call
    assert sample.last_stats["prefills"] == 3 and sample.last_stats["prefill_forwards"] == 1  # one forward
    calls.clear()
    generate(model, tok, PROMPTS[:2], n=5, max_new_tokens=4, temperature=1.0, seed=0, batch_size=2)
    assert sum(map(len, calls)) == 6  # n > batch_size: each prompt's samples start in groups of 2, 2, 1


def test_batched_prefill_equals_one_sequence_at_a_time(model):
    """Ragged sequences prefilled together (right-padded rows, several forwards when max_tokens cuts them, a long
    one in pieces) write the same KV cache and give the same last-position logits as one prefill per sequence."""
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist() for n in (9, 3, 14, 1, 6)]
    tables = [[0, 1, 2], [3], [4, 5, 6, 7], [8], [9, 10]]  # blocks of 4
    runs = {}
    for how in ("one", "batched", "cut"):
        cache = PagedKVCache.for_model(model, 11, 4)
        with torch.no_grad():
            if how == "one":
                logits, fw = [engine.prefill(model, ids, cache, t) for ids, t in zip(seqs, tables)], len(seqs)
            else:  # "cut": at most 12 padded tokens a forward; the 14-token one alone, in pieces of 12
                logits, fw = engine.prefill_batch(model, list(zip(seqs, tables)), cache,
                                                  **({"max_tokens": 12} if how == "cut" else {}))
        runs[how] = (torch.stack(logits), cache, fw)
    assert runs["batched"][2] == 1 and runs["cut"][2] > 2
    ref, ref_cache, _ = runs["one"]
    for how in ("batched", "cut"):
        lg, cache, _ = runs[how]
        assert (lg - ref).abs().max().item() < 1e-5, how
        for a, b in zip(cache.k + cache.v, ref_cache.k + ref_cache.v):
            assert (a - b).abs().max().item() < 1e-5, how  # pad tokens wrote nothing (unused slots stay 0)


def test_prefill_in_pieces_equals_one_pass(model):
    # long prompts are prefilled a few positions at a time to bound the activations; same cache, same logits
    ids = torch.randint(0, model.config.vocab_size, (23,)).tolist()
    out = []
    for budget in (2**14, 5):  # one pass; pieces of 5 positions (the last one 3)
        cache = PagedKVCache.for_model(model, 6, 4)
        blocks = [5, 0, 3, 1, 2, 4]  # any blocks, in any order
        with torch.no_grad():
            out.append((engine.prefill(model, ids, cache, blocks, max_tokens=budget), cache))
    (a, ca), (b, cb) = out
    assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():  # the last position's row of a plain full forward
        assert torch.allclose(a, model(torch.tensor([ids]))[0, -1], atol=1e-4)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(ca.k + ca.v, cb.k + cb.v))


def test_prefix_sharing_counts_blocks(tok, model):
    """n samples of a prompt share its full blocks (one prefill); each copies only the last partial block."""
    ids = torch.randint(0, tok.vocab_size, (37,)).tolist()  # 4 full blocks of 8 + 5 tokens
    outs = generate(model, tok, [ids], n=4, max_new_tokens=1, temperature=1.0, seed=0, block_size=8)
    assert len(outs) == 4 and sample.last_stats["prefills"] == 1
    assert sample.last_stats["peak_blocks"] == 4 + 4  # unshared: 4 x 5 = 20
    generate(model, tok, [ids[:32]], n=4, max_new_tokens=2, temperature=1.0, seed=0, block_size=8)
    assert sample.last_stats["peak_blocks"] == 4 + 4  # all prompt blocks full: shared; each sample opens its own


def test_preemption_under_a_tiny_pool_changes_nothing(tok, model):
    """A pool that holds ~2 sequences for 8 slots: the newest sequences are preempted and re-prefilled later,
    with the same tokens, log-probs and finish reasons as an unconstrained run (sampled, stop strings, n > 1)."""
    kw = dict(n=3, max_new_tokens=20, temperature=1.0, top_p=0.95, seed=3, stop=["e"], batch_size=8, block_size=4)
    free = generate(model, tok, PROMPTS, **kw)
    assert sample.last_stats["preemptions"] == 0
    tight = generate(model, tok, PROMPTS, kv_blocks=14, **kw)
    assert sample.last_stats["preemptions"] > 3 and sample.last_stats["peak_blocks"] <= 14
    for x, y in zip(tight, free):
        assert (x.tokens, x.text, x.finish_reason) == (y.tokens, y.text, y.finish_reason)
        assert torch.allclose(x.logprobs, y.logprobs, atol=1e-4)
    greedy = generate(model, tok, PROMPTS, max_new_tokens=20, block_size=4)
    tight = generate(model, tok, PROMPTS, max_new_tokens=20, block_size=4, kv_blocks=12)
    assert sample.last_stats["preemptions"] > 0 and [c.tokens for c in tight] == [c.tokens for c in greedy]


def test_default_pool_grows_with_use(tok, model, monkeypatch):
    """Without kv_blocks / kv_budget the pool starts small and doubles as sequences need blocks (never preempting):
    the same samples as a pool allocated up front, in fewer blocks than every row at full length."""
    kw = dict(n=3, max_new_tokens=20, temperature=1.0, seed=5, stop=["e"], block_size=4)
    full = 12 * -(-(max(len(tok.encode(p)) + 1 for p in PROMPTS) + 20) // 4)  # 12 rows at full length
    upfront = generate(model, tok, PROMPTS, kv_blocks=full, **kw)
    assert sample.last_stats["pool_blocks"] == full
    monkeypatch.setattr(sample, "GROW_FROM", 2)
    grown = generate(model, tok, PROMPTS, **kw)
    st = sample.last_stats
    assert st["preemptions"] == 0 and st["peak_blocks"] <= st["pool_blocks"] < full and st["pool_blocks"] >= 16
    for x, y in zip(grown, upfront):
        assert (x.tokens, x.finish_reason) == (y.tokens, y.finish_reason)
        assert torch.allclose(x.logprobs, y.logprobs, atol=1e-5)


def test_paged_cache_writes_through_the_block_table(model):
    """Token p of a row lands in block table[p // bs] at offset p % bs; rows of different lengths decode together
    and match a full forward."""
    seqs = [torch.randint(0, model.config.vocab_size, (L,)).tolist() for L in (9, 3)]
    cache = PagedKVCache.for_model(model, 8, 4)
    tables = [[6, 1, 4], [0, 7]]
    with torch.no_grad():
        for ids, blocks in zip(seqs, tables):
            engine.prefill(model, ids[:-1], cache, blocks)
        cache.set_batch(tables, [len(s) - 1 for s in seqs], 3)
        step = engine.decode_one_token(model, torch.tensor([s[-1] for s in seqs]), cache)  # [2, V]
        for r, ids in enumerate(seqs):
            assert torch.allclose(step[r], model(torch.tensor([ids]))[0, -1], atol=1e-4)
    assert cache.lens.tolist() == [9, 3]
    k0 = cache.k[0]  # position 5 of row 0: block 1, offset 1; a block no row uses stays empty
    ref = PagedKVCache.for_model(model, 3, 4)
    with torch.no_grad():
        engine.prefill(model, seqs[0], ref, [0, 1, 2])
    assert torch.allclose(k0[1, :, 1], ref.k[0][1, :, 1], atol=1e-5) and k0[5].abs().sum() == 0


# ---------------------------------------------------------------------------------------------------------------
# stopping: a "chain" model that deterministically emits a chosen token after each chosen token


def chain_model(tok, succ: dict[int, int]):
    """Attention and MLP outputs zeroed, so the logits depend on the current token only; the chain tokens get
    orthonormal embeddings and lm_head maps each to its successor with a large margin."""
    m = random_model(tok, tie_embeddings=False)
    dim = m.config.dim
    toks = sorted(set(succ) | set(succ.values()))
    assert len(toks) <= dim
    basis = torch.linalg.qr(torch.randn(dim, dim))[0].T  # orthonormal rows
    with torch.no_grad():
        for b in m.layers:
            b.self_attn.o_proj.weight.zero_()
            b.mlp.down_proj.weight.zero_()
        m.lm_head.weight.zero_()
        for k, t in enumerate(toks):
            m.embed_tokens.weight[t] = basis[k]
        for a, b in succ.items():
            m.lm_head.weight[b] += 5.0 * m.embed_tokens.weight[a]
    return m


def chain(tok, text: str, end_with_eos: bool):
    ids = [t for ch in text for t in tok.encode(ch)]
    assert len(set(ids)) == len(ids)
    succ = dict(zip(ids, ids[1:]))
    if end_with_eos:
        succ[ids[-1]] = tok.eos_id
    return ids, succ


def test_eos_stop_strings_and_length(tok):
    assert len(tok.encode("€")) == 3  # unseen in training: three byte tokens
    ids, succ = chain(tok, "abcdXY€!", end_with_eos=True)
    m = chain_model(tok, succ)
    prompt = ids[:2]  # "ab"
    gen = ids[2:]  # c d X Y €(3 tokens) !

    def run(**kw):
        (c,) = generate(m, tok, [prompt], max_new_tokens=kw.pop("M", 20), **kw)
        return c

    c = run()
    assert (c.tokens, c.finish_reason, c.text) == (gen + [tok.eos_id], "eos", "cdXY€!")
    assert len(c.logprobs) == len(c.tokens) and (c.logprobs > -0.01).all()  # the chain is near-certain
    c = run(stop=["XY"])
    assert (c.tokens, c.finish_reason, c.text) == (gen[:4], "stop", "cd")
    c = run(stop=("Y", "dX"))  # the earliest stop string wins
    assert (c.tokens, c.finish_reason, c.text) == (gen[:3], "stop", "c")
    c = run(stop="€")  # a bare string, whose one character spans three tokens
    assert (c.tokens, c.finish_reason, c.text) == (gen[:7], "stop", "cdXY")
    c = run(stop=["zzz"], M=3)
    assert (c.tokens, c.finish_reason, c.text) == (gen[:3], "length", "cdX")
    c = run(temperature=1.0, top_p=0.5, seed=0, stop=["!"])
    assert (c.tokens, c.finish_reason, c.text) == (gen[:8], "stop", "cdXY€")


def test_the_tail_is_decoded_only_after_a_token_that_could_end_a_stop_string(tok, monkeypatch):
    """The stop check decodes a row's last tokens only after a token whose text holds a stop string's last
    character or a cut character (the three byte tokens of an unseen "€"): with stop "zz" none of "cdXY!" does."""
    ids, succ = chain(tok, "abcdXY€!", end_with_eos=True)
    m = chain_model(tok, succ)
    tails, decode = [], tok.decode
    monkeypatch.setattr(tok, "decode", lambda x: (len(x) > 1 and tails.append(len(x)), decode(x))[1], raising=False)
    (c,) = generate(m, tok, [ids[:2]], max_new_tokens=20, stop=["zz"])
    assert c.finish_reason == "eos"
    assert tails.count(stop_tail_len(["zz"])) == 3  # the tail window, after each piece of "€" only


def test_stop_string_inside_one_token(tok):
    # a merged token of >= 4 letters: the stop string is its middle, so the token carries text past the stop
    word, wid = next((b.decode(), i) for b, i in tok.mergeable_ranks.items() if len(b) >= 4 and b.isalpha())
    ids = tok.encode("1") + tok.encode("Z") + [wid] + tok.encode("Q")
    m = chain_model(tok, dict(zip(ids, ids[1:])))
    (c,) = generate(m, tok, [ids[:1]], max_new_tokens=10, stop=[word[1:3]])
    assert (c.tokens, c.finish_reason, c.text) == (ids[1:3], "stop", "Z" + word[0])
    (d,) = generate(m, tok, [ids[:1]], max_new_tokens=10, stop=[word[2:4], word[1:3]])  # both in one token:
    assert (d.tokens, d.finish_reason, d.text) == (ids[1:3], "stop", "Z" + word[0])  # the text cut at the earlier


def test_rows_finish_independently_and_compaction_changes_nothing(tok, monkeypatch):
    # ragged: one row hits EOS after 3 tokens, one after 6, one cycles x y z w x ... up to the length limit
    ids_a, succ_a = chain(tok, "ab!", True)
    ids_b, succ_b = chain(tok, "cdefgh", True)
    ids_c, succ_c = chain(tok, "xyzw", False)
    succ_c[ids_c[-1]] = ids_c[0]
    m = chain_model(tok, {**succ_a, **succ_b, **succ_c})
    prompts = [ids_a[:1], ids_b[:1], ids_c[:2]]
    outs = generate(m, tok, prompts, max_new_tokens=5)
    assert [c.finish_reason for c in outs] == ["eos", "length", "length"]
    assert [len(c.tokens) for c in outs] == [3, 5, 5]
    outs = generate(m, tok, prompts, max_new_tokens=20)
    cycle = [ids_c[(2 + k) % 4] for k in range(20)]
    assert [c.tokens for c in outs] == [ids_a[1:] + [tok.eos_id], ids_b[1:] + [tok.eos_id], cycle]
    assert [c.finish_reason for c in outs] == ["eos", "eos", "length"]
    assert [c.text for c in outs] == ["b!", "defgh", tok.decode(cycle)]

    # a random model with sampling and several stop strings: rows end at scattered steps, and with 3 batch slots
    # for 12 rows every finished row's slot is refilled by a waiting one at once
    rm = random_model(tok, seed=2, std=0.1)
    kw = dict(n=3, max_new_tokens=24, temperature=1.0, top_k=50, seed=11, stop=["e", "o", "1"])
    steps = []  # (rows decoded, sequences still waiting) per decode step
    real = engine.Engine.decode

    def spy(self, rows):
        steps.append((len(self.running), len(self.waiting)))
        return real(self, rows)

    monkeypatch.setattr(engine.Engine, "decode", spy)
    on = generate(rm, tok, PROMPTS, batch_size=3, **kw)
    assert all(r == 3 for r, w in steps if w) and sum(1 for _, w in steps if w) > 5  # full while any wait
    off = generate(rm, tok, PROMPTS, **kw)
    lengths = {len(c.tokens) for c in on}
    assert len(lengths) > 2  # rows really finished at different steps
    for x, y in zip(on, off):
        assert (x.tokens, x.text, x.finish_reason) == (y.tokens, y.text, y.finish_reason)
        assert torch.allclose(x.logprobs, y.logprobs, atol=1e-5)
    assert any(c.finish_reason == "stop" for c in on)
    for c in on:
        if c.finish_reason == "stop":
            assert not any(s in c.text for s in kw["stop"])


def test_streaming_callback_sees_every_token(tok, model):
    seen = {}
    outs = generate(model, tok, PROMPTS[:2], n=2, max_new_tokens=6, temperature=1.0, seed=1, stop=["e"],
                    on_token=lambda i, t: seen.setdefault(i, []).append(t))
    assert seen == {i: c.tokens for i, c in enumerate(outs)}


# ---------------------------------------------------------------------------------------------------------------
# prompts, vocabulary, modes, errors


def test_prompt_encoding_mode_and_plain_tensors(tok, model):
    model.train()
    outs = generate(model, tok, ["the fox", [5, 6, 7]], max_new_tokens=3)
    assert model.training  # mode restored
    model.eval()
    assert outs[0].prompt_tokens == [tok.bos_id] + tok.encode("the fox")
    assert outs[1].prompt_tokens == [5, 6, 7]
    assert not torch.is_inference(outs[0].logprobs)  # usable next to autograd tensors in RL
    assert (outs[0].logprobs * torch.ones(3, requires_grad=True)).sum().requires_grad


def test_padded_model_vocab_never_emits_non_tokens(tok):
    m = random_model(tok, vocab_size=tok.vocab_size + 16, tie_embeddings=False)
    with torch.no_grad():
        m.lm_head.weight[tok.vocab_size:] = 10 * m.lm_head.weight[tok.vocab_size:].sign()  # dominant rows
    outs = generate(m, tok, PROMPTS, max_new_tokens=5) + generate(m, tok, PROMPTS, max_new_tokens=5,
                                                                   temperature=1.0, seed=0)
    assert all(t < tok.vocab_size for c in outs for t in c.tokens)
    assert all(torch.isfinite(c.logprobs).all() for c in outs)


def test_bad_inputs(tok, model):
    ctx = model.config.max_seq_len
    cases = [
        (dict(prompts=[[]]), "prompt 0 is empty"),
        (dict(prompts=["a", list(range(3)) * ctx]), f"prompt 1 has {3 * ctx} tokens"),
        (dict(prompts=["a", [1] * (ctx - 10)], max_new_tokens=20), "exceeds the model's context"),
        (dict(prompts=[[1, 10**6]]), "outside the model's vocabulary"),
        (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
        (dict(temperature=-0.1), "temperature"), (dict(temperature=float("nan")), "temperature"),
        (dict(n=0), "n "), (dict(top_k=-1), "top_k"), (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(batch_size=0), "batch_size"), (dict(block_size=0), "block_size"), (dict(kv_budget=-1.0), "kv_budget"),
        (dict(kv_budget=0.5, max_new_tokens=4), "fraction of free GPU memory"),
        (dict(kv_blocks=1, max_new_tokens=30, block_size=8), "kv_blocks=1 holds 1 KV blocks of 8 tokens"),
        (dict(stop=["x", ""]), "stop"), (dict(prompts=[]), "empty"),
    ]
    for kw, msg in cases:
        kw = {"prompts": ["hi"], **kw}
        with pytest.raises(ValueError, match=msg):
            generate(model, tok, kw.pop("prompts"), **kw)
    with pytest.raises(TypeError, match="list of str"):
        generate(model, tok, "a bare string")
    small = random_model(tok, vocab_size=tok.vocab_size - 1)
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        generate(small, tok, ["hi"])


def test_cli_streams_and_requires_a_checkpoint(tok, model, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="run `python midtrain.py` first"):
        sample.main([f"--ckpt={tmp_path / 'missing'}"])
    ckpt = tmp_path / "run" / "ckpt-1"
    (tmp_path / "run").mkdir()
    model_lib.save_checkpoint(str(ckpt), model, tokenizer=tok)
    (tmp_path / "p.txt").write_text("the lazy")
    outs = sample.main([f"--ckpt={tmp_path / 'run'}", f"--prompt=FILE:{tmp_path / 'p.txt'}", "--max_new_tokens=6",
                        "--temperature=0.0"])
    printed = capsys.readouterr().out
    assert len(outs) == 1 and printed.rstrip("\n").endswith("the lazy" + outs[0].text)
    outs = sample.main([f"--ckpt={ckpt}", "--prompt=the", "--num_samples=2", "--max_new_tokens=4"])
    assert len(outs) == 2 and "sample 1" in capsys.readouterr().out
    assert math.isfinite(outs[0].logprobs.sum().item())
