"""Helpers shared by the scripts in bench/: scratch folders, the embedded corpus prepared once, whole-split bits
per byte, the machine's load and a process's peak memory. Scripts import it as ``from common import ...`` (they
put bench/ on ``sys.path`` first)."""

from __future__ import annotations

import os
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from llmlab.config import Config
from llmlab.data import load_meta, prepare
from llmlab.metrics import sequence_bits_per_byte

_SCRATCH = tempfile.TemporaryDirectory(prefix="llmlab_bench_run_")  # checkpoints of bench runs; removed at exit


def scratch_dir() -> Path:
    """A fresh output directory under the run's temporary folder."""
    return Path(tempfile.mkdtemp(dir=_SCRATCH.name))


def prepared(tokenizer: str, split: str = "tail", vocab_size: int | None = None) -> Path:
    """The embedded corpus prepared with ``tokenizer`` (cached in the temp folder between runs); ``vocab_size``
    trains the BPE tokenizer to that many tokens instead of its default 1,024."""
    name = tokenizer if vocab_size is None else f"{tokenizer}{vocab_size}"
    out = Path(tempfile.gettempdir()) / f"llmlab_bench_{name}_{split}"
    prepare(tokenizer=tokenizer, out_dir=out, split=split, val_fraction=0.1, progress=False, vocab_size=vocab_size)
    return out


def prepared_for(config: Config, split: str = "tail") -> Path:
    """The embedded corpus as ``config`` trains on it: its tokenizer, a BPE at its ``vocab_size`` (what
    ``llmlab train`` prepares when no --data is given)."""
    tokenizer = config.train.tokenizer
    return prepared(tokenizer, split, config.model.vocab_size if tokenizer == "bpe" else None)


def full_split_bpb(model: torch.nn.Module, data_dir: Path, config: Config, split: str) -> float:
    """Exact bits per byte of a model over a whole split (the trainer's figure samples windows)."""
    meta = load_meta(data_dir)
    ids = np.memmap(data_dir / f"{split}.bin", dtype=meta["dtype"], mode="r")
    return sequence_bits_per_byte(model, ids, meta[f"{split}_bytes"], config.model.block_size)


def load_note() -> str:
    """The machine's load average: these figures are only comparable on a quiet machine."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return ""
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20
