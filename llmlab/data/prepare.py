"""Preparing data: a source's documents -> token ids -> ``train.bin``, ``val.bin``, ``tokenizer.json``, ``meta.json``.

:func:`load_and_process_dataset` tokenizes a source with ``datasets.map`` (``num_proc`` processes) and
splits it into train / val: by whole documents (seeded) or, as nanoGPT, by cutting the joined text
("tail"). :func:`save_processed_dataset` keeps that tokenized dataset; :func:`create_memmap_files` writes
the flat token files read at training time by :mod:`llmlab.data.batches` (which defines their format).
:func:`prepare` runs all of it in one call and reuses finished outputs made the same way.

``split="auto"`` (the default) picks the split from the corpus: whole documents when there are enough of them
(:func:`llmlab.data.tokenizing._auto_split`), else the tail of the joined text, and meta.json says which.
The default tokenizer is the default training preset's (:data:`llmlab.data.sources.DEFAULT_TOKENIZER`).

Memory stays bounded however large the corpus: long documents are tokenized in pieces, token ids live in
memory-mapped Arrow files, and the ``.bin`` files are written chunk by chunk.

The output folder is safe to interrupt and to share:

- every output is first written under a temporary name; only when all of them are complete are the old
  ``meta.json`` removed and the new files renamed into place, ``meta.json`` last. An interrupted or failed run
  (Ctrl-C, SIGTERM, a full disk, a read-only folder) leaves the earlier complete outputs as they were, and
  never a ``train.bin`` that looks complete (``meta.json`` vouches for the other files);
- a run that fails removes the folder again if it created it (nothing complete is in it);
- one writer at a time: a run holds an exclusive lock on ``<out>/.prepare.lock`` while it writes, and a second
  run into the same folder fails at once with :class:`OutputFolderBusyError` (it does not wait).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmlab.corpus import JOIN
from llmlab.data.batches import BIN_FILES, FORMAT_VERSION, _dtype_for, load_meta
from llmlab.data.sources import DEFAULT_TOKENIZER, SHAKESPEARE, Source, default_data_dir, load_source, resolve_source
from llmlab.data.tokenizing import (
    PIECE_CHARS,
    _auto_split,
    _document_val_mask,
    _tail_pieces,
    _text_lengths,
    _tokenize_batch,
    _TokenizerRef,
    _train_texts,
)
from llmlab.tokenizers import TOKENIZER_NAMES, Tokenizer, get_tokenizer
from llmlab.validate import check_int, check_number, invalid

try:  # POSIX: the folder lock is an flock, which the OS releases however the process ends
    import fcntl
except ImportError:  # elsewhere: an O_EXCL lock file (a killed run leaves it behind: the message says so)
    fcntl = None

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

SPLITS = ("auto", "documents", "tail")
DEFAULT_SEED = 2357  # seed of the train/val document split
BPE_SAMPLE_CHARS = 1 << 20  # tokenizer="bpe" on a user corpus trains on its first million characters
MAP_BATCH_DOCS = 256  # documents per datasets.map batch
WRITE_BATCH_DOCS = 1024  # documents per chunk written to the .bin files
LOCK_NAME = ".prepare.lock"  # in the output folder while a run writes it
OUTPUTS = (*BIN_FILES, "tokenizer.json", "meta.json")  # renamed into place in this order: meta.json last
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class OutputFolderError(OSError, ValueError):
    """The output folder cannot be written: the disk is full, the folder is read-only, or another prepare is
    writing it. The message names the path and what to do; the earlier outputs in the folder are unchanged.

    Also a ValueError, so that callers that report bad input as one line (the CLI) report this the same way."""


class OutputFolderBusyError(OutputFolderError):
    """Another prepare holds the output folder's lock (``<out>/.prepare.lock``): it is writing there now."""


# --------------------------------------------------------------------------------------------------------
# Tokenizing: source -> tokenized train / val datasets
# --------------------------------------------------------------------------------------------------------


def _resolve_tokenizer(
    tokenizer: str | Tokenizer, src: Source, ds: datasets.Dataset, split: str, train_texts: Iterator[str]
) -> Tokenizer:
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
        raise invalid(
            "split",
            split,
            "use 'auto' (the default: whole documents when there are enough of them, "
            "else the tail), 'documents' (a seeded choice of whole documents) or 'tail' "
            "(the last val_fraction of the joined text, as nanoGPT).",
        )
    check_number(
        "val_fraction",
        val_fraction,
        0,
        1,
        low_open=True,
        high_open=True,
        fix="it must be strictly between 0 and 1 (val would be empty or take everything), e.g. 0.1.",
    )
    check_int("num_proc", num_proc, 1, "use a whole number >= 1 (processes for tokenizing).")


def _check_tokenizer_arg(tokenizer: str | Tokenizer) -> None:
    """A bad tokenizer name fails before any work (and before any folder is made)."""
    if isinstance(tokenizer, Tokenizer) or tokenizer in TOKENIZER_NAMES:
        return
    raise invalid("tokenizer", tokenizer, f"use one of {', '.join(TOKENIZER_NAMES)}, or a Tokenizer instance.")


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
    tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
    num_proc: int = 1,
    *,
    val_fraction: float = 0.1,
    split: str = "auto",
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
    and holds out the last ``val_fraction`` of the characters (nanoGPT's split, no EOT). ``split="auto"``
    (default) uses "documents" when the corpus has at least 10 non-empty documents and ``val_fraction`` of
    them is at least one whole document, else "tail" (a single file, a few books); with ``progress`` it
    prints which. The metadata that :func:`create_memmap_files` writes to meta.json records the split used
    (``split``) and the one asked for (``split_request``). Empty documents are skipped.

    Defaults: the embedded Shakespeare corpus, split "auto" (its 42 works: "documents") and the default
    training preset's tokenizer (:data:`~llmlab.data.sources.DEFAULT_TOKENIZER`: "bpe", a 1,024-token
    byte-level BPE trained on the training text), so that the manual's three calls make, offline, the data
    that ``llmlab train`` trains on. ``tokenizer="gpt2"`` gives GPT-2's BPE.
    """
    _check_split_args(split, val_fraction, num_proc)
    _check_tokenizer_arg(tokenizer)
    with _progress_bars(progress):
        return _load_and_process(
            resolve_source(source),
            tokenizer,
            num_proc,
            val_fraction,
            split,
            seed,
            cache_dir,
            _tokens_file,
            _piece_chars,
            progress,
        )


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


def _load_and_process(
    src: Source,
    tokenizer: str | Tokenizer,
    num_proc: int,
    val_fraction: float,
    split_request: str,
    seed: int,
    cache_dir: str | os.PathLike[str] | None,
    tokens_file: str | os.PathLike[str] | None,
    piece_chars: int,
    progress: bool = False,
) -> tuple[datasets.DatasetDict, Tokenizer]:
    import datasets

    raw = load_source(src, cache_dir=cache_dir, num_proc=num_proc)
    lengths = _text_lengths(raw)
    if not lengths.any():
        raise ValueError(f"the corpus {src.spec} is empty ({len(raw)} documents, no text); give a source with text")
    documents = int(np.count_nonzero(lengths))
    split = split_request
    if split == "auto":
        split, why = _auto_split(documents, val_fraction)
        if progress:
            print(f"split: {split} (auto: {why}; split='documents' or 'tail' forces one)")
    val_mask = None
    if split == "documents":
        val_mask = _document_val_mask(lengths, val_fraction, seed)
    else:
        total = int(lengths.sum()) + len(JOIN) * (len(lengths) - 1)
        cut = int(total * (1 - val_fraction))  # nanoGPT: data[:int(n * 0.9)]
        if cut == 0 or cut == total:
            raise ValueError(
                f"val_fraction={val_fraction} of {total} characters leaves "
                f"{'train' if cut == 0 else 'val'} empty; use a val_fraction that keeps text on both "
                f"sides"
            )
        fp = hashlib.sha256(f"{_content_key(raw)}|{cut}|{piece_chars}".encode()).hexdigest()[:16]
        raw = datasets.Dataset.from_generator(
            _tail_pieces,
            gen_kwargs={"ds": raw, "cut": cut, "piece_chars": piece_chars},
            features=datasets.Features({"text": datasets.Value("string"), "is_val": datasets.Value("bool")}),
            cache_dir=None if cache_dir is None else str(cache_dir),
            fingerprint=fp,
        )

    tok = _resolve_tokenizer(tokenizer, src, raw, split, _train_texts(raw, val_mask))
    dtype = _dtype_for(tok.vocab_size)

    # Our own fingerprint: datasets would otherwise hash the tokenizer (slow) to name its cache file.
    fingerprint = hashlib.sha256(
        "|".join(
            map(str, [_content_key(raw), tok.fingerprint, split, val_fraction, seed, piece_chars, FORMAT_VERSION, "v1"])
        ).encode()
    ).hexdigest()[:32]
    tokenized = raw.map(
        _tokenize_batch,
        batched=True,
        batch_size=MAP_BATCH_DOCS,
        with_indices=True,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=raw.column_names,
        fn_kwargs={
            "tokenizer": _TokenizerRef(tok),
            "dtype": dtype,
            "append_eot": split == "documents",
            "val_mask": val_mask,
            "piece_chars": piece_chars,
        },
        new_fingerprint=fingerprint,
        cache_file_name=None if tokens_file is None else str(tokens_file),
        writer_batch_size=MAP_BATCH_DOCS,
        desc=f"tokenizing documents with {tok.name}",
    )
    is_val = tokenized.with_format("arrow", columns=["is_val"])[:]["is_val"].to_numpy(zero_copy_only=False)
    info = {
        "format_version": FORMAT_VERSION,
        "source": src.spec,
        "source_name": src.name,
        "source_fingerprint": src.fingerprint(),
        "tokenizer": tok.to_dict(),
        "tokenizer_name": tok.name,
        "fingerprint": tok.fingerprint,
        "vocab_size": tok.vocab_size,
        "eot_token": tok.eot_token,
        "dtype": dtype.name,
        "split": split,
        "split_request": split_request,
        "documents": documents,
        "val_fraction": val_fraction,
        "seed": seed,
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
        raise ValueError(
            "this is not a dataset made by load_and_process_dataset (no train/val splits with llmlab "
            "metadata); make it with: tokenized, _ = load_and_process_dataset(...)"
        ) from None
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"tokenized dataset format_version {info.get('format_version')!r} is not {FORMAT_VERSION}; "
            f"tokenize again with this llmlab version"
        )
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
# The output folder: made on demand, locked while written, removed again by a run that fails
# --------------------------------------------------------------------------------------------------------


def _write_failed(e: OSError, path: Path, out: Path) -> OutputFolderError:
    """One clear sentence for an OSError met while writing ``path`` in ``out``: what failed and what to do."""
    code = e.errno
    if code is None and "no space left" in str(e).lower():  # pyarrow's IO errors carry the text, not the errno
        code = errno.ENOSPC
    if code in _DISK_FULL:
        what, fix = "the disk is full", "free disk space, or choose another output folder on a disk with room"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        what, fix = (
            f"permission denied: {out} is read-only for this user",
            "choose another output folder, or make this one writable",
        )
    else:
        what, fix = (e.strerror or str(e)), "check the disk, or choose another output folder"
    if path.suffix == ".tmp":  # name the output, not its temporary name
        path = path.with_suffix("")
    kept = " (the earlier outputs there are unchanged)" if (out / "meta.json").is_file() else ""
    err = OutputFolderError(f"cannot write {path}: {what}; {fix} (out_dir=..., CLI: --out DIR){kept}")
    err.errno = code
    return err


def _make_dirs(out: Path) -> list[Path]:
    """Create ``out`` and its missing parents; returns the folders this call created, outermost first."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(
            f"the output folder {out} is a file, not a folder; choose another output folder "
            f"(out_dir=..., CLI: --out DIR)"
        )
    missing = []
    p = out
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:  # made by another process meanwhile: not ours to remove
                continue
            created.append(d)
    except OSError as e:
        _remove_empty(created)
        raise _write_failed(e, d, d.parent) from None
    return created


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders a failed run created, innermost first, as long as they are empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:  # not empty (another run's files, or outputs): keep it and its parents
            return


def _lock_busy(out: Path, lock: Path, stale_hint: bool) -> OutputFolderBusyError:
    msg = (
        f"another prepare is writing {out} now (it holds the lock {lock}); wait for it to finish and run again, "
        f"or choose another output folder (out_dir=..., CLI: --out DIR)"
    )
    if stale_hint:  # an O_EXCL lock file outlives a killed process
        msg += "; if no prepare is running, the lock was left by a killed run: delete it"
    err = OutputFolderBusyError(msg)
    err.errno = errno.EBUSY
    return err


def _acquire_lock(out: Path) -> int:
    """An exclusive lock on ``out/.prepare.lock``, held through the returned file descriptor."""
    lock = out / LOCK_NAME
    if fcntl is None:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise _lock_busy(out, lock, stale_hint=True) from None
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _lock_busy(out, lock, stale_hint=False) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder before us deletes the file as it lets go: lock the file that is there now
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _release_lock(out: Path, fd: int) -> None:
    (out / LOCK_NAME).unlink(missing_ok=True)  # while still holding it, so no one locks a deleted file
    os.close(fd)


@contextmanager
def _output_folder(out: Path) -> Iterator[None]:
    """Make ``out`` if needed and hold its lock for the duration. If the body fails, the folders made here
    are removed again when nothing is left in them (the body cleans up its own temporary files first)."""
    created = _make_dirs(out)
    try:
        try:
            fd = _acquire_lock(out)
        except OSError as e:
            if isinstance(e, OutputFolderError):
                raise
            raise _write_failed(e, out / LOCK_NAME, out) from None
        try:
            yield
        except BaseException:  # a second line of defence, should an interruption have cut a cleanup short
            _remove_temporaries(out)  # (while still holding the lock: they are ours)
            raise
        finally:
            _release_lock(out, fd)
    except BaseException:
        _remove_empty(created)
        raise


def _remove_temporaries(out: Path) -> None:
    """Delete this process's temporary outputs and work folder in ``out``."""
    for name in OUTPUTS:
        (out / f"{name}.tmp").unlink(missing_ok=True)
    shutil.rmtree(out / f".prepare-{os.getpid()}", ignore_errors=True)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that cleanup code runs (a KeyboardInterrupt, so libraries that clean
    up after Ctrl-C, as ``datasets.map`` does, clean up after it too)."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


@contextmanager
def _interrupts_clean_up() -> Iterator[None]:
    """For the duration: SIGTERM raises an exception, as Ctrl-C does, so that temporary files and the lock are
    removed. Once one of them has, a second one waits until that cleanup is done (a third interrupts it, should
    it hang). At the end a SIGTERM ends the process as it would have without this (exit status 128 + 15).

    Only in the main thread, and only for signals whose handler is Python's default (a handler the program
    installed is left alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    ours = [s for s, h in defaults.items() if signal.getsignal(s) is h]
    owner, received = os.getpid(), []

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked tokenizing worker: behave as without this handler
            if signum == signal.SIGINT:
                signal.default_int_handler(signum, frame)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received.append(signum)
        if len(received) != 2:  # the first one interrupts; the second waits for its cleanup
            raise KeyboardInterrupt if signum == signal.SIGINT else _Terminated(signum)

    for s in ours:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s in ours:
            signal.signal(s, defaults[s])
        if signal.SIGTERM in received and signal.SIGTERM in ours:  # cleanup done: end as SIGTERM does
            os.kill(os.getpid(), signal.SIGTERM)
            raise SystemExit(128 + signal.SIGTERM)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM back for the few renames that swap the outputs in, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)


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


def _fsync_dir(path: Path) -> None:
    """Make the renames in ``path`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    with _interrupts_clean_up(), _output_folder(out):
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
        # Everything is complete under temporary names: swap it in. From the removal of the old meta.json to
        # the rename of the new one, the folder does not claim to be complete; signals wait for the swap.
        with _signals_deferred():
            writing = out / "meta.json"
            writing.unlink(missing_ok=True)
            for name in OUTPUTS:
                writing = out / name
                os.replace(tmp[name], writing)
        _fsync_dir(out)
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


def _tokenizer_request(tokenizer: str | Tokenizer) -> str:
    """What the caller asked for: a name (the tokenizer then depends only on the source) or a fingerprint."""
    return tokenizer if isinstance(tokenizer, str) else f"fingerprint:{tokenizer.fingerprint}"


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


def _remove_stale_work_dirs(out: Path) -> None:
    """Delete the temporary folders of earlier runs that were killed (their process is gone)."""
    for work in out.glob(".prepare-*"):
        try:
            os.kill(int(work.name.split("-")[1]), 0)  # still running (an older llmlab writing this folder)?
        except (ValueError, ProcessLookupError):
            shutil.rmtree(work, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass


def _split_note(meta: Mapping[str, Any]) -> str:
    return f"split {meta['split']}" + (" (auto)" if meta.get("split_request") == "auto" else "")


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
) -> dict[str, Any]:
    """Source -> ``train.bin``, ``val.bin``, ``tokenizer.json``, ``meta.json`` in ``out_dir``; returns the meta.

    ``tokenizer`` defaults to the default training preset's (:data:`~llmlab.data.sources.DEFAULT_TOKENIZER`,
    "bpe"); ``out_dir`` to :func:`default_data_dir` (``data/<source>_<tokenizer>``). ``split="auto"`` holds
    out whole documents when the source has at least 10 non-empty documents and ``val_fraction`` of them is at
    least one, else the tail of the joined text; meta.json's ``split`` says which was used. An explicit
    ``split="documents"`` or ``"tail"`` forces one (``"documents"`` that would leave val empty is refused).

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
    _check_tokenizer_arg(tokenizer)
    src = resolve_source(source)
    out = Path(out_dir) if out_dir is not None else default_data_dir(src, tokenizer)
    expected = {
        "source": src.spec,
        "source_fingerprint": src.fingerprint(),
        "tokenizer_request": _tokenizer_request(tokenizer),
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
    with _interrupts_clean_up(), _output_folder(out):
        _remove_stale_work_dirs(out)
        work = out / f".prepare-{os.getpid()}"  # same file system as out: cheap, and removed at the end
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
                    _tokens_file=work / "tokens.arrow",
                )
            except OSError as e:  # a full disk while datasets writes its Arrow files into the work folder
                full = e.errno in _DISK_FULL or "no space left" in str(e).lower()
                if not full or isinstance(e, OutputFolderError):
                    raise
                raise _write_failed(e, work, out) from None
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
