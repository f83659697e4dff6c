"""Processing a source with ``datasets``: its documents -> a tokenized ``DatasetDict`` with ``train`` and ``val``.

:func:`load_and_process_dataset` (the manual's first call) loads a source (:mod:`llmlab.data.sources`), chooses
the train / val split, builds the tokenizer from the training text and tokenizes every document with
``datasets.map`` (``num_proc`` processes), attaching llmlab's metadata to the result; :func:`save_processed_dataset`
keeps that dataset on disk. :mod:`llmlab.data.prepare` writes it out as the token files of a prepared folder.

The split is by whole documents (seeded) or, as nanoGPT, by cutting the joined text ("tail"); ``split="auto"``
(the default) picks one from the corpus (:func:`llmlab.data.tokenizing._auto_split`). The per-batch work that
``datasets.map`` runs, and the splitting itself, live in :mod:`llmlab.data.tokenizing`, which needs no
``datasets``; this module drives ``datasets`` with them (imported inside the functions: it is slow to import).

Memory stays bounded however large the corpus: long documents are tokenized in pieces, and the token ids live
in memory-mapped Arrow files that ``datasets`` names by a fingerprint of the text, the tokenizer and the split,
so the same work is reused and other work never is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmlab.corpus import JOIN
from llmlab.data.batches import FORMAT_VERSION, _dtype_for
from llmlab.data.sources import DEFAULT_TOKENIZER, SHAKESPEARE, Source, load_source, resolve_source
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

if TYPE_CHECKING:  # imported where used: datasets is slow to import
    import datasets

__all__ = ["load_and_process_dataset", "save_processed_dataset"]

SPLITS = ("auto", "documents", "tail")
DEFAULT_SEED = 2357  # seed of the train/val document split
MIN_BPE_VOCAB = 257  # the 256 single bytes and <|endoftext|>: a BPE with no merges
BPE_SAMPLE_CHARS = 1 << 20  # tokenizer="bpe" on a user corpus trains on its first million characters
MAP_BATCH_DOCS = 256  # documents per datasets.map batch


def _resolve_tokenizer(
    tokenizer: str | Tokenizer,
    src: Source,
    ds: datasets.Dataset,
    split: str,
    train_texts: Iterator[str],
    vocab_size: int | None = None,
) -> Tokenizer:
    """A Tokenizer for this corpus: "char" from the corpus's own characters, "bpe" trained on the training
    part only (its first million characters; all of it for the embedded corpus) so that the held-out text
    never shapes the vocabulary it is measured with (``vocab_size`` tokens, default 1,024), "gpt2" as is, or the
    instance given."""
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
        return get_tokenizer("bpe", text=("" if split == "tail" else JOIN).join(sample), vocab_size=vocab_size)
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


def _check_tokenizer_arg(tokenizer: str | Tokenizer, vocab_size: int | None = None) -> None:
    """A bad tokenizer name, or a vocabulary size it cannot take, fails before any work (and before any folder
    is made)."""
    if not (isinstance(tokenizer, Tokenizer) or tokenizer in TOKENIZER_NAMES):
        raise invalid("tokenizer", tokenizer, f"use one of {', '.join(TOKENIZER_NAMES)}, or a Tokenizer instance.")
    if vocab_size is None:
        return
    if tokenizer != "bpe":
        fix = "only tokenizer='bpe' is trained to a size; leave vocab_size=None for this tokenizer."
        raise invalid("vocab_size", vocab_size, fix)
    check_int("vocab_size", vocab_size, MIN_BPE_VOCAB, f"use a whole number >= {MIN_BPE_VOCAB} (e.g. 1024 or 4096).")


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
    vocab_size: int | None = None,
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
    that ``llmlab train`` trains on. ``tokenizer="gpt2"`` gives GPT-2's BPE. ``vocab_size`` (``"bpe"`` only)
    trains the BPE to that many tokens instead.
    """
    _check_split_args(split, val_fraction, num_proc)
    _check_tokenizer_arg(tokenizer, vocab_size)
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
            vocab_size,
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
    vocab_size: int | None = None,
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

    tok = _resolve_tokenizer(tokenizer, src, raw, split, _train_texts(raw, val_mask), vocab_size)
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
