"""Practice mode: checks for the pieces a learner writes in the notebooks, one function per piece.

    from llmlab import check
    check.attention_weights(attention_weights)   # ✓ attention_weights: right on 6 cases
    check.progress()                             # which pieces pass, by notebook (also: llmlab progress)

Each check runs the learner's piece on a few small cases against the reference (llmlab's implementation or torch
built-ins), prints one line (a pass, or the likely mistake with a hint, in Japanese with ``LLMLAB_LANG=ja``) and
returns a :class:`Result` (``passed``, ``hint``, ``mistake``). It does not raise: the notebook runs on. Options of
every check: ``show=False`` (print nothing), ``record=False`` (leave the progress file alone), ``strict=True``
(raise :class:`CheckFailed` if it does not pass: for notebooks that check their own solutions). A piece that still
raises ``NotImplementedError`` (a stub) gets "write `name` above, then run this cell". Progress is kept in a local
file (:mod:`llmlab.check.store`), never sent anywhere.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmlab.check.store import NOTEBOOKS, progress_lines

if TYPE_CHECKING:
    from llmlab.check.core import Piece

__all__ = [
    "CheckFailed",
    "Result",
    "practice_edition",
    "pieces",
    "progress",
    # one check per piece, in the notebooks' order
    "merge",
    "bpe_step",
    "bpe_encode",
    "bigram_table",
    "bigram_loss",
    "attention_weights",
    "head",
    "multi_head",
    "multi_head_attention",
    "layer_norm",
    "mlp",
    "block",
    "gpt_forward",
    "get_batch",
    "lr_schedule",
    "estimate_loss",
    "train_step",
    "adamw_step",
    "accumulate_gradients",
    "keep_top_k",
    "keep_top_p",
    "choose",
    "generate",
    "attend_one",
    "rope",
    "rms_norm",
    "newton_schulz_step",
    "newton_schulz",
    "collate",
]

# Each check lives in the module of its notebook, loaded on first use: `llmlab progress` reads only the progress
# file (llmlab.check.store), and a notebook loads the model code its checks need when it first calls one.
_MODULES = {
    "01_tokenization": "tokenization",
    "02_attention": "attention",
    "03_gpt_block": "gpt_block",
    "04_training_loop": "training",
    "04b_optimisation": "optimisation",
    "05_sampling": "sampling",
    "07_modern_gpt": "modern",
    "08_finetuning": "finetuning",
}


def _check_name(piece: str) -> str:
    """The check's name for a piece: the piece's own name, or snake_case for a class (Head -> head)."""
    return {"Head": "head", "MultiHead": "multi_head"}.get(piece, piece)


_CHECKS = {_check_name(name): _MODULES[notebook] for notebook, names in NOTEBOOKS.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _CHECKS:
        return getattr(importlib.import_module(f"llmlab.check.{_CHECKS[name]}"), name)
    if name in ("CheckFailed", "Result", "practice_edition"):
        return getattr(importlib.import_module("llmlab.check.core"), name)
    raise AttributeError(f"module 'llmlab.check' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def pieces() -> dict[str, Piece]:
    """Piece name (what the learner defines) -> its :class:`~llmlab.check.core.Piece`, in the notebooks' order."""
    from llmlab.check.core import REGISTRY

    for module in _MODULES.values():
        importlib.import_module(f"llmlab.check.{module}")
    return {name: REGISTRY[name] for names in NOTEBOOKS.values() for name in names}


def progress() -> None:
    """Print which pieces pass, notebook by notebook (the same lines as ``llmlab progress``)."""
    print("\n".join(progress_lines()))
