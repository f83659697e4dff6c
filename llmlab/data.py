"""Data: any corpus -> token ids -> memmapped ``train.bin`` / ``val.bin`` -> random training batches.

The pipeline, in the order it runs::

    source (embedded Shakespeare | local .txt/.jsonl/.parquet file or folder | a Hugging Face hub dataset)
      -> datasets.Dataset with one document per row ("text")
      -> datasets.map(batched=True, num_proc=N): token ids, <|endoftext|> after each document
      -> train / val split (by document, seeded; or "tail": the last part of the joined text)
      -> train.bin, val.bin (uint16 when the vocabulary fits, else uint32), tokenizer.json, meta.json

The manual's three calls do it step by step (defaults: embedded corpus, GPT-2 BPE, no network)::

    tokenized, tokenizer = load_and_process_dataset()
    save_processed_dataset(tokenized)
    create_memmap_files(tokenized)          # -> data/shakespeare_gpt2/{train,val}.bin, meta.json

:func:`prepare` does the same in one call (``llmlab prepare``), and reuses finished outputs made from the
same source and tokenizer. :class:`TokenBatches` samples random windows from the memmaps for training.

Memory stays bounded however large the corpus: long documents are tokenized in pieces, token ids live in
memory-mapped Arrow files, and the ``.bin`` files are written chunk by chunk. Outputs are written under
temporary names and renamed at the end, ``meta.json`` last, so an interrupted run never leaves a
``train.bin`` that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmlab.corpus import ASSET_PATH, JOIN, shakespeare
from llmlab.tokenizers import Tokenizer, get_tokenizer, load_tokenizer, tokenizer_from_dict

if TYPE_CHECKING:  # imported where used: preparing needs no torch, batching needs no datasets (both slow to import)
    import datasets
    import torch

__all__ = [
    "FORMAT_VERSION",
    "OPENWEBTEXT_REPO",
    "SourceUnavailableError",
    "default_data_dir",
    "resolve_source",
    "check_utf8",
    "load_source",
    "load_and_process_dataset",
    "save_processed_dataset",
    "create_memmap_files",
    "prepare",
    "load_meta",
    "load_tokenizer_for",
    "check_compatible",
    "TokenBatches",
]

FORMAT_VERSION = 1
SHAKESPEARE = "shakespeare"
# The original "openwebtext" / "Skylion007/openwebtext" repository is a loading *script*, which
# datasets >= 4 no longer runs. source="openwebtext" reads this parquet copy instead (a "text" column; the one
# public projects load with datasets 4). Any other hub dataset with a "text" column: source="hf:OWNER/NAME"
# or "hf:OWNER/NAME@REVISION" (e.g. "hf:Skylion007/openwebtext@refs/convert/parquet", the hub's own export).
OPENWEBTEXT_REPO = "vietgpt/openwebtext_en"
HUB_PREFIX = "hf:"
HUB_TIMEOUT_S = 10.0  # a hub probe that takes longer than this is treated as "offline"
LOADERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}  # suffix -> datasets builder
SPLITS = ("documents", "tail")
DEFAULT_SEED = 2357  # seed of the train/val document split
PIECE_CHARS = 1 << 20  # long texts are tokenized in pieces of about this many characters (bounded memory)
BPE_SAMPLE_CHARS = 1 << 20  # tokenizer="bpe" on a user corpus trains on its first million characters
MAP_BATCH_DOCS = 256  # documents per datasets.map batch
WRITE_BATCH_DOCS = 1024  # documents per chunk written to the .bin files
BIN_FILES = ("train.bin", "val.bin")


class SourceUnavailableError(ConnectionError, ValueError):
    """A hub dataset cannot be reached (offline, no network, hub down). The message says what to do.

    Also a ValueError: the source asked for cannot be used here, so callers that report bad input as one
    line (the CLI) report this the same way."""


# --------------------------------------------------------------------------------------------------------
# Sources: what to read
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A resolved corpus source."""

    kind: str  # "shakespeare" | "files" | "hub"
    name: str  # short name for default folders: data/<name>_<tokenizer>
    spec: str  # how meta.json records it
    files: tuple[Path, ...] = ()
    loader: str = ""  # datasets builder for files: "text" | "json" | "parquet"
    repo_id: str = ""
    revision: str | None = None

    def fingerprint(self) -> str:
        """Changes when the source's content may have changed (file sizes and modification times)."""
        h = hashlib.sha256(f"{self.kind}|{self.spec}|{self.revision}".encode())
        if self.kind == SHAKESPEARE:
            h.update(ASSET_PATH.read_bytes())
        for f in self.files:
            st = f.stat()
            h.update(f"|{f}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()


def _short_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "corpus"


def resolve_source(source: str | os.PathLike[str] | Source | None) -> Source:
    """Turn ``source`` into a :class:`Source`.

    ``None`` or ``"shakespeare"``: the embedded corpus. ``"openwebtext"``: OpenWebText from the hub
    (:data:`OPENWEBTEXT_REPO`). ``"hf:OWNER/NAME[@REVISION]"``: any hub dataset with a "text" column.
    Anything else is a local ``.txt`` / ``.jsonl`` / ``.json`` / ``.parquet`` file or a folder of them
    (write ``./shakespeare`` for a local folder of that name).
    """
    if isinstance(source, Source):
        return source
    if source is None or source == SHAKESPEARE:
        return Source(kind=SHAKESPEARE, name=SHAKESPEARE, spec=SHAKESPEARE)
    if isinstance(source, str) and (source == "openwebtext" or source.startswith(HUB_PREFIX)):
        spec = f"{HUB_PREFIX}{OPENWEBTEXT_REPO}" if source == "openwebtext" else source
        repo_id, _, revision = spec[len(HUB_PREFIX):].partition("@")
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(f"source {source!r}: a hub dataset is written hf:OWNER/NAME (or hf:OWNER/NAME@REVISION),"
                             f" e.g. hf:{OPENWEBTEXT_REPO}")
        name = "openwebtext" if source == "openwebtext" else _short_name(repo_id.split("/")[1])
        return Source(kind="hub", name=name, spec=spec, repo_id=repo_id, revision=revision or None)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"source {str(source)!r} is neither an existing file or folder nor a known dataset; use a path to "
            f"a .txt/.jsonl/.parquet file or folder, 'shakespeare' (embedded), 'openwebtext' or hf:OWNER/NAME"
        )
    files = _corpus_files(path)
    return Source(kind="files", name=_short_name(path.stem if path.is_file() else path.resolve().name),
                  spec=str(path.resolve()), files=files, loader=LOADERS[files[0].suffix.lower()])


def _corpus_files(path: Path) -> tuple[Path, ...]:
    """The corpus files at ``path`` (a file, or every supported file under a folder, sorted); one kind only."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOADERS
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise FileNotFoundError(f"no corpus files in folder {path}: expected .txt, .jsonl, .json or .parquet files")
    if files[0].suffix.lower() not in LOADERS:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .txt (one document per file), "
                         f".jsonl/.json or .parquet (a 'text' field per document)")
    kinds = {LOADERS[f.suffix.lower()] for f in files}
    if len(kinds) > 1:
        raise ValueError(f"folder {path} mixes file types ({', '.join(sorted(kinds))}); put one kind of file "
                         f"in the folder, or prepare each kind separately")
    return tuple(f.resolve() for f in files)


def default_data_dir(source: str | os.PathLike[str] | Source | None = None,
                     tokenizer: str | Tokenizer = "char") -> Path:
    """Where ``llmlab prepare`` writes by default: ``data/<source-name>_<tokenizer>``, e.g. data/shakespeare_char."""
    name = tokenizer if isinstance(tokenizer, str) else tokenizer.name
    return Path("data") / f"{resolve_source(source).name}_{name}"


def check_utf8(path: str | Path, chunk_bytes: int = 1 << 24) -> None:
    """Raise ValueError naming the file and the byte offset of the first byte that is not valid UTF-8.

    Policy: text must be valid UTF-8; nothing is silently replaced (a replaced character would change the
    text that bits-per-byte is measured on).
    """
    path = Path(path)
    offset, carry = 0, b""  # carry: the start of a character cut by the chunk boundary
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            data = carry + chunk
            try:
                data.decode("utf-8")
                offset, carry = offset + len(data), b""
            except UnicodeDecodeError as e:  # e.start: the first bad byte; everything before it is valid
                if e.reason != "unexpected end of data" or e.end != len(data):
                    _not_utf8(path, offset + e.start, data[e.start: e.start + 1])
                offset, carry = offset + e.start, data[e.start:]
    if carry:
        _not_utf8(path, offset, carry)


def _not_utf8(path: Path, offset: int, bad: bytes) -> None:
    raise ValueError(
        f"{path} is not valid UTF-8: byte {bad[:1].hex()} at byte offset {offset}; convert the file to UTF-8 "
        f"(e.g. iconv -f latin1 -t utf-8 {path.name} > fixed.txt) and prepare again"
    )


def load_source(source: str | os.PathLike[str] | Source | None = None,
                cache_dir: str | os.PathLike[str] | None = None, num_proc: int = 1) -> datasets.Dataset:
    """Load a source as a ``datasets.Dataset`` with one column, ``text`` (one document per row).

    ``.txt`` files are one document each (``sample_by="document"``; line endings become LF);
    ``.jsonl``/``.json``/``.parquet`` rows need a ``text`` field. ``cache_dir``: where ``datasets`` keeps
    its Arrow copy (default: its own cache, ~/.cache/huggingface/datasets). ``num_proc`` processes download
    and convert the files of a many-file source.
    """
    src = resolve_source(source)
    if src.kind == SHAKESPEARE:
        return shakespeare().select_columns(["text"])
    import datasets

    cache = None if cache_dir is None else str(cache_dir)
    if src.kind == "hub":
        ds = _load_hub(src, cache, num_proc)
        where = f"hub dataset {src.repo_id}"
    else:
        if src.loader == "text":
            for f in src.files:
                check_utf8(f)
        kwargs = {"sample_by": "document"} if src.loader == "text" else {}
        procs = min(num_proc, len(src.files))  # datasets parallelizes over files
        try:
            ds = datasets.load_dataset(src.loader, data_files=[str(f) for f in src.files], split="train",
                                       cache_dir=cache, num_proc=procs if procs > 1 else None, **kwargs)
        except datasets.exceptions.DatasetGenerationError as e:
            cause = e.__cause__ or e
            raise ValueError(f"could not read {src.spec} as {src.loader} ({type(cause).__name__}: {cause}); "
                             f"check the file format: .jsonl needs one JSON object per line") from None
        where = src.spec
    if "text" not in ds.column_names:
        raise ValueError(f"{where} has no 'text' column (columns: {', '.join(ds.column_names)}); "
                         f"put each document's text in a field named 'text'")
    if ds.features["text"] != datasets.Value("string") and ds.features["text"] != datasets.Value("large_string"):
        raise ValueError(f"{where}: column 'text' holds {ds.features['text']}, not strings; store text in it")
    return ds.select_columns(["text"])


def _hub_offline_reason() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return f"offline mode is on ({var}={os.environ[var]})"
    return None


def _hub_unavailable(src: Source, cause: str) -> SourceUnavailableError:
    return SourceUnavailableError(
        f"cannot download the Hugging Face dataset {src.repo_id!r} ({cause}). Without network, prepare a local "
        f"corpus instead: llmlab prepare --source path/to/corpus (a .txt/.jsonl/.parquet file or folder), "
        f"or the embedded one: llmlab prepare --source shakespeare"
    )


def _load_hub(src: Source, cache_dir: str | None, num_proc: int = 1) -> datasets.Dataset:
    """Load a hub dataset's train split, failing within seconds (not a hang) when the hub is unreachable."""
    import datasets
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    reason = _hub_offline_reason()
    if reason:
        raise _hub_unavailable(src, reason)
    try:  # a quick probe with a short timeout: load_dataset itself retries for minutes when offline
        HfApi().dataset_info(src.repo_id, revision=src.revision, timeout=HUB_TIMEOUT_S)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ValueError(f"no dataset {src.repo_id!r} (revision {src.revision or 'main'}) on the Hugging Face hub; "
                         f"check the name, e.g. source='hf:{OPENWEBTEXT_REPO}'") from None
    except Exception as e:  # noqa: BLE001 - any transport error means "unreachable"; say why, no traceback
        raise _hub_unavailable(src, f"{type(e).__name__}: {e}") from None
    try:
        return datasets.load_dataset(src.repo_id, split="train", revision=src.revision, cache_dir=cache_dir,
                                     num_proc=num_proc if num_proc > 1 else None)
    except (ConnectionError, TimeoutError, OSError) as e:
        raise _hub_unavailable(src, f"{type(e).__name__}: {e}") from None


# --------------------------------------------------------------------------------------------------------
# Tokenizing
# --------------------------------------------------------------------------------------------------------


def _dtype_for(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size={vocab_size:,} is too large for the token files: ids are stored as uint32 "
                     f"(at most 4,294,967,296 tokens); use a smaller vocabulary")


# A piece boundary is safe where whitespace follows a non-space character: no pre-tokenizer pattern of GPT-2
# style (words, numbers, punctuation runs, whitespace runs) has a match that spans such a point, so
# tokenizing the pieces one by one gives exactly the tokens of the whole text.
_SAFE_CUT = re.compile(r"\S(?=\s)")


def _pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` cut at safe boundaries into pieces of about ``size`` characters (or more, if no boundary)."""
    start = 0
    while len(text) - start > size:
        m = _SAFE_CUT.search(text, start + size - 1)
        if m is None:
            break
        yield text[start: m.end()]
        start = m.end()
    yield text[start:]


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


_WORKER_TOKENIZERS: dict[str, Tokenizer] = {}  # fingerprint -> tokenizer; forked map workers inherit it


class _TokenizerRef:
    """Stands for a tokenizer in datasets.map's arguments. datasets pickles those arguments with dill for
    every worker, which takes a second for GPT-2's 50k-entry vocabulary; this pickles as a few hundred bytes.
    Forked workers find the tokenizer in the registry they inherited; others rebuild it from its definition."""

    def __init__(self, tokenizer: Tokenizer):
        self.fingerprint = tokenizer.fingerprint
        _WORKER_TOKENIZERS[self.fingerprint] = tokenizer
        rebuildable = tokenizer.name in ("char", "bpe", "gpt2")
        self.definition = tokenizer.to_dict() if rebuildable else None
        self.tokenizer = None if rebuildable else tokenizer  # anything else travels as itself

    def get(self) -> Tokenizer:
        tok = self.tokenizer or _WORKER_TOKENIZERS.get(self.fingerprint)
        if tok is None:
            tok = _WORKER_TOKENIZERS[self.fingerprint] = tokenizer_from_dict(self.definition)
        return tok


def _tokenize_batch(batch: dict[str, list], indices: list[int], *, tokenizer: _TokenizerRef, dtype: np.dtype,
                    append_eot: bool, val_mask: np.ndarray | None, piece_chars: int) -> Any:
    """datasets.map function: documents -> {"ids": list of token ids (+ EOT), "n_tokens", "n_bytes", "is_val"}.

    Long documents are encoded in pieces and ids go to numpy at once, so that at most ~piece_chars of
    text is ever held as Python int lists (28 bytes per token) — that is what bounds memory.
    """
    import pyarrow as pa

    tokenizer = tokenizer.get()
    keep = [i for i, t in enumerate(batch["text"]) if t]  # an empty document has no text to learn from
    texts = [batch["text"][i] for i in keep]
    pieces = [(d, p) for d, t in enumerate(texts) for p in _pieces(t, piece_chars)]  # (document, piece)
    n_tokens = np.zeros(len(texts), dtype=np.int64)
    arrays = []
    start = 0
    while start < len(pieces):  # groups of pieces holding about piece_chars characters
        end, chars = start, 0
        while end < len(pieces) and (end == start or chars + len(pieces[end][1]) <= piece_chars):
            chars += len(pieces[end][1])
            end += 1
        group = pieces[start:end]
        encoded = tokenizer.encode_batch([p for _, p in group])
        for k, ((d, _), ids) in enumerate(zip(group, encoded)):
            last_piece = start + k + 1 == len(pieces) or pieces[start + k + 1][0] != d
            if append_eot and last_piece:
                ids.append(tokenizer.eot_token)
            n_tokens[d] += len(ids)
        total = sum(len(ids) for ids in encoded)
        arrays.append(np.fromiter(chain.from_iterable(encoded), dtype=dtype, count=total))
        start = end
    values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(n_tokens, out=offsets[1:])
    if val_mask is None:  # the tail split marked each piece already
        is_val = [batch["is_val"][i] for i in keep]
    else:
        is_val = val_mask[np.asarray(indices, dtype=np.int64)[keep]] if keep else np.zeros(0, dtype=bool)
    return pa.table({
        "ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)),
        "n_tokens": pa.array(n_tokens),
        "n_bytes": pa.array([_utf8_len(t) for t in texts], type=pa.int64()),
        "is_val": pa.array(is_val, type=pa.bool_()),
    })


def _text_lengths(ds: datasets.Dataset) -> np.ndarray:
    """Characters per document, from Arrow without building Python strings."""
    import pyarrow.compute as pc

    column = ds.with_format("arrow", columns=["text"])
    parts = [pc.utf8_length(t.column("text")).to_numpy(zero_copy_only=False) for t in column.iter(batch_size=1 << 16)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _document_val_mask(lengths: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """A seeded choice of round(val_fraction * documents) non-empty documents for val."""
    nonempty = np.flatnonzero(lengths > 0)
    n_val = round(len(nonempty) * val_fraction)
    if n_val == 0 or n_val == len(nonempty):
        side = "val" if n_val == 0 else "train"
        raise ValueError(
            f"val_fraction={val_fraction} of {len(nonempty)} document(s) leaves {side} empty with split='documents'; "
            f"use split='tail' (CLI: --split tail) to hold out the last part of the text, or give more documents"
        )
    chosen = nonempty[np.random.default_rng(seed).permutation(len(nonempty))[:n_val]]
    mask = np.zeros(len(lengths), dtype=bool)
    mask[chosen] = True
    return mask


def _tail_pieces(ds: datasets.Dataset, cut: int, piece_chars: int) -> Iterator[dict[str, Any]]:
    """The documents joined with a blank line (the nanoGPT reference text), cut at character ``cut`` into
    train | val, in pieces that end at safe boundaries: tokenizing them equals tokenizing each side whole."""
    buf, pos, is_val = "", 0, cut <= 0  # buf starts at character `pos` of the joined text
    texts = (t for batch in ds.iter(batch_size=64) for t in batch["text"])
    for i, text in enumerate(texts):
        buf += text if i == 0 else JOIN + text
        if not is_val and pos + len(buf) >= cut:  # the train | val cut is inside buf: cut exactly there
            k = cut - pos
            for piece in _pieces(buf[:k], piece_chars):
                yield {"text": piece, "is_val": False}
            buf, pos, is_val = buf[k:], cut, True
        if len(buf) > 2 * piece_chars:  # emit all but the text after the last safe boundary
            last = max((m.end() for m in _SAFE_CUT.finditer(buf, len(buf) - piece_chars)), default=None)
            if last is not None:
                for piece in _pieces(buf[:last], piece_chars):
                    yield {"text": piece, "is_val": is_val}
                buf, pos = buf[last:], pos + last
    for piece in _pieces(buf, piece_chars):
        yield {"text": piece, "is_val": is_val}


def _train_texts(ds: datasets.Dataset, val_mask: np.ndarray | None) -> Iterator[str]:
    """The texts of the training part only: ``val_mask`` marks val documents, else the rows' ``is_val`` flags
    (the tail split's pieces)."""
    index = 0
    for batch in ds.iter(batch_size=64):
        flags = batch["is_val"] if val_mask is None else val_mask[index:index + len(batch["text"])]
        index += len(batch["text"])
        yield from (text for text, is_val in zip(batch["text"], flags) if not is_val)


def _resolve_tokenizer(tokenizer: str | Tokenizer, src: Source, ds: datasets.Dataset, split: str,
                       train_texts: Iterator[str]) -> Tokenizer:
    """A Tokenizer for this corpus: "char" from the corpus's own characters, "bpe" trained on the training
    part only (its first million characters; all of it for the embedded corpus) so that the held-out text
    never shapes the vocabulary it is measured with, "gpt2" as is, or the instance given."""
    if not isinstance(tokenizer, str):
        return tokenizer
    if tokenizer == "gpt2" or (src.kind == SHAKESPEARE and tokenizer == "char"):
        return get_tokenizer(tokenizer)
    if tokenizer == "char":
        # Every character must be encodable, val included: the vocabulary is the whole corpus's characters.
        chars: set[str] = {"\n"} if split == "tail" else set()  # the tail split joins documents with "\n\n"
        for batch in ds.iter(batch_size=256):
            for text in batch["text"]:
                chars.update(text)
        if not chars:
            raise ValueError(f"the corpus {src.spec} is empty: no text to build a character vocabulary from")
        return get_tokenizer("char", text="".join(sorted(chars)))
    if tokenizer == "bpe":
        limit = None if src.kind == SHAKESPEARE else BPE_SAMPLE_CHARS
        sample, n = [], 0
        for text in train_texts:
            sample.append(text if limit is None else text[: limit - n])
            n += len(sample[-1])
            if limit is not None and n >= limit:
                break
        # The tail split's pieces are consecutive slices of the joined text; documents need the join.
        return get_tokenizer("bpe", text=("" if split == "tail" else JOIN).join(sample))
    return get_tokenizer(tokenizer)  # raises with the list of valid names


def _check_split_args(split: str, val_fraction: float, num_proc: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not valid; use 'documents' (seeded choice of whole documents) "
                         f"or 'tail' (the last val_fraction of the joined text, as nanoGPT)")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} is not valid: it must be strictly between 0 and 1 "
                         f"(val would be empty or take everything), e.g. 0.1")
    if isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc={num_proc!r} is not valid: use a whole number >= 1 (processes for tokenizing)")


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Switch datasets' progress bars on or off for the duration, then restore them."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    if enabled:
        datasets.enable_progress_bars()
    else:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.disable_progress_bars() if was_disabled else datasets.enable_progress_bars()


def load_and_process_dataset(
    source: str | os.PathLike[str] | None = None,
    tokenizer: str | Tokenizer = "gpt2",
    num_proc: int = 1,
    *,
    val_fraction: float = 0.1,
    split: str = "documents",
    seed: int = DEFAULT_SEED,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    _tokens_file: str | os.PathLike[str] | None = None,
    _piece_chars: int = PIECE_CHARS,
) -> tuple[datasets.DatasetDict, Tokenizer]:
    """Load ``source`` and tokenize it with ``num_proc`` processes: ``(tokenized, tokenizer)``.

    ``tokenized`` is a ``DatasetDict`` with ``train`` and ``val``; each row holds one document's ``ids``
    (ending with EOT), ``n_tokens`` and ``n_bytes`` (UTF-8 bytes of its text). ``split="documents"`` puts a
    seeded ``val_fraction`` of the documents in val; ``split="tail"`` joins the documents with a blank line
    and holds out the last ``val_fraction`` of the characters (nanoGPT's split, no EOT). Empty documents
    are skipped. Defaults: the embedded Shakespeare corpus and GPT-2 BPE, as in the manual.
    """
    _check_split_args(split, val_fraction, num_proc)
    with _progress_bars(progress):
        return _load_and_process(resolve_source(source), tokenizer, num_proc, val_fraction, split, seed,
                                 cache_dir, _tokens_file, _piece_chars)


def _load_and_process(src: Source, tokenizer: str | Tokenizer, num_proc: int, val_fraction: float, split: str,
                      seed: int, cache_dir: str | os.PathLike[str] | None, tokens_file: str | os.PathLike[str] | None,
                      piece_chars: int) -> tuple[datasets.DatasetDict, Tokenizer]:
    import datasets

    raw = load_source(src, cache_dir=cache_dir, num_proc=num_proc)
    lengths = _text_lengths(raw)
    if not lengths.any():
        raise ValueError(f"the corpus {src.spec} is empty ({len(raw)} documents, no text); give a source with text")
    val_mask = None
    if split == "documents":
        val_mask = _document_val_mask(lengths, val_fraction, seed)
    else:
        total = int(lengths.sum()) + len(JOIN) * (len(lengths) - 1)
        cut = int(total * (1 - val_fraction))  # nanoGPT: data[:int(n * 0.9)]
        if cut == 0 or cut == total:
            raise ValueError(f"val_fraction={val_fraction} of {total} characters leaves "
                             f"{'train' if cut == 0 else 'val'} empty; use a val_fraction that keeps text on both "
                             f"sides")
        fp = hashlib.sha256(f"{raw._fingerprint}|{cut}|{piece_chars}".encode()).hexdigest()[:16]
        raw = datasets.Dataset.from_generator(
            _tail_pieces, gen_kwargs={"ds": raw, "cut": cut, "piece_chars": piece_chars},
            features=datasets.Features({"text": datasets.Value("string"), "is_val": datasets.Value("bool")}),
            cache_dir=None if cache_dir is None else str(cache_dir), fingerprint=fp,
        )

    tok = _resolve_tokenizer(tokenizer, src, raw, split, _train_texts(raw, val_mask))
    dtype = _dtype_for(tok.vocab_size)

    # Our own fingerprint: datasets would otherwise hash the tokenizer (slow) to name its cache file.
    fingerprint = hashlib.sha256("|".join(map(str, [
        raw._fingerprint, tok.fingerprint, split, val_fraction, seed, piece_chars, FORMAT_VERSION, "v1"])).encode()
    ).hexdigest()[:32]
    tokenized = raw.map(
        _tokenize_batch, batched=True, batch_size=MAP_BATCH_DOCS, with_indices=True,
        num_proc=num_proc if num_proc > 1 else None, remove_columns=raw.column_names,
        fn_kwargs={"tokenizer": _TokenizerRef(tok), "dtype": dtype, "append_eot": split == "documents",
                   "val_mask": val_mask, "piece_chars": piece_chars},
        new_fingerprint=fingerprint, cache_file_name=None if tokens_file is None else str(tokens_file),
        writer_batch_size=MAP_BATCH_DOCS, desc=f"tokenizing documents with {tok.name}",
    )
    is_val = tokenized.with_format("arrow", columns=["is_val"])[:]["is_val"].to_numpy(zero_copy_only=False)
    info = {
        "format_version": FORMAT_VERSION, "source": src.spec, "source_name": src.name,
        "source_fingerprint": src.fingerprint(), "tokenizer": tok.to_dict(), "tokenizer_name": tok.name,
        "fingerprint": tok.fingerprint, "vocab_size": tok.vocab_size, "eot_token": tok.eot_token,
        "dtype": dtype.name, "split": split, "val_fraction": val_fraction, "seed": seed,
    }
    parts = {}
    for name, rows in (("train", np.flatnonzero(~is_val)), ("val", np.flatnonzero(is_val))):
        part = tokenized.select(rows) if len(rows) < len(tokenized) else tokenized
        part.info.description = json.dumps({"llmlab": info})
        parts[name] = part
    return datasets.DatasetDict(parts), tok


def _pipeline_info(tokenized: datasets.DatasetDict) -> dict[str, Any]:
    """The llmlab metadata that load_and_process_dataset attached to the tokenized dataset."""
    try:
        if set(tokenized) != {"train", "val"}:
            raise KeyError
        info = json.loads(tokenized["train"].info.description)["llmlab"]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValueError("this is not a dataset made by load_and_process_dataset (no train/val splits with llmlab "
                         "metadata); make it with: tokenized, _ = load_and_process_dataset(...)") from None
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"tokenized dataset format_version {info.get('format_version')!r} is not {FORMAT_VERSION}; "
                         f"tokenize again with this llmlab version")
    return info


def _default_out(info: Mapping[str, Any]) -> Path:
    return Path("data") / f"{info['source_name']}_{info['tokenizer_name']}"


def save_processed_dataset(tokenized: datasets.DatasetDict, path: str | os.PathLike[str] | None = None) -> Path:
    """Save the tokenized dataset (``datasets.save_to_disk``; reload with ``datasets.load_from_disk``).

    Default path: ``data/<source>_<tokenizer>/tokenized``. Returns the path.
    """
    info = _pipeline_info(tokenized)
    path = Path(path) if path is not None else _default_out(info) / "tokenized"
    tokenized.save_to_disk(str(path))
    return path


# --------------------------------------------------------------------------------------------------------
# Writing train.bin / val.bin / tokenizer.json / meta.json
# --------------------------------------------------------------------------------------------------------


def _column_sum(ds: datasets.Dataset, column: str) -> int:
    import pyarrow.compute as pc

    return sum(int(pc.sum(t.column(column)).as_py() or 0)
               for t in ds.with_format("arrow", columns=[column]).iter(batch_size=1 << 16))


def _write_bin(ds: datasets.Dataset, path: Path, dtype: np.dtype, vocab_size: int, bar: Any) -> int:
    """Stream the ids of ``ds`` into ``path`` chunk by chunk; returns the number of tokens written."""
    n = 0
    with open(path, "wb") as f:
        for table in ds.with_format("arrow", columns=["ids"]).iter(batch_size=WRITE_BATCH_DOCS):
            ids = table.column("ids").combine_chunks().flatten().to_numpy(zero_copy_only=False)  # (tokens,)
            if ids.size and int(ids.max()) >= vocab_size:
                raise ValueError(f"token id {int(ids.max())} is outside the vocabulary (size {vocab_size}); "
                                 f"the tokenizer and the tokenized data disagree: tokenize again")
            ids.astype(dtype, copy=False).tofile(f)
            n += ids.size
            bar.update(ids.size)
        f.flush()
        os.fsync(f.fileno())
    return n


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def create_memmap_files(tokenized: datasets.DatasetDict, out_dir: str | os.PathLike[str] | None = None,
                        *, progress: bool = True, extra_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``train.bin``, ``val.bin``, ``tokenizer.json`` and ``meta.json`` into ``out_dir``; returns the meta.

    Default ``out_dir``: ``data/<source>_<tokenizer>``. The token files are flat arrays of ids (uint16 when the
    vocabulary has at most 65,536 tokens, else uint32), read back with ``np.memmap``. Everything is written
    under a temporary name first; ``meta.json`` comes last, so its presence means the outputs are complete.
    """
    from tqdm.auto import tqdm

    info = _pipeline_info(tokenized)
    out = Path(out_dir) if out_dir is not None else _default_out(info)
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(info["dtype"])
    if dtype != _dtype_for(info["vocab_size"]):
        raise ValueError(f"dtype {dtype.name} cannot hold vocab_size={info['vocab_size']:,}; tokenize again")
    (out / "meta.json").unlink(missing_ok=True)  # from here on, the folder no longer claims to be complete
    tmp = {name: out / f"{name}.tmp" for name in (*BIN_FILES, "tokenizer.json")}
    counts: dict[str, int] = {}
    try:
        for split in ("train", "val"):
            ds = tokenized[split]
            with tqdm(total=_column_sum(ds, "n_tokens"), unit="tok", unit_scale=True, desc=f"writing {split}.bin",
                      disable=not progress) as bar:
                counts[f"{split}_tokens"] = _write_bin(ds, tmp[f"{split}.bin"], dtype, info["vocab_size"], bar)
            counts[f"{split}_bytes"] = _column_sum(ds, "n_bytes")
            counts[f"{split}_documents"] = len(ds)
        _write_json_atomic(tmp["tokenizer.json"], info["tokenizer"])
        for name, path in tmp.items():
            os.replace(path, out / name)
    except BaseException:  # interrupted or failed: leave no partial file behind
        for path in tmp.values():
            path.unlink(missing_ok=True)
        raise
    meta = {
        "tokenizer": info["tokenizer_name"], "fingerprint": info["fingerprint"], "vocab_size": info["vocab_size"],
        "dtype": dtype.name, "train_tokens": counts["train_tokens"], "val_tokens": counts["val_tokens"],
        "train_bytes": counts["train_bytes"], "val_bytes": counts["val_bytes"],
        "source": info["source"], "source_fingerprint": info["source_fingerprint"], "split": info["split"],
        "val_fraction": info["val_fraction"], "seed": info["seed"], "eot_token": info["eot_token"],
        "format_version": FORMAT_VERSION, **(extra_meta or {}),
    }
    if info["split"] == "documents":  # (the tail split's rows are pieces of one joined text, not documents)
        meta.update(train_documents=counts["train_documents"], val_documents=counts["val_documents"])
    _write_json_atomic(out / "meta.json", meta)
    return meta


# --------------------------------------------------------------------------------------------------------
# The whole pipeline, idempotent
# --------------------------------------------------------------------------------------------------------


def _tokenizer_request(tokenizer: str | Tokenizer) -> str:
    """What the caller asked for: a name (the tokenizer then depends only on the source) or a fingerprint."""
    return tokenizer if isinstance(tokenizer, str) else f"fingerprint:{tokenizer.fingerprint}"


def _reusable(out: Path, expected: Mapping[str, Any]) -> dict[str, Any] | None:
    """The existing meta if ``out`` holds complete outputs made the same way, else None."""
    try:
        meta = load_meta(out)
    except (FileNotFoundError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in expected.items()) or not (out / "tokenizer.json").is_file():
        return None
    return meta


def _remove_stale_work_dirs(out: Path) -> None:
    """Delete the temporary folders of earlier runs that were killed (their process is gone)."""
    for work in out.glob(".prepare-*"):
        try:
            os.kill(int(work.name.split("-")[1]), 0)  # still running (another prepare into this folder)?
        except (ValueError, ProcessLookupError):
            shutil.rmtree(work, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass


def prepare(
    source: str | os.PathLike[str] | None = None,
    tokenizer: str | Tokenizer = "char",
    out_dir: str | os.PathLike[str] | None = None,
    num_proc: int = 1,
    val_fraction: float = 0.1,
    split: str = "documents",
    seed: int = DEFAULT_SEED,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Source -> ``train.bin``, ``val.bin``, ``tokenizer.json``, ``meta.json`` in ``out_dir``; returns the meta.

    ``out_dir`` defaults to :func:`default_data_dir` (``data/<source>_<tokenizer>``). Idempotent: when
    ``out_dir`` already holds complete outputs from the same source (same files, sizes and times), the same
    tokenizer request and split settings, they are reused; ``force=True`` rebuilds. Intermediate Arrow files
    go to a temporary folder inside ``out_dir`` and are deleted at the end (hub downloads stay in the
    ``datasets`` cache, so a second run does not download again).
    """
    _check_split_args(split, val_fraction, num_proc)
    src = resolve_source(source)
    out = Path(out_dir) if out_dir is not None else default_data_dir(src, tokenizer)
    expected = {"source": src.spec, "source_fingerprint": src.fingerprint(),
                "tokenizer_request": _tokenizer_request(tokenizer), "split": split,
                "val_fraction": val_fraction, "seed": seed, "format_version": FORMAT_VERSION}
    if not force and (meta := _reusable(out, expected)) is not None:
        if progress:
            print(f"{out}: up to date ({meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, "
                  f"{meta['tokenizer']}); force=True (--force) rebuilds")
        return meta
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_work_dirs(out)
    work = out / f".prepare-{os.getpid()}"  # same file system as out: cheap, and removed at the end
    shutil.rmtree(work, ignore_errors=True)
    tokenized = None
    try:
        tokenized, _ = load_and_process_dataset(
            src, tokenizer, num_proc, val_fraction=val_fraction, split=split, seed=seed,
            cache_dir=None if src.kind == "hub" else work / "cache", progress=progress,
            _tokens_file=work / "tokens.arrow",
        )
        meta = create_memmap_files(tokenized, out, progress=progress,
                                   extra_meta={"tokenizer_request": expected["tokenizer_request"]})
    finally:
        del tokenized  # close the memory-mapped Arrow files before deleting them
        shutil.rmtree(work, ignore_errors=True)
    if progress:
        print(f"{out}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens "
              f"({meta['tokenizer']}, vocab {meta['vocab_size']:,}, {meta['dtype']})")
    return meta


# --------------------------------------------------------------------------------------------------------
# Reading prepared data
# --------------------------------------------------------------------------------------------------------


def _prepare_command(data_dir: Path) -> str:
    """The exact command that (re)creates ``data_dir``, guessed from its name (data/<source>_<tokenizer>)."""
    stem, _, tok = data_dir.name.rpartition("_")
    args = f"llmlab prepare --out {data_dir}"
    if tok in ("char", "bpe", "gpt2"):
        args += f" --tokenizer {tok}"
        if stem and stem != SHAKESPEARE:
            args += " --source PATH_TO_YOUR_CORPUS" if stem != "openwebtext" else " --source openwebtext"
    else:
        args += " [--source PATH] [--tokenizer char|bpe|gpt2]"
    return args


def load_meta(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``data_dir/meta.json`` after checking that the prepared files are there and complete.

    Raises FileNotFoundError naming the path and the ``llmlab prepare`` command that creates it.
    """
    d = Path(data_dir)
    for name in ("train.bin", "val.bin", "meta.json"):
        if not (d / name).is_file():
            what = "folder does not exist" if not d.is_dir() else f"{name} is missing"
            raise FileNotFoundError(f"no prepared data in {d} ({what}); create it with: {_prepare_command(d)}")
    try:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{d / 'meta.json'} is damaged ({e}); rebuild with: {_prepare_command(d)} --force") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(f"{d / 'meta.json'} has format_version {version!r}, expected {FORMAT_VERSION}; "
                         f"rebuild with: {_prepare_command(d)} --force")
    dtype = meta.get("dtype")
    if dtype not in ("uint16", "uint32") or np.dtype(dtype) != _dtype_for(meta.get("vocab_size", 0)):
        raise ValueError(f"{d / 'meta.json'}: dtype {meta.get('dtype')!r} does not fit vocab_size "
                         f"{meta.get('vocab_size')!r}; rebuild with: {_prepare_command(d)} --force")
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in ("train", "val"):
        size, expected = (d / f"{split}.bin").stat().st_size, meta[f"{split}_tokens"] * itemsize
        if size != expected:
            raise ValueError(f"{d / f'{split}.bin'} has {size:,} bytes but meta.json says {meta[f'{split}_tokens']:,} "
                             f"{meta['dtype']} tokens ({expected:,} bytes): it is truncated or from another run; "
                             f"rebuild with: {_prepare_command(d)} --force")
    return meta


def _fingerprint_of(tokenizer: Tokenizer | Mapping[str, Any] | str) -> tuple[str, str]:
    """(name, fingerprint) of a Tokenizer, a Tokenizer.to_dict() dict, or a fingerprint string."""
    if isinstance(tokenizer, str):
        return "tokenizer", tokenizer
    if isinstance(tokenizer, Mapping):
        tokenizer = tokenizer_from_dict(dict(tokenizer))
    return tokenizer.name, tokenizer.fingerprint


def check_compatible(meta: Mapping[str, Any], tokenizer: Tokenizer | Mapping[str, Any] | str,
                     what: str = "the model") -> None:
    """Raise ValueError unless the data in ``meta`` was tokenized with ``tokenizer`` (same fingerprint).

    ``tokenizer``: a Tokenizer, its ``to_dict()`` (as stored in checkpoints) or a fingerprint string.
    """
    name, fingerprint = _fingerprint_of(tokenizer)
    if fingerprint != meta["fingerprint"]:
        raise ValueError(
            f"tokenizer mismatch: the data was tokenized with {meta['tokenizer']!r} (fingerprint "
            f"{meta['fingerprint'][:12]}, vocab {meta['vocab_size']:,}) but {what} uses {name!r} (fingerprint "
            f"{fingerprint[:12]}); prepare the data with {what}'s tokenizer (llmlab prepare --tokenizer {name} "
            f"--out DIR --force) or train a new model on this data"
        )


def load_tokenizer_for(data_dir: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer that made the data in ``data_dir`` (its tokenizer.json, checked against meta.json)."""
    meta = load_meta(data_dir)
    tok = load_tokenizer(Path(data_dir) / "tokenizer.json")
    check_compatible(meta, tok, what=f"{Path(data_dir) / 'tokenizer.json'}")
    return tok


# --------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------

_TRAIN_STREAM, _EVAL_STREAM = 0, 1


class TokenBatches:
    """Random windows of ``block_size + 1`` tokens from ``<data_dir>/<split>.bin``, as (x, y) int64 (B, T).

    The file is memory-mapped: only the windows drawn are read. Batch ``k`` of rank ``r`` depends only on
    ``(seed, r, k)`` (a torch.Generator seeded per batch), so the stream is reproducible, distinct per rank,
    and resumes exactly from :meth:`state_dict` — even on another rank, which then continues its own stream.
    On CUDA, batches go through pinned memory with non-blocking copies.
    """

    def __init__(self, data_dir: str | os.PathLike[str], split: str, block_size: int, batch_size: int,
                 device: str | torch.device = "cpu", seed: int = 0, rank: int = 0, world_size: int = 1):
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r} is not valid; use 'train' or 'val'")
        for name, value in (("block_size", block_size), ("batch_size", batch_size), ("world_size", world_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid: it must be a whole number >= 1")
        if not (isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"rank={rank!r} is not valid for world_size={world_size}: use 0..{world_size - 1}")
        self.meta = load_meta(data_dir)
        self.path = Path(data_dir) / f"{split}.bin"
        self.split, self.block_size, self.batch_size = split, block_size, batch_size
        import torch

        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.device = torch.device(device)
        # One read-only map for the life of the sampler; pages read stay in the OS page cache, not the heap.
        self.data = np.memmap(self.path, dtype=np.dtype(self.meta["dtype"]), mode="r")  # (N,)
        if len(self.data) < block_size + 1:
            raise ValueError(
                f"{self.path} holds {len(self.data):,} tokens, fewer than block_size + 1 = {block_size + 1}; "
                f"use a smaller block_size, or prepare more {split} text (a larger val_fraction or corpus)"
            )
        self.step = 0
        self._generator = torch.Generator()

    def __len__(self) -> int:
        """Tokens in the split."""
        return len(self.data)

    def _generator_for(self, stream: int, index: int) -> torch.Generator:
        # SeedSequence mixes (seed, rank, stream, index) into independent, well-spread 64-bit seeds.
        state = np.random.SeedSequence([self.seed, self.rank, stream, index]).generate_state(2, dtype=np.uint32)
        return self._generator.manual_seed((int(state[0]) << 31) ^ int(state[1]))

    def _window_batch(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        T = self.block_size
        buf = torch.from_numpy(np.stack([self.data[s: s + T + 1] for s in starts]).astype(np.int64))  # (B, T+1)
        return self._to_device(buf[:, :-1].contiguous()), self._to_device(buf[:, 1:].contiguous())  # (B, T) each

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":  # page-locked memory lets the copy overlap with compute
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def batch_at(self, index: int, stream: int = _TRAIN_STREAM) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index`` of the given stream (0: training, 1: evaluation), without moving the step counter."""
        import torch

        g = self._generator_for(stream, index)
        starts = torch.randint(len(self.data) - self.block_size, (self.batch_size,), generator=g)  # (B,)
        return self._window_batch(starts.numpy())

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch: inputs x and targets y (x shifted by one), int64 (B, T)."""
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    __next__ = next

    def __iter__(self) -> TokenBatches:
        return self

    def eval_batches(self, num_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The same ``num_batches`` random batches at every call (its own stream): val losses compare across evals."""
        for i in range(num_batches):
            yield self.batch_at(i, _EVAL_STREAM)

    def sequential_batches(self, max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows in order, covering every target of the split exactly once.

        The last window is padded: x with 0, y with -1 (the loss's ignore_index), so averaging the loss over
        all non-ignored targets gives the exact loss of the whole split.
        """
        import torch

        T, B, n_targets = self.block_size, self.batch_size, len(self.data) - 1
        starts = np.arange(0, n_targets, T)
        for b, i in enumerate(range(0, len(starts), B)):
            if max_batches is not None and b >= max_batches:
                return
            x = np.zeros((len(starts[i: i + B]), T), dtype=np.int64)  # (B, T)
            y = np.full_like(x, -1)
            for row, s in enumerate(starts[i: i + B]):
                m = min(T, n_targets - s)
                x[row, :m] = self.data[s: s + m]
                y[row, :m] = self.data[s + 1: s + m + 1]
            yield self._to_device(torch.from_numpy(x)), self._to_device(torch.from_numpy(y))

    def state_dict(self) -> dict[str, Any]:
        """Plain ints: the position in the stream (and what it was drawn with)."""
        return {"step": self.step, "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "block_size": self.block_size, "batch_size": self.batch_size, "tokens": len(self.data)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the stream from ``state`` (this sampler keeps its own rank: each rank resumes its stream)."""
        if "step" not in state:
            raise ValueError(f"not a TokenBatches state (keys: {sorted(state)}); pass TokenBatches.state_dict()")
        now = {"block_size": self.block_size, "batch_size": self.batch_size, "world_size": self.world_size,
               "tokens": len(self.data)}
        changed = [k for k, v in now.items() if k in state and state[k] != v]
        if changed:
            warnings.warn(f"resuming the batch stream with different {', '.join(changed)}: batches after the resume "
                          f"differ from an uninterrupted run", stacklevel=2)
        self.seed = int(state.get("seed", self.seed))
        self.step = int(state["step"])
