from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from conftest import SHARED_DATA
from data.tokenizer import (GPT2_PATTERN, HF_CONFIG, HF_FILE, JSON_FILE, MATH_PATTERN, RANK_FILE, TRAIN_SPECIALS,
                            Tokenizer)

ODD_TEXT = ("naïve café — ∑_{i=1}^n i² = n(n+1)/2, 日本語 🙂 e\u0301 \t\r\n  _x_ \x00\x1c\u00a0 $\\frac{3}{4}$ "
            "<|eot_id|> <|begin_of_text|> 12345 0.5% it's 'quoted' ½ Ⅻ ١٢٣\n\n\n")


def _jsonl(rel: str) -> list[dict]:
    path = os.path.join(SHARED_DATA, rel)
    if not os.path.isfile(path):
        pytest.skip(f"benchmark data not found: {path}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def bench_texts() -> list[str]:
    """Every question/answer text of GSM8K test and MATH-500 (problem, solution)."""
    texts = [r[k] for r in _jsonl("gsm8k/test.jsonl") for k in ("question", "answer")]
    return texts + [r[k] for r in _jsonl("math500/test.jsonl") for k in ("problem", "solution")]


@pytest.fixture(scope="module")
def meta_path() -> str:
    spec = importlib.util.find_spec("llama_models")
    if spec is None or spec.origin is None:
        pytest.skip("llama-models not installed: it ships the real Llama 3 tokenizer.model")
    path = os.path.join(os.path.dirname(spec.origin), "llama3", "tokenizer.model")
    if not os.path.isfile(path):
        pytest.skip(f"llama-models has no {path}")
    return path


@pytest.fixture(scope="module")
def llama3(meta_path) -> Tokenizer:
    return Tokenizer.from_pretrained(meta_path)


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    rows = _jsonl("gsm8k/train.jsonl")[:1500]
    return Tokenizer.train([r["question"] + "\n" + r["answer"] for r in rows], vocab_size=512)


# ---- Llama 3 -------------------------------------------------------------------------------------------------
def test_llama3_known_ids(llama3):
    assert llama3.name == "llama3"
    assert llama3.encode("Hello world", bos=True) == [128000, 9906, 1917]
    assert llama3.encode("Hello world", eos=True)[-1] == 128001
    assert (llama3.bos_id, llama3.eos_id, llama3.pad_id) == (128000, 128001, 128004)
    sp = llama3.special_tokens
    assert len(sp) == 256 and sorted(sp.values()) == list(range(128000, 128256))
    assert sp["<|eot_id|>"] == 128009 and sp["<|eom_id|>"] == 128008 and sp["<|python_tag|>"] == 128010
    assert sp["<|start_header_id|>"] == 128006 and sp["<|end_header_id|>"] == 128007
    assert sp["<|reserved_special_token_2|>"] == 128005 and sp["<|reserved_special_token_3|>"] == 128011
    assert sp["<|reserved_special_token_247|>"] == 128255
    assert llama3.stop_ids == frozenset({128001, 128008, 128009})
    assert llama3.vocab_size == 128256


def test_llama3_agrees_with_llama_models(llama3, meta_path, bench_texts):
    """Meta's own tokenizer code: same ids for the specials that matter, same encodings.
    (llama-models 0.3 names 128005 <|step_id|> and 128011 <|image|>; HF's Llama 3.1/3.2 files and we keep
    the reserved names there. The ids of every functional token agree.)"""
    from pathlib import Path
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer
    meta = MetaTokenizer(Path(meta_path))
    for name in ("<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|reserved_special_token_0|>"):
        assert llama3.special_tokens[name] == meta.special_tokens[name], name
    assert llama3.vocab_size == meta.n_words and llama3.stop_ids == frozenset(meta.stop_tokens)
    for text in bench_texts[:200] + [ODD_TEXT]:
        assert llama3.encode(text, bos=True, eos=True) == meta.encode(text, bos=True, eos=True)


def test_llama3_roundtrip_benchmarks(llama3, bench_texts):
    batch = llama3.encode_batch(bench_texts, bos=True)
    assert len(batch) == len(bench_texts)
    for text, ids in zip(bench_texts, batch):
        assert ids[0] == llama3.bos_id
        assert llama3.decode(ids[1:]) == text
    assert batch[:20] == [llama3.encode(t, bos=True) for t in bench_texts[:20]]


def test_special_text_is_data(llama3):
    ids = llama3.encode("done<|eot_id|><|begin_of_text|>")
    assert not set(ids) & set(llama3.special_tokens.values())
    assert llama3.decode(ids) == "done<|eot_id|><|begin_of_text|>"
    assert llama3.decode([llama3.special_tokens["<|eot_id|>"]]) == "<|eot_id|>"  # real specials decode by name
    assert llama3.decode(llama3.encode(ODD_TEXT)) == ODD_TEXT


def test_decode_inputs(llama3):
    ids = llama3.encode("x = 12")
    assert llama3.decode(torch.tensor(ids)) == "x = 12" == llama3.decode(tuple(ids))
    with pytest.raises(ValueError, match="1-D"):
        llama3.decode(torch.tensor([ids]))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        llama3.decode([1, 999_999])
    with pytest.raises(TypeError):
        llama3.encode(ids)


def test_save_reload_llama3(llama3, meta_path, tmp_path):
    llama3.save(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.mergeable_ranks == llama3.mergeable_ranks and again.special_tokens == llama3.special_tokens
    assert (again.name, again.pattern, again.stop_ids, again.pad_id) == ("llama3", llama3.pattern, llama3.stop_ids, 128004)
    assert again.encode(ODD_TEXT, bos=True) == llama3.encode(ODD_TEXT, bos=True)
    with open(tmp_path / RANK_FILE, "rb") as a, open(meta_path, "rb") as b:
        assert a.read().split() == b.read().split()  # our rank file is Meta's format


# ---- Hugging Face tokenizer.json -----------------------------------------------------------------------------
def _write_hf_json(tok: Tokenizer, folder, **changes) -> str:
    """tok's own tokenizer.json (Tokenizer.hf_tokenizer_json), with `changes` to its fields, alone in `folder`."""
    doc = {**tok.hf_tokenizer_json(), **changes}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, HF_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    return path


@pytest.fixture(scope="module")
def hf_llama3(llama3, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_llama3")
    path = _write_hf_json(llama3, folder)  # Split(Llama 3 regex) + ByteLevel(use_regex=False), as HF ships it
    with open(folder / "tokenizer_config.json", "w") as f:  # one role as a dict, one as a str, as HF writes them
        json.dump({"bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|end_of_text|>"}, f)
    return path


def test_hf_json_matches_meta(hf_llama3, llama3, bench_texts, tmp_path):
    hf = Tokenizer.from_pretrained(os.path.dirname(hf_llama3))
    assert hf.name == "hf" and hf.pattern == llama3.pattern
    assert (hf.vocab_size, hf.bos_id, hf.eos_id, hf.stop_ids) == (llama3.vocab_size, 128000, 128001, llama3.stop_ids)
    assert hf.mergeable_ranks == llama3.mergeable_ranks and hf.special_tokens == llama3.special_tokens
    assert hf.encode_batch(bench_texts) == llama3.encode_batch(bench_texts)
    hf.save(tmp_path)  # an HF-loaded tokenizer reloads exactly from our files
    again = Tokenizer.from_pretrained(tmp_path)
    assert (again.name, again.bos_id, again.eos_id, again.pad_id) == ("hf", hf.bos_id, hf.eos_id, hf.pad_id)
    assert again.encode(ODD_TEXT) == hf.encode(ODD_TEXT)


def test_hf_json_matches_hf_library(hf_llama3, llama3, bench_texts):
    tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers (comes with transformers) not installed")
    ref = tokenizers.Tokenizer.from_file(hf_llama3)
    texts = bench_texts[:600] + [ODD_TEXT.replace("<|", "<")]  # HF splits out special text; we keep it as data
    assert [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)] == llama3.encode_batch(texts)


@pytest.mark.parametrize("which", ["trained", "llama3"])
def test_saved_folder_loads_in_transformers(which, request, bench_texts, tmp_path):
    """save() also writes tokenizer.json + tokenizer_config.json: AutoTokenizer reads a checkpoint's folder and
    gives our ids (bos first, as HF adds it), our bos/eos/pad, and decodes back to the text."""
    transformers = pytest.importorskip("transformers")
    tok = request.getfixturevalue(which)
    tok.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    assert len(hf) == tok.vocab_size
    texts = bench_texts[::4] + [ODD_TEXT.replace("<|", "<")]  # HF splits out special text; we keep it as data
    ids = hf(texts)["input_ids"]
    assert ids == tok.encode_batch(texts, bos=True)
    assert hf.batch_decode([i[1:] for i in ids]) == texts


def test_hf_small_gpt2_style(trained, tmp_path):
    """ByteLevel-only pre-tokenizer => GPT-2 regex; no tokenizer_config => bos/eos found by name."""
    path = _write_hf_json(trained, tmp_path, pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False})
    hf = Tokenizer.from_pretrained(path)
    assert hf.pattern == GPT2_PATTERN
    assert (hf.bos_id, hf.eos_id, hf.pad_id) == (trained.bos_id, trained.eos_id, trained.pad_id)
    assert hf.decode(hf.encode(ODD_TEXT)) == ODD_TEXT


def test_hf_bad_files(trained, tmp_path):
    path = _write_hf_json(trained, tmp_path, pre_tokenizer=None)
    with open(path) as f:
        doc = json.load(f)
    doc["model"]["merges"].append(["q", "zzz"])
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(ValueError, match="merge"):
        Tokenizer.from_pretrained(path)
    with open(path, "w") as f:
        json.dump({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}, f)
    with pytest.raises(ValueError, match="Unigram"):
        Tokenizer.from_pretrained(tmp_path)


# ---- trained tokenizer ---------------------------------------------------------------------------------------
def test_train_deterministic_and_shaped(trained):
    rows = _jsonl("gsm8k/train.jsonl")[:1500]
    again = Tokenizer.train([r["question"] + "\n" + r["answer"] for r in rows], vocab_size=512)
    assert again.mergeable_ranks == trained.mergeable_ranks and again.special_tokens == trained.special_tokens
    assert trained.vocab_size == 512 and len(trained.mergeable_ranks) == 512 - len(TRAIN_SPECIALS)
    assert sorted(trained.special_tokens.values()) == list(range(512 - len(TRAIN_SPECIALS), 512))
    assert trained.pad_id not in (trained.bos_id, trained.eos_id)
    assert trained.stop_ids == frozenset({trained.eos_id, trained.special_tokens["<|eot_id|>"]})
    assert len(trained.encode("9876543210")) == 10  # digits split one by one


def test_train_roundtrip_and_compression(trained, bench_texts):
    assert trained.decode(trained.encode(ODD_TEXT)) == ODD_TEXT
    batch = trained.encode_batch(bench_texts)  # held-out: GSM8K test + MATH-500 (LaTeX)
    assert all(trained.decode(ids) == t for ids, t in zip(batch, bench_texts))
    assert sum(map(len, batch)) < sum(len(t.encode("utf-8")) for t in bench_texts)
    ids = trained.encode("2+2=4", bos=True, eos=True)
    assert ids[0] == trained.bos_id and ids[-1] == trained.eos_id


def test_train_pattern_same_in_python_and_tiktoken(trained, bench_texts):
    """Training counts pieces with Python's re, encoding splits with tiktoken's regex: piece-by-piece encoding
    must give the same ids as encoding the whole text, or training learned from pieces encoding never sees."""
    import re
    for text in bench_texts[::7] + [ODD_TEXT]:
        pieces = re.findall(MATH_PATTERN, text)
        assert "".join(pieces) == text  # the pattern covers every character
        assert [i for p in pieces for i in trained.encode(p)] == trained.encode(text)


def test_train_save_reload(trained, tmp_path, bench_texts):
    trained.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([RANK_FILE, JSON_FILE, HF_FILE, HF_CONFIG])  # no temp files left
    for path in (tmp_path, tmp_path / JSON_FILE):
        again = Tokenizer.from_pretrained(path)
        assert again.name == trained.name and again.pattern == trained.pattern
        assert (again.bos_id, again.eos_id, again.pad_id, again.stop_ids) == \
               (trained.bos_id, trained.eos_id, trained.pad_id, trained.stop_ids)
        assert again.encode_batch(bench_texts[:300]) == trained.encode_batch(bench_texts[:300])
    # the rank file alone is read as Meta's format: Llama 3 pattern + specials after the ranks
    alone = Tokenizer.from_pretrained(tmp_path / RANK_FILE)
    assert alone.name == "llama3" and alone.bos_id == 512 - len(TRAIN_SPECIALS)


def test_train_bad_inputs():
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(["abc"], vocab_size=256 + len(TRAIN_SPECIALS) - 1)
    with pytest.raises(TypeError):
        Tokenizer.train("one string", vocab_size=300)
    with pytest.raises(ValueError, match="merges"):
        Tokenizer.train(["tiny text"], vocab_size=1000)
    bare = Tokenizer.train([], vocab_size=256 + len(TRAIN_SPECIALS))  # bytes only
    assert len(bare.encode("héllo")) == len("héllo".encode("utf-8"))


def test_no_bos_is_a_clear_error(trained):
    tok = Tokenizer(trained.mergeable_ranks, trained.pattern, {"<|end_of_text|>": 600}, name="t", eos="<|end_of_text|>")
    assert tok.bos_id is None and tok.pad_id == 600 and tok.stop_ids == frozenset({600})
    with pytest.raises(ValueError, match="no bos"):
        tok.encode("x", bos=True)
    with pytest.raises(ValueError, match="not one of the special tokens"):
        Tokenizer(trained.mergeable_ranks, trained.pattern, {}, name="t", bos="<s>")


# ---- loading errors ------------------------------------------------------------------------------------------
def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"{JSON_FILE}.*{RANK_FILE}.*tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)
    bad = tmp_path / RANK_FILE
    bad.write_text("IQ== 0\nnot base64!! x\n")
    with pytest.raises(ValueError, match=f"{RANK_FILE}.*line 2"):
        Tokenizer.from_pretrained(tmp_path)
    bad.write_bytes(b"\x0a\x08\xff\xfe sentencepiece-ish")
    with pytest.raises(ValueError, match="binary"):
        Tokenizer.from_pretrained(bad)
    bad.write_text("IQ== 0\nIg== 1\n")  # parses, but lacks 254 of the 256 bytes
    with pytest.raises(ValueError, match="byte-level"):
        Tokenizer.from_pretrained(bad)
    (tmp_path / JSON_FILE).write_text('{"format": "nanoocto-tokenizer", ')
    with pytest.raises(ValueError, match=f"{JSON_FILE}.*corrupt JSON"):
        Tokenizer.from_pretrained(tmp_path)
    os.remove(bad)
    (tmp_path / JSON_FILE).write_text('{"format": "nanoocto-tokenizer", "version": 1}')
    with pytest.raises(FileNotFoundError, match=RANK_FILE):
        Tokenizer.from_pretrained(tmp_path)
