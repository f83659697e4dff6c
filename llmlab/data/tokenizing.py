"""Splitting and tokenizing documents: the work that :func:`llmlab.data.prepare` hands to ``datasets``.

- :func:`_pieces`: long texts cut at safe boundaries, so that tokenizing piece by piece (bounded memory)
  gives exactly the tokens of the whole text;
- :func:`_auto_split`: which of the two splits ``split="auto"`` picks for a corpus;
- :func:`_document_val_mask` / :func:`_tail_pieces`: the two train / val splits (seeded whole documents;
  nanoGPT's cut of the joined text);
- :func:`_tokenize_batch`: the ``datasets.map`` function (documents -> token ids as Arrow), run in
  ``num_proc`` worker processes, with :class:`_TokenizerRef` standing for the tokenizer in its arguments.

Nothing here imports ``datasets``: the functions receive its objects from :mod:`llmlab.data.prepare`.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import regex

from llmlab.corpus import JOIN
from llmlab.tokenizers import Tokenizer, tokenizer_from_dict

if TYPE_CHECKING:
    import datasets

PIECE_CHARS = 1 << 20  # long texts are tokenized in pieces of about this many characters (bounded memory)

# A piece boundary is safe where whitespace follows a non-space character: no pre-tokenizer pattern of GPT-2
# style (words, numbers, punctuation runs, whitespace runs) has a match that spans such a point, so
# tokenizing the pieces one by one gives exactly the tokens of the whole text. "Whitespace" must be the
# pre-tokenizer's own: the `regex` module's \s (Unicode White_Space), not `re`'s, which also counts the control
# characters \x1c-\x1f (a cut before one could split a punctuation run the whole text keeps together).
_SAFE_CUT = regex.compile(r"\S(?=\s)")


def _pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` cut at safe boundaries into pieces of about ``size`` characters (or more, if no boundary)."""
    start = 0
    while len(text) - start > size:
        m = _SAFE_CUT.search(text, start + size - 1)
        if m is None:
            break
        yield text[start : m.end()]
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


def _tokenize_batch(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: _TokenizerRef,
    dtype: np.dtype,
    append_eot: bool,
    val_mask: np.ndarray | None,
    piece_chars: int,
) -> Any:
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
    return pa.table(
        {
            "ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)),
            "n_tokens": pa.array(n_tokens),
            "n_bytes": pa.array([_utf8_len(t) for t in texts], type=pa.int64()),
            "is_val": pa.array(is_val, type=pa.bool_()),
        }
    )


def _text_lengths(ds: datasets.Dataset) -> np.ndarray:
    """Characters per document, from Arrow without building Python strings."""
    import pyarrow.compute as pc

    column = ds.with_format("arrow", columns=["text"])
    parts = [pc.utf8_length(t.column("text")).to_numpy(zero_copy_only=False) for t in column.iter(batch_size=1 << 16)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


# split="auto" holds out whole documents only from a corpus of at least this many (non-empty) documents:
# fewer make a val split of one or two whole works, whose loss says more about those works than about the
# model. Below it (a folder of three books, a single file) it cuts the tail of the joined text instead.
AUTO_MIN_DOCUMENTS = 10


def _val_documents(documents: int, val_fraction: float) -> int:
    """How many of ``documents`` non-empty documents split="documents" holds out: round(val_fraction * documents)."""
    return round(documents * val_fraction)


def _auto_split(documents: int, val_fraction: float) -> tuple[str, str]:
    """``(split, why)``: what split="auto" uses for a corpus of ``documents`` non-empty documents.

    The rule: "documents" (seeded whole documents) when there are at least :data:`AUTO_MIN_DOCUMENTS` of them
    and ``val_fraction`` of them rounds to at least one document and leaves at least one for training;
    otherwise "tail" (the last ``val_fraction`` of the joined text), which works for a single document.
    """
    n_val = _val_documents(documents, val_fraction)
    if documents < AUTO_MIN_DOCUMENTS:
        return "tail", f"{documents:,} document(s), fewer than {AUTO_MIN_DOCUMENTS} to hold out whole ones"
    if not 0 < n_val < documents:
        return "tail", f"val_fraction={val_fraction} of {documents:,} documents rounds to {n_val} whole documents"
    return "documents", f"{documents:,} documents, {n_val:,} held out whole"


def _document_val_mask(lengths: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """A seeded choice of round(val_fraction * documents) non-empty documents for val."""
    nonempty = np.flatnonzero(lengths > 0)
    n_val = _val_documents(len(nonempty), val_fraction)
    if n_val == 0 or n_val == len(nonempty):
        side = "val" if n_val == 0 else "train"
        raise ValueError(
            f"val_fraction={val_fraction} of {len(nonempty)} document(s) leaves {side} empty with split='documents'; "
            f"use split='tail' (CLI: --split tail) to hold out the last part of the text, split='auto' to let the "
            f"corpus decide, or give more documents"
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
        flags = batch["is_val"] if val_mask is None else val_mask[index : index + len(batch["text"])]
        index += len(batch["text"])
        yield from (text for text, is_val in zip(batch["text"], flags) if not is_val)
