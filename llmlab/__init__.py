"""llmlab: build, train and sample a GPT language model, one idea at a time.

The package is layered in the order the course teaches; a module imports only modules on lower floors
(tests/test_layering.py enforces it, so there are no import cycles). The floors are defined once, in
``tests/test_layering.py`` (``FLOORS``); docs/architecture.md shows them with what each module holds (a test
keeps the two equal).
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
