"""Reading prepared data at training time: ``meta.json`` checks, the data's tokenizer, random batches.

What a training run needs from a folder written by :func:`llmlab.data.prepare`:

- :func:`load_meta`: ``meta.json``, after checking that ``train.bin`` / ``val.bin`` are there and complete;
- :func:`check_compatible` / :func:`load_tokenizer_for`: the tokenizer that made the data (a model must use it);
- :class:`TokenBatches`: random ``(x, y)`` windows from the memory-mapped token files, reproducible per rank;
- :class:`PreparedData`: the folder in the shape :class:`llmlab.train.Trainer` reads (``meta``, ``tokenizer``,
  ``batches``), which other training data (fine-tuning examples) can take too.

This module imports neither ``datasets`` nor the preparing code: training processes load it without paying
for either. The on-disk format it reads (:data:`FORMAT_VERSION`, :data:`BIN_FILES`, the token dtype) is
defined here, and the writer (:mod:`llmlab.data.prepare`) imports it from here, so both always agree.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from llmlab.i18n import tr
from llmlab.tokenizers import Tokenizer, load_tokenizer, tokenizer_from_dict

if TYPE_CHECKING:
    import torch

    from llmlab.config import (
        Config,  # imported where used: torch is slow to import, and preparing data does not need it
    )

__all__ = [
    "FORMAT_VERSION",
    "BIN_FILES",
    "load_meta",
    "check_compatible",
    "load_tokenizer_for",
    "TokenBatches",
    "PreparedData",
]

FORMAT_VERSION = 1  # of the prepared folder (meta.json + .bin files); bump when their layout changes
BIN_FILES = ("train.bin", "val.bin")


# --------------------------------------------------------------------------------------------------------
# The prepared folder: format, meta.json, tokenizer
# --------------------------------------------------------------------------------------------------------


def _dtype_for(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise ValueError(
        f"vocab_size={vocab_size:,} is too large for the token files: ids are stored as uint32, "
        f"so a vocabulary can have at most 4,294,967,296 token ids (0 to 4,294,967,295); "
        f"use a smaller vocabulary"
    )


def _prepare_command(data_dir: Path) -> str:
    """The exact command that (re)creates ``data_dir``, guessed from its name (data/<source>_<tokenizer>)."""
    stem, _, tok = data_dir.name.rpartition("_")
    args = f"llmlab prepare --out {data_dir}"
    sized = re.fullmatch(r"bpe(\d+)", tok)  # a BPE of another size than 1,024 (default_data_dir's name)
    if sized:
        tok = "bpe"
    if tok in ("char", "bpe", "gpt2"):
        args += f" --tokenizer {tok}" + (f" --vocab-size {sized.group(1)}" if sized else "")
        if stem and stem != "shakespeare":  # the embedded corpus is the default source: no --source needed
            args += " --source PATH_TO_YOUR_CORPUS" if stem != "openwebtext" else " --source openwebtext"
    else:
        args += " [--source PATH] [--tokenizer char|bpe|gpt2]"
    return args


def load_meta(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``data_dir/meta.json`` after checking that the prepared files are there and complete.

    Raises FileNotFoundError naming the path and the ``llmlab prepare`` command that creates it.
    """
    d = Path(data_dir)
    for name in (*BIN_FILES, "meta.json"):
        if not (d / name).is_file():
            what = tr("error.no_data.folder") if not d.is_dir() else tr("error.no_data.file", name=name)
            raise FileNotFoundError(tr("error.no_data", path=d, what=what, command=_prepare_command(d)))
    try:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{d / 'meta.json'} is damaged ({e}); rebuild with: {_prepare_command(d)} --force") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{d / 'meta.json'} has format_version {version!r}, expected {FORMAT_VERSION}; "
            f"rebuild with: {_prepare_command(d)} --force"
        )
    dtype = meta.get("dtype")
    if dtype not in ("uint16", "uint32") or np.dtype(dtype) != _dtype_for(meta.get("vocab_size", 0)):
        raise ValueError(
            f"{d / 'meta.json'}: dtype {meta.get('dtype')!r} does not fit vocab_size "
            f"{meta.get('vocab_size')!r}; rebuild with: {_prepare_command(d)} --force"
        )
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in ("train", "val"):
        size, expected = (d / f"{split}.bin").stat().st_size, meta[f"{split}_tokens"] * itemsize
        if size != expected:
            raise ValueError(
                f"{d / f'{split}.bin'} has {size:,} bytes but meta.json says {meta[f'{split}_tokens']:,} "
                f"{meta['dtype']} tokens ({expected:,} bytes): it is truncated or from another run; "
                f"rebuild with: {_prepare_command(d)} --force"
            )
    return meta


def _fingerprint_of(tokenizer: Tokenizer | Mapping[str, Any] | str) -> tuple[str, str]:
    """(name, fingerprint) of a Tokenizer, a Tokenizer.to_dict() dict, or a fingerprint string."""
    if isinstance(tokenizer, str):
        return "tokenizer", tokenizer
    if isinstance(tokenizer, Mapping):
        tokenizer = tokenizer_from_dict(dict(tokenizer))
    return tokenizer.name, tokenizer.fingerprint


def check_compatible(
    meta: Mapping[str, Any], tokenizer: Tokenizer | Mapping[str, Any] | str, what: str = "the model"
) -> None:
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

_TRAIN_STREAM, _EVAL_STREAM = 0, 1  # batch streams: training draws and the fixed evaluation draws


class TokenBatches:
    """Random windows of ``block_size + 1`` tokens from ``<data_dir>/<split>.bin``, as (x, y) int64 (B, T).

    The file is memory-mapped: only the windows drawn are read. Batch ``k`` of rank ``r`` depends only on
    ``(seed, r, k)`` (a torch.Generator seeded per batch), so the stream is reproducible, distinct per rank,
    and resumes exactly from :meth:`state_dict` — even on another rank, which then continues its own stream.
    On CUDA, batches go through pinned memory with non-blocking copies.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        split: str,
        block_size: int,
        batch_size: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
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
        buf = torch.from_numpy(np.stack([self.data[s : s + T + 1] for s in starts]).astype(np.int64))  # (B, T+1)
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
            x = np.zeros((len(starts[i : i + B]), T), dtype=np.int64)  # (B, T)
            y = np.full_like(x, -1)
            for row, s in enumerate(starts[i : i + B]):
                m = min(T, n_targets - s)
                x[row, :m] = self.data[s : s + m]
                y[row, :m] = self.data[s + 1 : s + m + 1]
            yield self._to_device(torch.from_numpy(x)), self._to_device(torch.from_numpy(y))

    def state_dict(self) -> dict[str, Any]:
        """Plain ints: the position in the stream (and what it was drawn with)."""
        return {
            "step": self.step,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "tokens": len(self.data),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the stream from ``state`` (this sampler keeps its own rank: each rank resumes its stream)."""
        if "step" not in state:
            raise ValueError(f"not a TokenBatches state (keys: {sorted(state)}); pass TokenBatches.state_dict()")
        now = {
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "tokens": len(self.data),
        }
        changed = [k for k, v in now.items() if k in state and state[k] != v]
        if changed:
            warnings.warn(
                f"resuming the batch stream with different {', '.join(changed)}: batches after the resume "
                f"differ from an uninterrupted run",
                stacklevel=2,
            )
        self.seed = int(state.get("seed", self.seed))
        self.step = int(state["step"])


def settings_from_data(
    config: Config, meta: Mapping[str, Any], tokenizer: Tokenizer, where: object
) -> tuple[Config, str]:
    """The data decides ``vocab_size`` and the tokenizer: ``config`` with both applied, and a note (once) where the
    config said otherwise (empty when it did not)."""
    decided: dict[str, Any] = {"vocab_size": int(meta["vocab_size"])}
    if tokenizer.name in ("char", "bpe", "gpt2"):  # a config names a base tokenizer (not e.g. "chat")
        decided["tokenizer"] = tokenizer.name
    asked = {"vocab_size": config.model.vocab_size, "tokenizer": config.train.tokenizer}
    changed = [f"{k}={v!r} (the config said {asked[k]!r})" for k, v in decided.items() if v != asked[k]]
    note = f"note: the data in {where} sets {', '.join(changed)}." if changed else ""
    return config.override(decided), note


class TrainingData(Protocol):
    """What :class:`llmlab.train.Trainer` trains on: a prepared folder (:class:`PreparedData`), or any object with
    these three members (e.g. :class:`llmlab.finetune.FineTuneData`).

    - ``meta``: a mapping with ``vocab_size`` (it sets the model's), ``val_tokens`` and ``val_bytes`` (val loss ->
      bits per byte); saved in checkpoints as ``data_meta``;
    - ``tokenizer``: a :class:`~llmlab.tokenizers.Tokenizer` (saved in checkpoints);
    - ``batches(split, batch_size, seed, rank, world_size, device)``: a sampler for ``"train"`` / ``"val"`` with
      ``next()`` -> ``(x, y)`` int64 ``(B, T)`` tensors on ``device`` (y = -1 is ignored by the loss),
      ``eval_batches(n)`` (the same n batches at every call) and ``state_dict()`` / ``load_state_dict()``.
    """

    meta: Mapping[str, Any]
    tokenizer: Tokenizer

    def batches(self, split: str, batch_size: int, seed: int, rank: int, world_size: int, device: str) -> Any: ...


class PreparedData:
    """A prepared folder as training data: ``meta`` (its meta.json), ``tokenizer`` (the one that made it) and
    ``batches(split, batch_size, seed, rank, world_size, device)`` -> a :class:`TokenBatches` of
    ``block_size + 1``-token windows. This is the protocol :class:`llmlab.train.Trainer` reads; any object
    with the same three members (e.g. :class:`llmlab.finetune.FineTuneData`) can be trained on instead.
    """

    def __init__(self, data_dir: str | os.PathLike[str], block_size: int) -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size={block_size!r} is not valid: it must be a whole number >= 1")
        self.path = d = Path(data_dir)
        rebuild = f"rebuild the folder with: {_prepare_command(d)} --force"
        try:
            self.meta = load_meta(d)
            missing = [k for k in ("vocab_size", "val_tokens", "val_bytes", "fingerprint") if k not in self.meta]
            if missing:
                raise KeyError(", ".join(missing))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{d / 'meta.json'} is damaged (missing or wrong entry {e}); {rebuild}") from None
        try:
            self.tokenizer = load_tokenizer_for(d)
        except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
            reason = f"missing entry {e}" if isinstance(e, KeyError) else str(e).split(";")[0]
            raise ValueError(f"{d / 'tokenizer.json'} cannot be used with this data ({reason}); {rebuild}") from None
        self.block_size = block_size

    def __repr__(self) -> str:
        return f"PreparedData({str(self.path)!r}, block_size={self.block_size})"

    def batches(
        self,
        split: str,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> TokenBatches:
        """Random windows of ``split``; refuses a batch larger than the split's distinct windows."""
        tokens, T = int(self.meta.get(f"{split}_tokens", 0)), self.block_size
        windows = max(0, tokens - T)  # distinct start positions of a (block_size + 1)-token window
        if isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > windows:
            fixes = [f"use --set batch_size={windows}"] if windows >= 1 else []
            if tokens - batch_size >= 1:
                fixes.append(f"use --set block_size={tokens - batch_size}")
            more = "a larger --val-fraction or corpus" if split == "val" else "a larger corpus"
            fixes.append(f"prepare more text ({more})")
            raise ValueError(
                f"batch_size={batch_size} does not fit the {split} split: {self.path / f'{split}.bin'} has "
                f"{tokens:,} tokens, i.e. {windows:,} windows of block_size+1 = {T + 1} tokens. "
                f"To fix it, {'; or '.join(fixes)}."
            )
        return TokenBatches(self.path, split, T, batch_size, device=device, seed=seed, rank=rank, world_size=world_size)
