"""Tokenize text corpora (jsonl, parquet, txt) into token shards for midtrain.py.

  python -m data.prepare --input data/synth/web.jsonl --tokenizer out/tok --out data/shards/web --val_tokens 100000
  python -m data.prepare --input 'data/synth/qa_*.jsonl' --template qa --tokenizer out/tok --out data/shards/qa

Each document becomes its tokens followed by EOS (optionally preceded by BOS), so documents in a shard are
separated by EOS. Documents are read in input order (files sorted within each glob); the first whole documents
go to the val split until it holds at least val_tokens tokens, the rest to train. Output:
  <out>/train_000000.bin ...   shards of exactly shard_tokens tokens (the last one shorter); a document may
  <out>/val_000000.bin ...     continue from one shard into the next (data/mixture.py reads across shards)
  <out>/done.json              written last: token counts, shard names, tokenizer; its presence = finished
A folder with done.json is never overwritten unless overwrite=True (--overwrite).

Record -> text: jsonl/parquet records use one field (default "text") or a template over fields: "qa" is
data.synth.QA_TEMPLATE ("Question: {question}\\nAnswer: {answer}"), or any "{field}" format string.
A .txt file is one document, or one per blank-line-separated paragraph with txt_split="blank".
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import multiprocessing
import os
import time
from typing import Iterator

import numpy as np
from tqdm import tqdm

from data.files import write_atomic
from data.shards import write_shard
from data.synth import QA_TEMPLATE
from data.tokenizer import Tokenizer

TEMPLATES = {"qa": QA_TEMPLATE}
DONE = "done.json"
EXTENSIONS = (".jsonl", ".parquet", ".txt")


def resolve_inputs(inputs) -> list[str]:
    """Files from paths and globs, sorted within each pattern, first occurrence kept."""
    patterns = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not patterns:
        raise ValueError("no input files given")
    files = []
    for pat in map(os.fspath, patterns):
        matches = sorted(glob.glob(pat)) if glob.has_magic(pat) else [pat]
        if not matches:
            raise FileNotFoundError(f"input pattern {pat!r} matches no files")
        for path in matches:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"input file not found: {path!r}")
            if not path.endswith(EXTENSIONS):
                raise ValueError(f"{path}: unsupported input type (expected one of {', '.join(EXTENSIONS)})")
            if path not in files:
                files.append(path)
    return files


def _record_text(rec, where: str, field: str | None, template: str | None) -> str:
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if template is not None:
        try:
            return template.format(**rec)
        except KeyError as e:
            raise ValueError(f"{where}: the template needs field {e} but the record has {sorted(rec)}") from None
    if field not in rec:
        raise ValueError(f"{where}: no field {field!r} (record has {sorted(rec)})")
    text = rec[field]
    if not isinstance(text, str):
        raise ValueError(f"{where}: field {field!r} is {type(text).__name__}, not a string")
    return text


def _iter_jsonl(path: str, field, template) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not valid JSON ({e})") from None
            yield _record_text(rec, f"{path}: line {n}", field, template)


def _iter_parquet(path: str, field, template) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq  # optional: only parquet inputs need it
    except ImportError:
        raise ImportError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    pf = pq.ParquetFile(path)
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            row += 1
            yield _record_text(rec, f"{path}: row {row}", field, template)


def _iter_txt(path: str, txt_split: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if txt_split == "file":
        yield text
    else:
        yield from (p.strip() for p in text.split("\n\n"))


def iter_documents(files: list[str], field: str | None = None, template: str | None = None,
                   txt_split: str = "file") -> Iterator[str]:
    for path in files:
        if path.endswith(".jsonl"):
            yield from _iter_jsonl(path, field, template)
        elif path.endswith(".parquet"):
            yield from _iter_parquet(path, field, template)
        else:
            yield from _iter_txt(path, txt_split)


def _chunks(docs: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk = []
    for d in docs:
        if d:  # an empty document would only add a lone EOS
            chunk.append(d)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---- encoding (runs in worker processes) --------------------------------------------------------------------------
_WORKER_TOK: Tokenizer | None = None
_WORKER_BOS = False


def _init_worker(tok: Tokenizer, bos: bool) -> None:
    global _WORKER_TOK, _WORKER_BOS
    _WORKER_TOK, _WORKER_BOS = tok, bos


def _encode_chunk(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """-> (tokens of all documents concatenated, each ending in EOS [N] int64; per-document lengths [D])."""
    ids = _WORKER_TOK.encode_batch(texts, bos=_WORKER_BOS, eos=True)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    return np.fromiter((t for doc in ids for t in doc), dtype=np.int64, count=int(lengths.sum())), lengths


def _encoded_chunks(chunks: Iterator[list[str]], tok: Tokenizer, bos: bool, num_proc: int):
    """Yield (texts_count, tokens, lengths) in input order. With num_proc > 1 at most 2*num_proc chunks are in
    flight (Pool.imap would read the whole corpus ahead into memory)."""
    if num_proc <= 1:
        _init_worker(tok, bos)
        for chunk in chunks:
            yield (len(chunk), *_encode_chunk(chunk))
        return
    with multiprocessing.Pool(num_proc, initializer=_init_worker, initargs=(tok, bos)) as pool:
        pending = collections.deque()
        for chunk in chunks:
            pending.append((len(chunk), pool.apply_async(_encode_chunk, (chunk,))))
            if len(pending) >= 2 * num_proc:
                n, res = pending.popleft()
                yield (n, *res.get())
        while pending:
            n, res = pending.popleft()
            yield (n, *res.get())


# ---- shard writing ----------------------------------------------------------------------------------------------
def _new_writer(out_dir: str, prefix: str, shard_tokens: int, vocab_size: int) -> dict:
    return {"out_dir": out_dir, "prefix": prefix, "shard_tokens": shard_tokens, "vocab_size": vocab_size,
            "pending": [], "n_pending": 0, "shards": [], "total": 0}


def _write_next(w: dict, tokens: np.ndarray) -> None:
    name = f"{w['prefix']}_{len(w['shards']):06d}.bin"
    write_shard(os.path.join(w["out_dir"], name), tokens, w["vocab_size"])
    w["shards"].append(name)
    w["total"] += len(tokens)


def _add_tokens(w: dict, tokens: np.ndarray) -> None:
    """Buffer tokens; write every full shard of exactly shard_tokens tokens."""
    if not len(tokens):
        return
    w["pending"].append(tokens)
    w["n_pending"] += len(tokens)
    if w["n_pending"] < w["shard_tokens"]:
        return
    buf = np.concatenate(w["pending"])
    n_full = len(buf) // w["shard_tokens"]
    for i in range(n_full):
        _write_next(w, buf[i * w["shard_tokens"]:(i + 1) * w["shard_tokens"]])
    rest = buf[n_full * w["shard_tokens"]:]
    w["pending"], w["n_pending"] = ([rest] if len(rest) else []), len(rest)


def _flush(w: dict) -> None:
    if w["n_pending"]:
        _write_next(w, np.concatenate(w["pending"]))
        w["pending"], w["n_pending"] = [], 0


def _clear_old_outputs(out_dir: str) -> None:
    """Remove shards/temp files of an unfinished or overwritten run (only files this script writes)."""
    for pat in ("train_*.bin", "val_*.bin", ".tmp-*"):
        for path in glob.glob(os.path.join(out_dir, pat)):
            os.remove(path)


def is_prepared(out_dir: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, DONE))


def prepare(inputs, out_dir: str, tokenizer, field: str | None = None, template: str | None = None, *,
            shard_tokens: int = 50_000_000, val_tokens: int = 0, bos: bool = False, num_proc: int = 1,
            overwrite: bool = False, txt_split: str = "file", chunk_docs: int = 256, progress: bool = True) -> dict:
    """Tokenize inputs (paths/globs) into out_dir; returns the done.json contents.
    tokenizer: a Tokenizer or a path for Tokenizer.from_pretrained. field/template: see the module docstring."""
    files = resolve_inputs(inputs)
    if field is not None and template is not None:
        raise ValueError("give either field or template, not both")
    if template is not None:
        template = TEMPLATES.get(template, template)
        if "{" not in template:
            raise ValueError(f"template {template!r} is neither one of {sorted(TEMPLATES)} nor a '{{field}}' format")
    elif field is None:
        field = "text"
    if shard_tokens < 1 or val_tokens < 0 or chunk_docs < 1 or num_proc < 1:
        raise ValueError(f"need shard_tokens >= 1, val_tokens >= 0, chunk_docs >= 1, num_proc >= 1; got "
                         f"{shard_tokens}, {val_tokens}, {chunk_docs}, {num_proc}")
    if txt_split not in ("file", "blank"):
        raise ValueError(f"txt_split must be 'file' or 'blank', got {txt_split!r}")
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_pretrained(tokenizer)
    if tok.eos_id is None or (bos and tok.bos_id is None):
        raise ValueError(f"tokenizer {tok.name} has no {'eos' if tok.eos_id is None else 'bos'} token")

    done_path = os.path.join(out_dir, DONE)
    if os.path.exists(done_path):
        if not overwrite:
            raise FileExistsError(f"{out_dir} already holds a finished shard set ({DONE}); "
                                  "pass overwrite=True (--overwrite) to replace it")
        os.remove(done_path)  # first, so an interrupted rewrite is never mistaken for finished
    os.makedirs(out_dir, exist_ok=True)
    _clear_old_outputs(out_dir)

    t0 = time.time()
    train = _new_writer(out_dir, "train", shard_tokens, tok.vocab_size)
    val = _new_writer(out_dir, "val", shard_tokens, tok.vocab_size)
    n_docs = n_val_docs = 0
    bar = tqdm(unit="doc", desc=f"prepare {os.path.basename(os.path.normpath(out_dir))}", disable=not progress)
    chunks = _chunks(iter_documents(files, field, template, txt_split), chunk_docs)
    for n, tokens, lengths in _encoded_chunks(chunks, tok, bos, num_proc):
        need = val_tokens - val["total"] - val["n_pending"]
        if need > 0:  # whole documents to val until it has at least val_tokens
            ends = np.cumsum(lengths)
            k = min(int(np.searchsorted(ends, need)) + 1, len(lengths))
            cut = int(ends[k - 1])
            _add_tokens(val, tokens[:cut])
            n_val_docs += k
            tokens = tokens[cut:]
        _add_tokens(train, tokens)
        n_docs += n
        bar.update(n)
        bar.set_postfix(tokens=f"{train['total'] + train['n_pending'] + val['total'] + val['n_pending']:,}")
    bar.close()
    _flush(train)
    _flush(val)
    if train["total"] == 0:
        _clear_old_outputs(out_dir)
        raise ValueError(f"no training tokens from {files} (no documents, or val_tokens={val_tokens} took them all)")
    done = {"format": "nanoocto-shards", "train_tokens": train["total"], "val_tokens": val["total"],
            "train_shards": train["shards"], "val_shards": val["shards"], "n_docs": n_docs,
            "n_val_docs": n_val_docs, "tokenizer": {"name": tok.name, "vocab_size": tok.vocab_size,
                                                     "eos_id": tok.eos_id, "bos_id": tok.bos_id},
            "bos": bos, "inputs": files, "field": field, "template": template, "shard_tokens": shard_tokens,
            "seconds": round(time.time() - t0, 2)}
    write_atomic(done_path, json.dumps(done, indent=1) + "\n")
    return done


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Tokenize jsonl/parquet/txt corpora into token shards.")
    ap.add_argument("--input", nargs="+", required=True, help="files or globs (quote globs)")
    ap.add_argument("--tokenizer", required=True, help="tokenizer folder or file (Tokenizer.from_pretrained)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--field", default=None, help="record field holding the text (default: text)")
    ap.add_argument("--template", default=None, help="'qa' or a format string over record fields")
    ap.add_argument("--shard_tokens", type=int, default=50_000_000)
    ap.add_argument("--val_tokens", type=int, default=0, help="whole documents held out into val_*.bin")
    ap.add_argument("--bos", action="store_true", help="also put BOS before every document")
    ap.add_argument("--num_proc", type=int, default=max(1, (os.cpu_count() or 1)))
    ap.add_argument("--txt_split", choices=("file", "blank"), default="file")
    ap.add_argument("--chunk_docs", type=int, default=256, help="documents per encoding task")
    ap.add_argument("--overwrite", action="store_true", help="replace a finished shard set")
    a = ap.parse_args(argv)
    try:
        done = prepare(a.input, a.out, a.tokenizer, field=a.field, template=a.template,
                       shard_tokens=a.shard_tokens, val_tokens=a.val_tokens, bos=a.bos, num_proc=a.num_proc,
                       overwrite=a.overwrite, txt_split=a.txt_split, chunk_docs=a.chunk_docs)
    except (FileExistsError, FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"prepare: error: {e}") from None
    print(f"prepare: {done['train_tokens']:,} train + {done['val_tokens']:,} val tokens from {done['n_docs']:,} "
          f"documents in {len(done['train_shards'])} + {len(done['val_shards'])} shards -> {a.out} "
          f"({done['seconds']} s)")


if __name__ == "__main__":
    main()
