"""llmlab: build, train and sample a GPT language model, one idea at a time.

The package is layered in the order the course teaches; a module imports only modules on lower floors
(tests/test_layering.py enforces it, so there are no import cycles):

- floor 0-1 ``validate``, ``config`` (dataclasses, presets), ``corpus`` (embedded Shakespeare),
  ``plots`` (matplotlib figures), ``metrics`` (bits per byte), ``bpe`` (BPE from scratch), ``gpt2_files``
- floor 2   ``tokenizers`` (char, trained BPE, GPT-2 BPE, chat special tokens), ``sampling``, ``muon``,
  ``model_parts``
- floor 3   ``model`` (the GPT with its modern options, KV-cache generation), ``sft``, ``checkpoint_state``
- floor 4   ``analysis``, ``hf`` (GPT-2 <-> transformers), ``checkpoint`` (the only file reader/writer),
  ``runtime`` (device, precision, compile, DDP), ``data.sources``, ``data.tokenizing``, ``data.batches``,
  ``data.outputs``
- floor 5-6 ``data.processing``, ``export``, ``failures``, ``data.prepare``, ``callbacks``
- floor 7-8 ``data``, ``train`` (the Trainer: one loop), ``finetune``
- top       ``widgets`` (notebook panels), ``cli`` (the ``llmlab`` command)

The floors are listed in ``tests/test_layering.py`` and in the README's "Package layout".
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
