"""Preparing data: a source's documents -> token ids -> ``train.bin``, ``val.bin``, ``tokenizer.json``, ``meta.json``.

:func:`load_and_process_dataset` (:mod:`llmlab.data.processing`) tokenizes a source with ``datasets.map``
(``num_proc`` processes) and splits it into train / val: by whole documents (seeded) or, as nanoGPT, by cutting
the joined text ("tail"). :func:`save_processed_dataset` keeps that tokenized dataset; :func:`create_memmap_files`
(here) writes the flat token files read at training time by :mod:`llmlab.data.batches` (which defines their
format). :func:`prepare` runs all of it in one call and reuses finished outputs made the same way.

``split="auto"`` (the default) picks the split from the corpus: whole documents when there are enough of them
(:func:`llmlab.data.tokenizing._auto_split`), else the tail of the joined text, and meta.json says which.
The default tokenizer is the default training preset's (:data:`llmlab.data.sources.DEFAULT_TOKENIZER`).

Memory stays bounded however large the corpus: long documents are tokenized in pieces, token ids live in
memory-mapped Arrow files, and the ``.bin`` files are written chunk by chunk.

The output folder is safe to interrupt and to share (the machinery is in :mod:`llmlab.data.outputs`):

- every output is first written under a temporary name; only when all of them are complete are the old
  ``meta.json`` removed and the new files renamed into place, ``meta.json`` last. An interrupted or failed run
  (Ctrl-C, SIGTERM, a full disk, a read-only folder) leaves the earlier complete outputs as they were, and
  never a ``train.bin`` that looks complete (``meta.json`` vouches for the other files);
- a run that fails removes the folder again if it created it (nothing complete is in it);
- one writer at a time: a run holds an exclusive lock on ``<out>/.prepare.lock`` while it writes, and a second
  run into the same folder fails at once with :class:`OutputFolderBusyError` (it does not wait).

The names of :mod:`llmlab.data.processing` and :mod:`llmlab.data.outputs` that this module used to define are
importable from here too. Patch them where the code looks them up: ``prepare`` calls ``load_and_process_dataset``
and ``_write_bin`` through this module; the lock's ``fcntl`` is :mod:`llmlab.data.outputs`'.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmlab.bpe import non_default_size
from llmlab.data.batches import BIN_FILES, FORMAT_VERSION, _dtype_for, load_meta
from llmlab.data.outputs import (
    _DISK_FULL,
    OutputFolderBusyError,
    OutputFolderError,
    _output_folder,
    _remove_stale_work_dirs,
    _swap_in,
    _work_dir,
    _write_failed,
)
from llmlab.data.processing import (
    DEFAULT_SEED,
    _check_split_args,
    _check_tokenizer_arg,
    _default_out,
    _pipeline_info,
    load_and_process_dataset,
    save_processed_dataset,
)
from llmlab.data.sources import DEFAULT_TOKENIZER, default_data_dir, resolve_source
from llmlab.data.tokenizing import _auto_split
from llmlab.signals import interrupts_clean_up
from llmlab.tokenizers import Tokenizer

if TYPE_CHECKING:  # imported where used: datasets is slow to import
    import datasets

__all__ = [
    "OutputFolderError",
    "OutputFolderBusyError",
    "load_and_process_dataset",
    "save_processed_dataset",
    "create_memmap_files",
    "prepare",
]

WRITE_BATCH_DOCS = 1024  # documents per chunk written to the .bin files
OUTPUTS = (*BIN_FILES, "tokenizer.json", "meta.json")  # renamed into place in this order: meta.json last


# --------------------------------------------------------------------------------------------------------
# Writing train.bin / val.bin / tokenizer.json / meta.json
# --------------------------------------------------------------------------------------------------------


def _column_sum(ds: datasets.Dataset, column: str) -> int:
    import pyarrow.compute as pc

    return sum(
        int(pc.sum(t.column(column)).as_py() or 0)
        for t in ds.with_format("arrow", columns=[column]).iter(batch_size=1 << 16)
    )


def _write_bin(ds: datasets.Dataset, path: Path, dtype: np.dtype, vocab_size: int, bar: Any) -> int:
    """Stream the ids of ``ds`` into ``path`` chunk by chunk; returns the number of tokens written."""
    n = 0
    with open(path, "wb") as f:
        for table in ds.with_format("arrow", columns=["ids"]).iter(batch_size=WRITE_BATCH_DOCS):
            ids = table.column("ids").combine_chunks().flatten().to_numpy(zero_copy_only=False)  # (tokens,)
            if ids.size and int(ids.max()) >= vocab_size:
                raise ValueError(
                    f"token id {int(ids.max())} is outside the vocabulary (size {vocab_size}); "
                    f"the tokenizer and the tokenized data disagree: tokenize again"
                )
            f.write(np.ascontiguousarray(ids, dtype=dtype).data)
            n += ids.size
            bar.update(ids.size)
        f.flush()
        os.fsync(f.fileno())
    return n


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())


def create_memmap_files(
    tokenized: datasets.DatasetDict,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    extra_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``train.bin``, ``val.bin``, ``tokenizer.json`` and ``meta.json`` into ``out_dir``; returns the meta.

    Default ``out_dir``: ``data/<source>_<tokenizer>``. The token files are flat arrays of ids (uint16 when the
    vocabulary has at most 65,536 tokens, else uint32), read back with ``np.memmap``. Everything is written
    under a temporary name first and renamed into place once complete, ``meta.json`` last, so its presence
    means the outputs are complete; a run that fails or is interrupted leaves earlier outputs unchanged.
    The folder is locked while written (:class:`OutputFolderBusyError` if another run is writing it).
    """
    info = _pipeline_info(tokenized)
    out = Path(out_dir) if out_dir is not None else _default_out(info)
    with interrupts_clean_up(), _output_folder(out, OUTPUTS):
        return _write_outputs(tokenized, info, out, progress=progress, extra_meta=extra_meta)


def _write_outputs(
    tokenized: datasets.DatasetDict,
    info: Mapping[str, Any],
    out: Path,
    *,
    progress: bool,
    extra_meta: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The work of :func:`create_memmap_files`, in a folder that exists and that the caller has locked."""
    from tqdm.auto import tqdm

    dtype = np.dtype(info["dtype"])
    if dtype != _dtype_for(info["vocab_size"]):
        raise ValueError(f"dtype {dtype.name} cannot hold vocab_size={info['vocab_size']:,}; tokenize again")
    tmp = {name: out / f"{name}.tmp" for name in OUTPUTS}
    counts: dict[str, int] = {}
    writing = out
    try:
        for split in ("train", "val"):
            ds = tokenized[split]
            writing = tmp[f"{split}.bin"]
            with tqdm(
                total=_column_sum(ds, "n_tokens"),
                unit="tok",
                unit_scale=True,
                desc=f"writing {split}.bin",
                disable=not progress,
            ) as bar:
                counts[f"{split}_tokens"] = _write_bin(ds, writing, dtype, info["vocab_size"], bar)
            counts[f"{split}_bytes"] = _column_sum(ds, "n_bytes")
            counts[f"{split}_documents"] = len(ds)
        meta = {
            "tokenizer": info["tokenizer_name"],
            "fingerprint": info["fingerprint"],
            "vocab_size": info["vocab_size"],
            "dtype": dtype.name,
            "train_tokens": counts["train_tokens"],
            "val_tokens": counts["val_tokens"],
            "train_bytes": counts["train_bytes"],
            "val_bytes": counts["val_bytes"],
            "source": info["source"],
            "source_fingerprint": info["source_fingerprint"],
            "split": info["split"],
            "split_request": info.get("split_request", info["split"]),
            "val_fraction": info["val_fraction"],
            "seed": info["seed"],
            "eot_token": info["eot_token"],
            "format_version": FORMAT_VERSION,
            **(extra_meta or {}),
        }
        if info.get("documents") is not None:
            meta["documents"] = info["documents"]  # non-empty documents in the source (what split="auto" counts)
        if info["split"] == "documents":  # (the tail split's rows are pieces of one joined text, not documents)
            meta.update(train_documents=counts["train_documents"], val_documents=counts["val_documents"])
        writing = tmp["tokenizer.json"]
        _write_json(writing, info["tokenizer"])
        writing = tmp["meta.json"]
        _write_json(writing, meta)
        # Everything is complete under temporary names: swap it in, meta.json last (signals wait for the swap;
        # its OSErrors arrive as an OutputFolderError naming the output).
        _swap_in(tmp, out)
    except BaseException as e:  # interrupted or failed: leave no temporary file behind
        for path in tmp.values():
            path.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, OutputFolderError):
            raise _write_failed(e, writing, out) from None
        raise
    return meta


# --------------------------------------------------------------------------------------------------------
# The whole pipeline, idempotent
# --------------------------------------------------------------------------------------------------------


def _tokenizer_request(tokenizer: str | Tokenizer, vocab_size: int | None = None) -> str:
    """What the caller asked for: a name (the tokenizer then depends only on the source), with a BPE's size
    when it is not the default ("bpe:4096"; plain "bpe" keeps folders made before sizes reusable), or a
    fingerprint."""
    if not isinstance(tokenizer, str):
        return f"fingerprint:{tokenizer.fingerprint}"
    size = non_default_size(vocab_size)
    return f"{tokenizer}:{size}" if size else tokenizer


def _split_of(meta: Mapping[str, Any], split: str, val_fraction: float) -> str | None:
    """The split a run asking for ``split`` would use on the source that made ``meta`` (None: cannot tell).

    "auto" depends only on the number of non-empty documents, which meta.json records ("documents"; older
    folders made with the documents split have it as train_documents + val_documents)."""
    if split != "auto":
        return split
    documents = meta.get("documents")
    if documents is None and "train_documents" in meta and "val_documents" in meta:
        documents = meta["train_documents"] + meta["val_documents"]
    return None if not isinstance(documents, int) else _auto_split(documents, val_fraction)[0]


def _reusable(out: Path, expected: Mapping[str, Any], split: str) -> dict[str, Any] | None:
    """The existing meta if ``out`` holds complete outputs made the same way, else None.

    The split counts by what was used, not how it was asked: split="auto" reuses outputs made with the split
    that "auto" picks for this source, and an explicit split reuses outputs that "auto" made with that split."""
    try:
        meta = load_meta(out)
    except (FileNotFoundError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in expected.items()) or not (out / "tokenizer.json").is_file():
        return None
    if meta.get("split") != _split_of(meta, split, expected["val_fraction"]):
        return None
    return meta


def _split_note(meta: Mapping[str, Any]) -> str:
    return f"split {meta['split']}" + (" (auto)" if meta.get("split_request") == "auto" else "")


# The fewest training tokens worth writing: one window of the smallest context a course model uses (64) and its
# next-token targets. A text shorter than that cannot train anything; saying so here beats a refusal at `train`.
MIN_TRAIN_TOKENS = 65


def _check_enough(tokenized: Any, src: Any) -> None:
    """Refuse, in one line and before anything is written, a source too small to train on."""
    tokens = _column_sum(tokenized["train"], "n_tokens")
    if tokens < MIN_TRAIN_TOKENS:
        raise ValueError(
            f"the source {src.spec} gives only {tokens} training token(s): too little to train on (a model reads "
            f"windows of block_size + 1 tokens, e.g. 65 with block_size=64). Use a longer text: a few kilobytes at "
            f"least, e.g. the embedded Shakespeare (llmlab prepare without --source)."
        )


def prepare(
    source: str | os.PathLike[str] | None = None,
    tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
    out_dir: str | os.PathLike[str] | None = None,
    num_proc: int = 1,
    val_fraction: float = 0.1,
    split: str = "auto",
    seed: int = DEFAULT_SEED,
    force: bool = False,
    progress: bool = True,
    vocab_size: int | None = None,
) -> dict[str, Any]:
    """Source -> ``train.bin``, ``val.bin``, ``tokenizer.json``, ``meta.json`` in ``out_dir``; returns the meta.

    ``tokenizer`` defaults to the default training preset's (:data:`~llmlab.data.sources.DEFAULT_TOKENIZER`,
    "bpe"); ``out_dir`` to :func:`default_data_dir` (``data/<source>_<tokenizer>``). ``split="auto"`` holds
    out whole documents when the source has at least 10 non-empty documents and ``val_fraction`` of them is at
    least one, else the tail of the joined text; meta.json's ``split`` says which was used. An explicit
    ``split="documents"`` or ``"tail"`` forces one (``"documents"`` that would leave val empty is refused).
    ``vocab_size`` (``tokenizer="bpe"`` only; default 1,024) trains the BPE to that many tokens; the default
    folder then says so (``data/shakespeare_bpe4096``).

    Idempotent: when ``out_dir`` already holds complete outputs from the same source (same files, sizes and
    times), the same tokenizer request and the same split (as used), they are reused; ``force=True``
    rebuilds. Intermediate Arrow files go to a temporary folder inside ``out_dir`` and are deleted at the end
    (hub downloads stay in the ``datasets`` cache, so a second run does not download again).

    Safe to interrupt (Ctrl-C, SIGTERM) and to fail (full disk, read-only folder: :class:`OutputFolderError`):
    earlier complete outputs stay as they were and nothing left looks complete; a folder this call created is
    removed again. A second run into a folder that a run is writing fails at once with
    :class:`OutputFolderBusyError` (it does not wait).
    """
    _check_split_args(split, val_fraction, num_proc)
    _check_tokenizer_arg(tokenizer, vocab_size)
    src = resolve_source(source)
    out = Path(out_dir) if out_dir is not None else default_data_dir(src, tokenizer, vocab_size)
    expected = {
        "source": src.spec,
        "source_fingerprint": src.fingerprint(),
        "tokenizer_request": _tokenizer_request(tokenizer, vocab_size),
        "val_fraction": val_fraction,
        "seed": seed,
        "format_version": FORMAT_VERSION,
    }
    if not force and (meta := _reusable(out, expected, split)) is not None:
        if progress:
            print(
                f"{out}: up to date ({meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, "
                f"{meta['tokenizer']}, {_split_note(meta)}); force=True (--force) rebuilds"
            )
        return meta
    with interrupts_clean_up(), _output_folder(out, OUTPUTS):
        _remove_stale_work_dirs(out)
        work = _work_dir(out)  # same file system as out: cheap, and removed at the end
        shutil.rmtree(work, ignore_errors=True)
        tokenized = None
        try:
            try:
                tokenized, _ = load_and_process_dataset(
                    src,
                    tokenizer,
                    num_proc,
                    val_fraction=val_fraction,
                    split=split,
                    seed=seed,
                    cache_dir=None if src.kind == "hub" else work / "cache",
                    progress=progress,
                    vocab_size=vocab_size,
                    _tokens_file=work / "tokens.arrow",
                )
            except OSError as e:  # a full disk while datasets writes its Arrow files into the work folder
                full = e.errno in _DISK_FULL or "no space left" in str(e).lower()
                if not full or isinstance(e, OutputFolderError):
                    raise
                raise _write_failed(e, work, out) from None
            _check_enough(tokenized, src)
            meta = _write_outputs(
                tokenized,
                _pipeline_info(tokenized),
                out,
                progress=progress,
                extra_meta={"tokenizer_request": expected["tokenizer_request"]},
            )
        finally:
            del tokenized  # close the memory-mapped Arrow files before deleting them
            shutil.rmtree(work, ignore_errors=True)
    if progress:
        print(
            f"{out}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens "
            f"({meta['tokenizer']}, vocab {meta['vocab_size']:,}, {meta['dtype']}, {_split_note(meta)})"
        )
    return meta
