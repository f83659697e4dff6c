"""llmlab: build, train and sample a GPT language model, one idea at a time.

The package reads in the order the course teaches (each module imports only those listed before it):

- ``config``      dataclasses, presets, validation
- ``corpus``      the embedded Shakespeare corpus
- ``tokenizers``  character-level, trained byte-level BPE, GPT-2 BPE (tiktoken)
- ``sampling``    temperature, top-k, top-p
- ``model``       the GPT, from embeddings to logits, with KV-cache generation
- ``data``        any corpus -> tokens -> memmapped train.bin / val.bin, random batches
- ``checkpoint``  atomic save, safe load
- ``hf``          GPT-2 <-> Hugging Face transformers
- ``train``       the Trainer, learning-rate schedule, callbacks, DDP
- ``plots`` / ``widgets`` / ``cli``  figures, notebook panels, the ``llmlab`` command
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from llmlab.config import Config, ModelConfig, TrainConfig, get_preset  # noqa: E402

# Heavier names load on first use, so `import llmlab` stays quick.
_LAZY = {
    "GPT": "llmlab.model",
    "get_tokenizer": "llmlab.tokenizers",
    "load_tokenizer": "llmlab.tokenizers",
    "Trainer": "llmlab.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llmlab' has no attribute {name!r}")


__all__ = ["Config", "ModelConfig", "TrainConfig", "get_preset", *_LAZY]
