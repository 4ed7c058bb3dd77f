"""Token shards, prepare (text -> shards) and the mixture loader."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch

from data import prepare as prep
from data.files import write_atomic
from data.mixture import MixtureLoader, open_source, read_span, val_batches
from data.shards import HEADER_BYTES, read_header, read_shard, write_shard
from data.synth import QA_TEMPLATE
from data.tokenizer import Tokenizer


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "f.bin"  # the folder is created
    write_atomic(path, "héllo ", b"\x00\x01", np.arange(3, dtype=np.uint16))
    assert path.read_bytes() == "héllo ".encode() + b"\x00\x01" + np.arange(3, dtype=np.uint16).tobytes()
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)

    class Boom:  # fails mid-write, after a first chunk reached the temp file
        def __buffer__(self, flags):
            raise RuntimeError("disk full")

    with pytest.raises((RuntimeError, TypeError)):
        write_atomic(path, "new start", Boom())
    assert path.read_bytes().startswith("héllo ".encode())  # the old file is untouched
    assert os.listdir(path.parent) == ["f.bin"]  # and no temp file is left behind


# ---- shards ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vocab,dtype", [(1000, np.uint16), (65536, np.uint16), (65537, np.uint32),
                                         (128256, np.uint32)])
def test_shard_round_trip_and_dtype(tmp_path, vocab, dtype):
    tokens = np.random.default_rng(0).integers(0, vocab, size=1234)
    tokens[:2] = [0, vocab - 1]  # both ends of the id range survive
    path = str(tmp_path / "s.bin")
    assert write_shard(path, tokens.tolist(), vocab) == 1234
    info = read_header(path)
    assert info["count"] == 1234 and info["vocab_size"] == vocab and info["dtype"] == np.dtype(dtype)
    got = read_shard(path, check_ids=True)
    assert isinstance(got, np.memmap) and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, tokens)
    assert os.path.getsize(path) == HEADER_BYTES + 1234 * np.dtype(dtype).itemsize
    assert os.listdir(tmp_path) == ["s.bin"]  # no temp file left behind


def test_empty_shard(tmp_path):
    write_shard(str(tmp_path / "e.bin"), [], 50)
    assert len(read_shard(str(tmp_path / "e.bin"))) == 0


def test_shard_rejects_bad_tokens(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        write_shard(str(tmp_path / "a.bin"), [5, 100], 100)
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        write_shard(str(tmp_path / "a.bin"), [-1, 5], 100)
    with pytest.raises(ValueError, match="integers"):
        write_shard(str(tmp_path / "a.bin"), [0.5], 100)
    assert not os.path.exists(tmp_path / "a.bin")


def _corrupt(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_truncated_and_corrupted_shards_refused(tmp_path):
    good = str(tmp_path / "good.bin")
    write_shard(good, np.arange(100), 1000)
    raw = open(good, "rb").read()
    cases = {
        "truncated": (raw[:-2], "truncated"),
        "trailing": (raw + b"\0\0", "trailing bytes"),
        "short": (raw[:100], "shorter than"),
        "magic": (b"XXXXXXXX" + raw[8:], "not a token shard"),
        "version": (raw[:8] + (99).to_bytes(4, "little") + raw[12:], "version 99"),
        "width": (raw[:12] + (3).to_bytes(4, "little") + raw[16:], "bytes per token"),
        "width_vs_vocab": (raw[:12] + (4).to_bytes(4, "little") + raw[16:], "do not match vocab"),
    }
    for name, (data, message) in cases.items():
        path = str(tmp_path / f"{name}.bin")
        open(path, "wb").write(data)
        with pytest.raises(ValueError, match=message) as e:
            read_shard(path)
        assert path in str(e.value), name  # the error names the file
    bad_id = str(tmp_path / "bad_id.bin")
    open(bad_id, "wb").write(raw)
    _corrupt(bad_id, HEADER_BYTES + 10, (5000).to_bytes(2, "little"))
    read_shard(bad_id)  # the cheap check passes...
    with pytest.raises(ValueError, match="5000 >= vocab size 1000"):
        read_shard(bad_id, check_ids=True)  # ...the full scan does not


# ---- prepare ---------------------------------------------------------------------------------------------------
DOCS = [f"Mia has {i} apples. Noah gives Mia {i + 3} more apples, so she has {2 * i + 3}." for i in range(60)]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(DOCS + ["Question: Answer: What is 2 + 2? The answer is \\boxed{4}."], vocab_size=300)


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


def read_split(out, names):
    return np.concatenate([read_shard(os.path.join(out, n)) for n in names]).astype(np.int64)


def test_prepare_end_to_end(tmp_path, tok):
    src = write_jsonl(tmp_path / "docs.jsonl", [{"text": d, "id": i} for i, d in enumerate(DOCS)])
    out = str(tmp_path / "shards")
    done = prep.prepare(src, out, tok, shard_tokens=500, val_tokens=100, progress=False)
    expected = [tok.encode(d) + [tok.eos_id] for d in DOCS]
    # val: the first whole documents until >= 100 tokens
    n_val = next(k for k in range(1, len(DOCS)) if sum(map(len, expected[:k])) >= 100)
    val_tokens = [t for doc in expected[:n_val] for t in doc]
    train_tokens = [t for doc in expected[n_val:] for t in doc]
    assert done["val_tokens"] == len(val_tokens) and done["n_val_docs"] == n_val and done["n_docs"] == len(DOCS)
    assert read_split(out, done["val_shards"]).tolist() == val_tokens
    assert read_split(out, done["train_shards"]).tolist() == train_tokens
    sizes = [read_header(os.path.join(out, n))["count"] for n in done["train_shards"]]
    assert all(s == 500 for s in sizes[:-1]) and 0 < sizes[-1] <= 500 and len(sizes) > 2
    assert done["train_shards"][0] == "train_000000.bin" and done["val_shards"] == ["val_000000.bin"]
    on_disk = json.load(open(os.path.join(out, "done.json")))
    assert on_disk == done and on_disk["tokenizer"]["vocab_size"] == tok.vocab_size
    assert tok.decode(read_split(out, done["val_shards"])[:len(expected[0]) - 1]) == DOCS[0]

    # a finished set is never overwritten by accident...
    with pytest.raises(FileExistsError, match="overwrite"):
        prep.prepare(src, out, tok, progress=False)
    # ...but can be on request; old shards are replaced, not mixed in
    done2 = prep.prepare(src, out, tok, shard_tokens=10_000, progress=False, overwrite=True)
    assert done2["train_shards"] == ["train_000000.bin"] and done2["val_shards"] == []
    assert sorted(os.listdir(out)) == ["done.json", "train_000000.bin"]
    assert read_split(out, done2["train_shards"]).tolist() == [t for doc in expected for t in doc]


def test_prepare_template_bos_paths_and_processes(tmp_path, tok):
    qa = [{"question": f"What is {i} + 2?", "answer": f"The answer is \\boxed{{{i + 2}}}."} for i in range(40)]
    src = write_jsonl(tmp_path / "qa.jsonl", qa)
    tok.save(str(tmp_path / "tok"))
    one = prep.prepare([str(tmp_path / "*.jsonl")], str(tmp_path / "a"), str(tmp_path / "tok"), template="qa",
                       bos=True, shard_tokens=300, progress=False, chunk_docs=7)
    two = prep.prepare(src, str(tmp_path / "b"), tok, template="qa", bos=True, shard_tokens=300, progress=False,
                       chunk_docs=7, num_proc=2)
    a = read_split(str(tmp_path / "a"), one["train_shards"])
    assert a.tolist() == read_split(str(tmp_path / "b"), two["train_shards"]).tolist()  # processes: same bytes
    expected = [t for r in qa for t in tok.encode(QA_TEMPLATE.format(**r), bos=True, eos=True)]
    assert a.tolist() == expected
    assert tok.decode(a[1:len(tok.encode(QA_TEMPLATE.format(**qa[0]))) + 1]) == \
        "Question: What is 0 + 2?\nAnswer: The answer is \\boxed{2}."


def test_prepare_txt_and_errors(tmp_path, tok):
    (tmp_path / "a.txt").write_text("Mia has 3 apples.\n\nNoah has 4 apples.\n")
    done = prep.prepare(str(tmp_path / "a.txt"), str(tmp_path / "t"), tok, txt_split="blank", progress=False)
    assert done["n_docs"] == 2 and done["train_tokens"] == len(tok.encode("Mia has 3 apples.")) + \
        len(tok.encode("Noah has 4 apples.")) + 2
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"body": "no text field"}])
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: no field 'text'"):
        prep.prepare(bad, str(tmp_path / "x"), tok, progress=False)
    assert not os.path.exists(tmp_path / "x" / "done.json")
    with pytest.raises(ValueError, match="template needs field 'question'"):
        prep.prepare(bad, str(tmp_path / "y"), tok, template="qa", progress=False)
    with pytest.raises(FileNotFoundError, match="matches no files"):
        prep.prepare(str(tmp_path / "nothing*.jsonl"), str(tmp_path / "z"), tok, progress=False)
    with pytest.raises(ValueError, match="unsupported input"):
        (tmp_path / "a.csv").write_text("x")
        prep.prepare(str(tmp_path / "a.csv"), str(tmp_path / "z"), tok, progress=False)
    with pytest.raises(ValueError, match="either field or template"):
        prep.prepare(bad, str(tmp_path / "z"), tok, field="text", template="qa", progress=False)
    with pytest.raises(ValueError, match="val_tokens"):
        prep.prepare(str(tmp_path / "a.txt"), str(tmp_path / "v"), tok, val_tokens=10**6, progress=False)


def test_prepare_parquet_needs_pyarrow(tmp_path, tok):
    try:
        import pyarrow  # noqa: F401
        pytest.skip("pyarrow is installed")
    except ImportError:
        pass
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pyarrow"):
        prep.prepare(str(tmp_path / "d.parquet"), str(tmp_path / "p"), tok, progress=False)


def test_prepare_cli(tmp_path, tok, capsys):
    src = write_jsonl(tmp_path / "docs.jsonl", [{"text": d} for d in DOCS[:10]])
    tok.save(str(tmp_path / "tok"))
    args = ["--input", src, "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "o"), "--num_proc", "1"]
    prep.main(args)
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="overwrite"):
        prep.main(args)


# ---- mixture -----------------------------------------------------------------------------------------------------
VOCAB = 60000
T = 8  # seq_len; windows are T+1 = 9 tokens


def make_source(folder, base, shard_sizes, split="train"):
    """Tokens base, base+1, ...: a window's first token says which source and which window it is."""
    os.makedirs(folder, exist_ok=True)
    start = base
    for i, n in enumerate(shard_sizes):
        write_shard(os.path.join(folder, f"{split}_{i:06d}.bin"), np.arange(start, start + n), VOCAB)
        start += n
    return str(folder)


@pytest.fixture()
def sources(tmp_path):
    # shard sizes not multiples of 9, so windows span shard boundaries
    return {"a": make_source(tmp_path / "a", 0, [100, 57, 200]),       # 357 tokens -> 39 windows
            "b": make_source(tmp_path / "b", 10000, [50, 40]),         # 90 tokens -> 10 windows
            "c": make_source(tmp_path / "c", 20000, [95])}             # 10 windows


def origin(x_row):
    """(source, window) of a sequence from its first token."""
    first = int(x_row[0])
    base = first // 10000 * 10000
    assert (first - base) % (T + 1) == 0
    return "abc"[first // 10000], (first - base) // (T + 1)


def test_windows_exact_and_shifted(sources):
    loader = MixtureLoader(sources, {"a": 1, "b": 0, "c": 0}, seq_len=T, micro_batch=4, log=lambda m: None)
    assert loader.n_windows == {"a": 39, "b": 10, "c": 10}
    seen = []
    for _ in range(10):  # 40 sequences: one full epoch of a (39 windows) and one more
        x, y = loader.next_batch()
        assert x.shape == y.shape == (4, T) and x.dtype == y.dtype == torch.int64
        for row_x, row_y in zip(x, y):
            src, w = origin(row_x)
            # window w is tokens [w*9, w*9+9) of the concatenated stream, across shard boundaries
            assert row_x.tolist() == list(range(w * 9, w * 9 + T)) and row_y.tolist() == list(range(w * 9 + 1, w * 9 + 9))
            seen.append(w)
    assert sorted(seen[:39]) == list(range(39))  # each window once per epoch
    assert seen[:39] != list(range(39))  # in a shuffled order
    src = open_source(sources["b"])
    assert read_span(src, 45, 10).tolist() == list(range(10045, 10055))  # spans the 50-token shard boundary


def test_proportions_and_zero_weight(sources):
    loader = MixtureLoader(sources, {"a": 3, "b": 1, "c": 0}, seq_len=T, micro_batch=50, log=lambda m: None)
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(80):
        x, _ = loader.next_batch()
        for row in x:
            counts[origin(row)[0]] += 1
        assert [origin(r)[0] for r in x] == loader.last_sources
    total = sum(counts.values())
    assert counts["c"] == 0
    assert abs(counts["a"] / total - 0.75) < 0.03  # 4000 draws: sd ~ 0.007


def test_deterministic_and_seeded(sources):
    def stream(seed, steps=6):
        loader = MixtureLoader(sources, {"a": 1, "b": 1, "c": 1}, T, 3, seed=seed, log=lambda m: None)
        return torch.cat([loader.next_batch()[0] for _ in range(steps)])

    assert torch.equal(stream(0), stream(0))
    assert not torch.equal(stream(0), stream(1))
    # weights keyed in another order: same stream
    other = MixtureLoader({k: sources[k] for k in "cba"}, {"c": 1, "b": 1, "a": 1}, T, 3, log=lambda m: None)
    assert torch.equal(torch.cat([other.next_batch()[0] for _ in range(6)]), stream(0))


def test_ranks_split_the_single_process_stream(sources):
    weights = {"a": 2, "b": 1, "c": 1}
    single = MixtureLoader(sources, weights, T, micro_batch=3, log=lambda m: None)
    ranks = [MixtureLoader(sources, weights, T, micro_batch=3, rank=r, world_size=2, log=lambda m: None)
             for r in range(2)]
    for _ in range(12):  # 72 sequences: sources b and c wrap into later epochs too
        r0, r1 = ranks[0].next_batch(), ranks[1].next_batch()
        s0, s1 = single.next_batch(), single.next_batch()
        assert torch.equal(r0[0], s0[0]) and torch.equal(r0[1], s0[1])
        assert torch.equal(r1[0], s1[0]) and torch.equal(r1[1], s1[1])
    assert ranks[0].state_dict()["cursor"] == ranks[1].state_dict()["cursor"] == single.state_dict()["cursor"]


def test_ranks_disjoint_within_epoch(sources):
    loaders = [MixtureLoader(sources, {"a": 1, "b": 0, "c": 0}, T, 4, rank=r, world_size=3, log=lambda m: None)
               for r in range(3)]
    windows = [origin(row)[1] for _ in range(3) for ld in loaders for row in ld.next_batch()[0]]
    assert len(windows) == 36 and len(set(windows)) == 36  # 36 <= 39 windows: no repeats across ranks


def test_state_dict_resume(sources):
    weights = {"a": 1, "b": 2, "c": 1}
    ref = MixtureLoader(sources, weights, T, 4, seed=7, log=lambda m: None)
    for _ in range(5):
        ref.next_batch()
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)  # the way midtrain stores it in state.pt
    expected = [ref.next_batch() for _ in range(10)]  # crosses epoch boundaries of b and c
    buf.seek(0)
    resumed = MixtureLoader(sources, weights, T, 4, seed=7, log=lambda m: None)
    resumed.load_state_dict(torch.load(buf))
    for x, y in expected:
        x2, y2 = resumed.next_batch()
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert resumed.state_dict() == ref.state_dict()

    # the stream is global: resuming with 2 ranks continues it too
    buf.seek(0)
    state = torch.load(buf)
    two = [MixtureLoader(sources, weights, T, 2, rank=r, world_size=2, seed=7, log=lambda m: None) for r in range(2)]
    for ld in two:
        ld.load_state_dict(state)
    x0, x1 = two[0].next_batch()[0], two[1].next_batch()[0]
    assert torch.equal(torch.cat([x0, x1]), expected[0][0])

    wrong = MixtureLoader(sources, weights, T + 1, 4, seed=7, log=lambda m: None)
    with pytest.raises(ValueError, match="seq_len"):
        wrong.load_state_dict(state)
    with pytest.raises(ValueError, match="weights"):
        MixtureLoader(sources, {"a": 1, "b": 1, "c": 1}, T, 4, seed=7, log=lambda m: None).load_state_dict(state)


def test_epoch_wrap_logged_once_per_source_and_epoch(sources):
    logs, logs_rank1 = [], []
    loader = MixtureLoader(sources, {"a": 0, "b": 1, "c": 0}, T, 5, log=logs.append)
    rank1 = MixtureLoader(sources, {"a": 0, "b": 1, "c": 0}, T, 5, rank=1, world_size=2, log=logs_rank1.append)
    for _ in range(2):  # 10 sequences = exactly epoch 0 of b's 10 windows: no wrap yet
        loader.next_batch()
    assert logs == []
    loader.next_batch()
    assert len(logs) == 1 and "'b'" in logs[0] and "epoch 1" in logs[0]
    for _ in range(4):  # sequences 15..34: epochs 1 and 2 end, epoch 3 starts
        loader.next_batch()
    assert len(logs) == 3 and "epoch 3" in logs[-1]
    assert loader.state_dict()["epoch"] == {"a": 0, "b": 3, "c": 0}
    for _ in range(3):
        rank1.next_batch()
    assert logs_rank1 == []  # ranks > 0 stay quiet; rank 0 speaks for all


def test_mixture_errors(sources, tmp_path):
    quiet = dict(log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="not found"):
        MixtureLoader({"a": str(tmp_path / "missing")}, {"a": 1}, T, 2, **quiet)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no train_.*bin shards"):
        MixtureLoader({"a": str(tmp_path / "empty")}, {"a": 1}, T, 2, **quiet)
    with pytest.raises(ValueError, match="same sources"):
        MixtureLoader(sources, {"a": 1, "b": 1}, T, 2, **quiet)
    with pytest.raises(ValueError, match=">= 0"):
        MixtureLoader(sources, {"a": 1, "b": -1, "c": 0}, T, 2, **quiet)
    with pytest.raises(ValueError, match="at least one weight"):
        MixtureLoader(sources, {"a": 0, "b": 0, "c": 0}, T, 2, **quiet)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        MixtureLoader(sources, {"a": 0, "b": 1, "c": 0}, 100, 2, **quiet)
    MixtureLoader(sources, {"a": 1, "b": 0, "c": 0}, 100, 2, **quiet)  # a too-small source is fine at weight 0
    write_shard(str(tmp_path / "empty" / "train_000000.bin"), np.arange(50), 1000)
    with pytest.raises(ValueError, match="different vocab sizes"):
        MixtureLoader({"a": sources["a"], "e": str(tmp_path / "empty")}, {"a": 1, "e": 1}, T, 2, **quiet)


def test_val_batches(tmp_path):
    folder = make_source(tmp_path / "v", 0, [60, 70], split="val")  # 130 tokens -> 14 windows
    one = list(val_batches(folder, T, batch_size=4))
    assert len(one) == 3  # whole batches only
    assert [origin(r)[1] for x, _ in one for r in x] == list(range(12))  # in order, no shuffle
    assert all(torch.equal(y[:, :-1], x[:, 1:]) for x, y in one)
    two = [list(val_batches(folder, T, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    assert len(two[0]) == len(two[1]) == 3
    for (x, _), (x0, _), (x1, _) in zip(one, two[0], two[1]):
        assert torch.equal(x, torch.cat([x0, x1]))
    assert len(list(val_batches(folder, T, 4, max_batches=2))) == 2
    with pytest.raises(ValueError, match="fewer than one batch"):
        val_batches(folder, T, batch_size=20)
    prep_like = MixtureLoader({"v": folder}, {"v": 1}, T, 2, split="val", log=lambda m: None)
    assert prep_like.n_windows == {"v": 14}


def test_prepare_then_mixture(tmp_path, tok):
    """The two halves together: prepared shards feed the loader and decode back to the documents."""
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS])
    out = str(tmp_path / "s")
    done = prep.prepare(src, out, tok, shard_tokens=300, val_tokens=50, progress=False)
    loader = MixtureLoader({"web": out}, {"web": 1.0}, seq_len=16, micro_batch=2, log=lambda m: None)
    assert loader.vocab_size == tok.vocab_size
    stream = read_split(out, done["train_shards"])
    windows = stream[:len(stream) // 17 * 17].reshape(-1, 17)  # [n_windows, seq_len+1]
    x, y = loader.next_batch()
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        match = np.flatnonzero((windows[:, :16] == row_x).all(1))
        assert len(match) == 1 and (windows[match[0], 1:] == row_y).all()
    assert len(list(val_batches(out, 16, 2))) >= 1
    os.remove(os.path.join(out, "train_000001.bin"))  # shards no longer match done.json
    with pytest.raises(ValueError, match="do not match done.json"):
        MixtureLoader({"web": out}, {"web": 1.0}, seq_len=16, micro_batch=2)
