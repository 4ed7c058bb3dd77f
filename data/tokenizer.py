"""Tokenizer: one tiktoken-backed byte-level BPE for every stage.

Three sources, one class:
  * Meta's Llama 3 `tokenizer.model` (tiktoken rank file, "base64token rank" per line) + the Llama 3 specials,
  * a Hugging Face byte-level BPE `tokenizer.json`, converted to tiktoken ranks,
  * a small BPE trained here (`Tokenizer.train`) for the tiny CPU default.
`save(folder)` writes tokenizer.model + nanoocto_tokenizer.json (what `Tokenizer.from_pretrained(folder)` reloads,
exactly, as it reloads any of the three sources) and tokenizer.json + tokenizer_config.json, so a checkpoint folder
also loads with transformers' `AutoTokenizer.from_pretrained` and gives the same ids. Text is always data:
special-token text inside the input is encoded as plain text, never as a special id, so a document containing
"<|eot_id|>" cannot end a sequence early (HF's tokenizers do split it out as the special).
"""
from __future__ import annotations

import base64
import heapq
import json
import os
import re
import warnings
from collections import Counter, defaultdict
from typing import Iterable

import tiktoken

from data.files import write_atomic

RANK_FILE, JSON_FILE, HF_FILE, HF_CONFIG = "tokenizer.model", "nanoocto_tokenizer.json", "tokenizer.json", "tokenizer_config.json"
FORMAT, FORMAT_VERSION = "nanoocto-tokenizer", 1

LLAMA3_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Trained tokenizer: digits one by one, so every number is spelled with the same 10 tokens and stays learnable.
# Written with classes that mean (nearly) the same in Python's `re` (counts pieces while training) and tiktoken's
# Rust regex (splits while encoding). Together the alternatives match every character (letters, digits, `_`,
# other symbols, whitespace): tiktoken silently drops text that no alternative matches.
MATH_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+|\d| ?(?:[^\w\s]|_)+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
TRAIN_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|eot_id|>")

BOS_NAMES = ("<|begin_of_text|>", "<s>")
EOS_NAMES = ("<|end_of_text|>", "</s>", "<|endoftext|>")
PAD_NAMES = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>")
STOP_NAMES = ("<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|im_end|>", "</s>")


def llama3_special_tokens(n_base: int) -> dict[str, int]:
    """The 256 Llama 3 (3.1/3.2) specials, ids n_base.. (128000.. for Meta's 128000 ranks), as in HF's files."""
    named = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
             "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>",
             "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    names = named + [f"<|reserved_special_token_{i}|>" for i in range(3, 3 + 256 - len(named))]
    return {name: n_base + i for i, name in enumerate(names)}


class Tokenizer:
    """Byte-level BPE over a tiktoken.Encoding; special tokens are addressed by name (bos/eos/pad/stop)."""

    def __init__(self, mergeable_ranks: dict[bytes, int], pattern: str, special_tokens: dict[str, int], *,
                 name: str, bos: str | None = None, eos: str | None = None, pad: str | None = None,
                 stop: Iterable[str] | None = None):
        # tiktoken panics (not a Python error) on these, so catch them here with a readable message.
        missing = [b for b in range(256) if bytes([b]) not in mergeable_ranks]
        if missing:
            raise ValueError(f"{name}: not a byte-level BPE: {len(missing)} of the 256 bytes have no token "
                             f"(first: byte {missing[0]})")
        if len(set(mergeable_ranks.values())) != len(mergeable_ranks):
            raise ValueError(f"{name}: two tokens share a rank")
        clash = set(special_tokens.values()) & set(mergeable_ranks.values())
        if clash:
            raise ValueError(f"{name}: special token ids {sorted(clash)[:5]} are also ordinary token ids")
        if stop is None:  # eos plus every end-of-turn/end-of-message token the vocabulary has
            stop = [eos] + [s for s in STOP_NAMES if s in special_tokens]
        stop = tuple(dict.fromkeys(s for s in stop if s is not None))  # unique, order kept
        pad = pad if pad is not None else eos  # pad may equal eos: padded positions are masked anyway
        for role, tok in [("bos", bos), ("eos", eos), ("pad", pad)] + [("stop", s) for s in stop]:
            if tok is not None and tok not in special_tokens:
                raise ValueError(f"{name}: {role} token {tok!r} is not one of the special tokens")
        self.name, self.pattern = name, pattern
        self.mergeable_ranks, self._special = mergeable_ranks, dict(special_tokens)
        self.bos_token, self.eos_token, self.pad_token, self.stop_tokens = bos, eos, pad, stop
        self.encoding = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=mergeable_ranks,
                                          special_tokens=self._special)
        self._hf_text = None  # save()'s tokenizer.json text, made on first use

    # ---- ids -------------------------------------------------------------------------------------------------
    bos_id = property(lambda self: self._special.get(self.bos_token))  # None when the tokenizer has none
    eos_id = property(lambda self: self._special.get(self.eos_token))
    pad_id = property(lambda self: self._special.get(self.pad_token))

    @property
    def stop_ids(self) -> frozenset[int]:
        return frozenset(self._special[s] for s in self.stop_tokens)

    @property
    def vocab_size(self) -> int:
        """Embedding rows needed: highest id + 1, specials included."""
        return self.encoding.n_vocab

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, bos={self.bos_id}, eos={self.eos_id})"

    # ---- encode / decode -------------------------------------------------------------------------------------
    def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
        for flag, role, tid in ((bos, "bos", self.bos_id), (eos, "eos", self.eos_id)):
            if flag and tid is None:
                raise ValueError(f"{self.name}: {role}=True but this tokenizer has no {role} token")
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        # disallowed_special=() : special-token text is data, encoded like any other text.
        return self._wrap(self.encoding.encode(text, disallowed_special=()), bos, eos)

    def encode_batch(self, texts: Iterable[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
        texts = list(texts) if not isinstance(texts, str) else [None]  # a lone str is a mistake, not a batch
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("encode_batch expects a list of strings")
        batch = self.encoding.encode_batch(texts, num_threads=os.cpu_count() or 1, disallowed_special=())
        return [self._wrap(ids, bos, eos) for ids in batch]

    def decode(self, ids) -> str:
        """ids: list of ints or a 1-D tensor/array. Invalid UTF-8 (a cut multi-byte char) shows as U+FFFD."""
        if hasattr(ids, "tolist"):
            if getattr(ids, "ndim", 1) != 1:
                raise ValueError(f"decode expects a 1-D sequence of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = list(ids)
        try:
            return self.encoding.decode(ids)
        except (KeyError, OverflowError, TypeError):  # only on bad input, so the id set is built only then
            known = set(self.mergeable_ranks.values()) | set(self._special.values())
            bad = [i for i in ids if not isinstance(i, int) or i not in known]
            raise ValueError(f"{self.name}: ids {bad[:5]} are not in the vocabulary (size {self.vocab_size})") from None

    # ---- save / load -----------------------------------------------------------------------------------------
    def save(self, folder: str) -> None:
        """Write tokenizer.model (tiktoken rank file) and nanoocto_tokenizer.json, and the same tokenizer in Hugging
        Face form (tokenizer.json, tokenizer_config.json), each atomically."""
        os.makedirs(folder, exist_ok=True)
        by_rank = sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1])
        write_atomic(os.path.join(folder, RANK_FILE),
                     "".join(f"{base64.b64encode(tok).decode('ascii')} {rank}\n" for tok, rank in by_rank))
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name, "pattern": self.pattern,
                "special_tokens": self._special, "bos": self.bos_token, "eos": self.eos_token,
                "pad": self.pad_token, "stop": list(self.stop_tokens)}
        write_atomic(os.path.join(folder, JSON_FILE), json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        if self._hf_text is None:  # built once (~3 s for Llama 3's 280k merges), then reused by every checkpoint
            self._hf_text = json.dumps(self.hf_tokenizer_json(), ensure_ascii=False)
        write_atomic(os.path.join(folder, HF_FILE), self._hf_text)
        hf_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": self.bos_token,
                     "eos_token": self.eos_token, "pad_token": self.pad_token, "clean_up_tokenization_spaces": False,
                     "model_input_names": ["input_ids", "attention_mask"]}
        write_atomic(os.path.join(folder, HF_CONFIG), json.dumps(hf_config, indent=1, ensure_ascii=False) + "\n")

    def hf_tokenizer_json(self) -> dict:
        """This tokenizer as a Hugging Face tokenizer.json document (byte-level BPE, as HF ships Llama 3's).
        tiktoken merges the adjacent pair whose joined bytes have the lowest rank; HF merges the pair listed first.
        Listing every split of each token into two tokens, tokens in rank order, makes the two agree (HF's own
        tiktoken converter does the same). HF adds bos itself (the post-processor); our encode() only on request."""
        b2u = _bytes_to_unicode()
        hf = lambda bs: "".join(b2u[b] for b in bs)  # noqa: E731  bytes -> GPT-2's printable alphabet
        ranks, merges = self.mergeable_ranks, []
        for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
            splits = sorted((ranks[token[:i]], ranks[token[i:]], i) for i in range(1, len(token))
                            if token[:i] in ranks and token[i:] in ranks)
            merges += [[hf(token[:i]), hf(token[i:])] for _, _, i in splits]
        specials = sorted(self._special.items(), key=lambda kv: kv[1])
        post = None
        if self.bos_id is not None:
            bos = {"SpecialToken": {"id": self.bos_token, "type_id": 0}}
            a, b = {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}
            post = {"type": "TemplateProcessing", "single": [bos, a], "pair": [bos, a, bos, b],
                    "special_tokens": {self.bos_token: {"id": self.bos_token, "ids": [self.bos_id],
                                                        "tokens": [self.bos_token]}}}
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for c, i in specials],
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                      "vocab": {hf(b): r for b, r in ranks.items()}, "merges": merges},
        }

    @classmethod
    def from_pretrained(cls, path: str) -> Tokenizer:
        """path: a folder (ours, a Meta checkpoint, an HF snapshot) or one tokenizer file (dispatched on content)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            for fname in (JSON_FILE, RANK_FILE, HF_FILE):
                if os.path.isfile(os.path.join(path, fname)):
                    return _load_file(os.path.join(path, fname))
            raise FileNotFoundError(f"no tokenizer in folder {path!r}: looked for {JSON_FILE}, {RANK_FILE}, {HF_FILE}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file or folder not found: {path!r}")
        return _load_file(path)

    # ---- training --------------------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512, *, pattern: str = MATH_PATTERN,
              name: str = "nanoocto-bpe") -> Tokenizer:
        """Byte-level BPE: 256 byte tokens + learned merges + TRAIN_SPECIALS; vocab_size counts all of them.
        Deterministic: the most frequent pair wins, ties go to the smallest (left id, right id)."""
        n_merges = vocab_size - 256 - len(TRAIN_SPECIALS)
        if n_merges < 0:
            raise ValueError(f"vocab_size={vocab_size} is below 256 bytes + {len(TRAIN_SPECIALS)} specials")
        if isinstance(texts, str):
            raise TypeError("train expects an iterable of texts, not one str (wrap it in a list)")
        splitter = re.compile(pattern)  # pattern must hold no capturing groups, else findall returns groups
        pieces: Counter[str] = Counter()
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"train expects strings, got {type(text).__name__}")
            pieces.update(splitter.findall(text))
        vocab = _learn_merges(pieces, n_merges)
        specials = {s: len(vocab) + i for i, s in enumerate(TRAIN_SPECIALS)}
        return cls({tok: i for i, tok in enumerate(vocab)}, pattern, specials, name=name,
                   bos="<|begin_of_text|>", eos="<|end_of_text|>", pad="<|pad|>")


def _merge_word(word: list[int], a: int, b: int, new: int) -> list[int]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _learn_merges(pieces: Counter[str], n_merges: int) -> list[bytes]:
    """Return the vocabulary (id -> bytes): 256 single bytes, then one token per merge, in merge order.
    Works on distinct pre-tokens weighted by frequency and updates pair counts only for the words a merge
    touches, so a few MB of text trains in seconds."""
    vocab = [bytes([b]) for b in range(256)]
    index = {tok: i for i, tok in enumerate(vocab)}
    words = [list(p.encode("utf-8")) for p in pieces]
    freqs = list(pieces.values())
    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words that (may) contain it
    for wi, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_count[pair] += freqs[wi]
            where[pair].add(wi)
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]  # lazy max-heap: stale entries skipped on pop
    heapq.heapify(heap)
    learned = 0
    while learned < n_merges:
        while heap:
            negc, a, b = heapq.heappop(heap)
            if pair_count.get((a, b), 0) == -negc:
                break
        else:
            raise ValueError(f"the training text only supports {learned} merges but vocab_size needs {n_merges}: "
                             "give more text or a smaller vocab_size")
        merged = vocab[a] + vocab[b]
        new = index.get(merged)
        if new is None:  # the same bytes can rarely arise from two different pairs; keep one token for them
            new, learned = len(vocab), learned + 1
            vocab.append(merged)
            index[merged] = new
        changed = set()
        for wi in where.pop((a, b)):
            word, f = words[wi], freqs[wi]
            new_word = _merge_word(word, a, b, new)
            if len(new_word) == len(word):
                continue  # stale index entry: an earlier merge already consumed this pair here
            for pair in zip(word, word[1:]):
                pair_count[pair] -= f
                changed.add(pair)
            for pair in zip(new_word, new_word[1:]):
                pair_count[pair] += f
                changed.add(pair)
                where[pair].add(wi)
            words[wi] = new_word
        for pair in changed:
            if pair_count[pair] > 0:
                heapq.heappush(heap, (-pair_count[pair], *pair))
            else:
                del pair_count[pair]
    return vocab


# ---- file formats --------------------------------------------------------------------------------------------
def _load_file(path: str) -> Tokenizer:
    with open(path, "rb") as f:
        raw = f.read()
    if raw.lstrip()[:1] == b"{":
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: corrupt JSON ({e})") from None
        if isinstance(doc, dict) and doc.get("format") == FORMAT:
            return _load_nanoocto(path, doc)
        if isinstance(doc, dict) and isinstance(doc.get("model"), dict):
            return _load_hf(path, doc)
        raise ValueError(f"{path}: JSON, but neither a {JSON_FILE} nor a Hugging Face {HF_FILE}")
    ranks = _parse_rank_file(path, raw)  # alone, a rank file is Meta's Llama 3 tokenizer.model
    return Tokenizer(ranks, LLAMA3_PATTERN, llama3_special_tokens(max(ranks.values()) + 1), name="llama3",
                     bos="<|begin_of_text|>", eos="<|end_of_text|>", pad="<|finetune_right_pad_id|>")


def _parse_rank_file(path: str, raw: bytes) -> dict[bytes, int]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: binary, not a tiktoken rank file (a SentencePiece model? only byte-level "
                         "BPE tokenizers are supported)") from None
    ranks, n_lines = {}, 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            ranks[base64.b64decode(parts[0], validate=True)] = int(parts[1])
        except ValueError:  # binascii.Error is a ValueError too
            raise ValueError(f"{path}: line {n} is not 'base64token rank': {line[:60]!r}") from None
        n_lines += 1
    if not ranks:
        raise ValueError(f"{path}: empty tokenizer rank file")
    if len(ranks) != n_lines:
        raise ValueError(f"{path}: the same token appears on more than one line")
    return ranks


def _load_nanoocto(path: str, doc: dict) -> Tokenizer:
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {doc.get('version')!r}, this code reads {FORMAT_VERSION}")
    rank_path = os.path.join(os.path.dirname(path), RANK_FILE)
    if not os.path.isfile(rank_path):
        raise FileNotFoundError(f"{path} needs {RANK_FILE} beside it: {rank_path!r} not found")
    with open(rank_path, "rb") as f:
        ranks = _parse_rank_file(rank_path, f.read())
    try:
        return Tokenizer(ranks, doc["pattern"], doc["special_tokens"], name=doc["name"], bos=doc["bos"],
                         eos=doc["eos"], pad=doc["pad"], stop=doc["stop"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: missing or malformed field {e}") from None


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the other 68 map to chr(256+n)."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    table, shifted = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b], shifted = chr(256 + shifted), shifted + 1
    return table


def _hf_pattern(path: str, pre: dict | None) -> str:
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre] if pre else []
    pattern, gpt2_regex = None, False
    for step in steps:
        kind = step.get("type")
        if kind == "Split":
            regex = (step.get("pattern") or {}).get("Regex")
            if regex is None or step.get("invert") or step.get("behavior", "Isolated") != "Isolated" or pattern:
                raise ValueError(f"{path}: unsupported Split pre-tokenizer {step}")
            pattern = regex
        elif kind == "ByteLevel":
            if step.get("add_prefix_space"):
                raise ValueError(f"{path}: ByteLevel add_prefix_space=true is not supported")
            gpt2_regex = step.get("use_regex", True)
        else:
            raise ValueError(f"{path}: unsupported pre-tokenizer {kind!r}")
    if pattern and gpt2_regex:
        raise ValueError(f"{path}: a Split regex followed by ByteLevel's own regex is not supported")
    return pattern or (GPT2_PATTERN if gpt2_regex else LLAMA3_PATTERN)


def _load_hf(path: str, doc: dict) -> Tokenizer:
    model = doc["model"]
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{path}: model type {model.get('type')!r}; only byte-level BPE is supported")
    vocab: dict[str, int] = model["vocab"]
    added = {t["content"]: int(t["id"]) for t in doc.get("added_tokens") or []}
    added_ids = set(added.values())
    to_byte = {c: b for b, c in _bytes_to_unicode().items()}
    ranks = {}
    for tok, i in vocab.items():
        if i in added_ids:
            continue  # e.g. GPT-2 lists <|endoftext|> in the vocab too; it is a special here
        try:
            ranks[bytes(to_byte[c] for c in tok)] = i
        except KeyError:
            raise ValueError(f"{path}: vocab token {tok!r} is not in GPT-2 byte-level form") from None
    # tiktoken merges the adjacent pair whose result has the lowest id, HF the pair listed first: they agree
    # only when the merge list is in result-id order.
    last = -1
    for m in model.get("merges") or []:
        parts = m.split(" ") if isinstance(m, str) else list(m)
        result = vocab.get("".join(parts)) if len(parts) == 2 and all(p in vocab for p in parts) else None
        if result is None:
            raise ValueError(f"{path}: merge {m!r} does not join two vocab tokens into a vocab token")
        if result < last:
            raise ValueError(f"{path}: merges are not in vocab-id order (at {m!r}); ids would differ from HF's")
        last = result
    if doc.get("normalizer"):
        warnings.warn(f"{path}: normalizer {doc['normalizer'].get('type')!r} is ignored")
    config_path = os.path.join(os.path.dirname(path), HF_CONFIG)
    config = {}
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{config_path}: corrupt JSON ({e})") from None

    def role(key: str, names: tuple[str, ...]) -> str | None:
        if key in config:  # a string, {"content": ...} or null
            value = config[key]
            return value.get("content") if isinstance(value, dict) else value
        return next((n for n in names if n in added), None)

    eos = role("eos_token", EOS_NAMES)
    return Tokenizer(ranks, _hf_pattern(path, doc.get("pre_tokenizer")), added, name="hf",
                     bos=role("bos_token", BOS_NAMES), eos=eos, pad=role("pad_token", PAD_NAMES) or eos)
