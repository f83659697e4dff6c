"""Preparing data: a source's documents -> token ids -> ``train.bin``, ``val.bin``, ``tokenizer.json``, ``meta.json``.

:func:`load_and_process_dataset` tokenizes a source with ``datasets.map`` (``num_proc`` processes) and
splits it into train / val: by whole documents (seeded) or, as nanoGPT, by cutting the joined text
("tail"). :func:`save_processed_dataset` keeps that tokenized dataset; :func:`create_memmap_files` writes
the flat token files read at training time by :mod:`llmlab.data.batches` (which defines their format).
:func:`prepare` runs all of it in one call and reuses finished outputs made the same way.

Memory stays bounded however large the corpus: long documents are tokenized in pieces, token ids live in
memory-mapped Arrow files, and the ``.bin`` files are written chunk by chunk. Outputs are written under
temporary names and renamed at the end, ``meta.json`` last, so an interrupted run never leaves a
``train.bin`` that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmlab.corpus import JOIN
from llmlab.data.batches import BIN_FILES, FORMAT_VERSION, _dtype_for, load_meta
from llmlab.data.sources import SHAKESPEARE, Source, default_data_dir, load_source, resolve_source
from llmlab.data.tokenizing import (
    PIECE_CHARS,
    _document_val_mask,
    _tail_pieces,
    _text_lengths,
    _tokenize_batch,
    _TokenizerRef,
    _train_texts,
)
from llmlab.tokenizers import Tokenizer, get_tokenizer

if TYPE_CHECKING:  # imported where used: datasets is slow to import
    import datasets

__all__ = ["load_and_process_dataset", "save_processed_dataset", "create_memmap_files", "prepare"]

SPLITS = ("documents", "tail")
DEFAULT_SEED = 2357  # seed of the train/val document split
BPE_SAMPLE_CHARS = 1 << 20  # tokenizer="bpe" on a user corpus trains on its first million characters
MAP_BATCH_DOCS = 256  # documents per datasets.map batch
WRITE_BATCH_DOCS = 1024  # documents per chunk written to the .bin files


# --------------------------------------------------------------------------------------------------------
# Tokenizing: source -> tokenized train / val datasets
# --------------------------------------------------------------------------------------------------------


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


def _content_key(ds: datasets.Dataset) -> str:
    """A hash that changes whenever the rows of ``ds`` (as :func:`load_source` or the tail split make it: whole
    Arrow files, no row selection) may have changed. It names what datasets caches for results derived from
    ``ds`` (the tail split's pieces, the tokenized rows): the same text reuses them, other text never does.

    A dataset read from files lives in Arrow cache files that datasets writes anew, under another name, when
    the files it read change: their paths, sizes and modification times identify the rows without reading
    gigabytes of text. A dataset held in memory (the embedded corpus, a few MB) is hashed whole.
    """
    h = hashlib.sha256(f"{len(ds)}|{ds.column_names}|{ds.features}".encode())
    if ds.cache_files:
        for f in ds.cache_files:
            st = os.stat(f["filename"])
            h.update(f"|{f['filename']}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        for batch in ds.iter(batch_size=1024):
            h.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return h.hexdigest()


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
        fp = hashlib.sha256(f"{_content_key(raw)}|{cut}|{piece_chars}".encode()).hexdigest()[:16]
        raw = datasets.Dataset.from_generator(
            _tail_pieces, gen_kwargs={"ds": raw, "cut": cut, "piece_chars": piece_chars},
            features=datasets.Features({"text": datasets.Value("string"), "is_val": datasets.Value("bool")}),
            cache_dir=None if cache_dir is None else str(cache_dir), fingerprint=fp,
        )

    tok = _resolve_tokenizer(tokenizer, src, raw, split, _train_texts(raw, val_mask))
    dtype = _dtype_for(tok.vocab_size)

    # Our own fingerprint: datasets would otherwise hash the tokenizer (slow) to name its cache file.
    fingerprint = hashlib.sha256("|".join(map(str, [
        _content_key(raw), tok.fingerprint, split, val_fraction, seed, piece_chars, FORMAT_VERSION, "v1"])).encode()
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


