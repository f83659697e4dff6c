"""What a training checkpoint holds, typed: :class:`TrainingState`, and a Trainer's state in and out of one.

A checkpoint is a plain dict (:mod:`llmlab.checkpoint` saves it with :func:`torch.save` and reads it back with
``weights_only=True``); :class:`TrainingState` is its typed form (``to_dict`` / ``from_dict``). The keys, all
plain values and tensors:

- ``format_version``  this layout's number (:data:`FORMAT_VERSION`); files from before it had none and
  read as version 1. A newer number is refused with a message to upgrade llmlab.
- ``model``           plain ``state_dict`` (GPT-2 names, no ``_orig_mod.`` / ``module.`` prefixes), so the
  manual's snippet works: ``model = GPT(config); model.load_state_dict(torch.load(path)['model'])``
- ``config``          ``Config.to_dict()`` as trained (vocab_size and tokenizer as the data decided)
- ``tokenizer``       ``Tokenizer.to_dict()``; ``data_meta``: the data's ``meta.json``
- ``optimizer``       AdamW ``state_dict``; ``scaler``: the GradScaler's (float16 runs only)
- ``iter``            optimizer steps taken; ``best_val_loss`` (nats/token); ``train_seconds`` (wall clock so far)
- ``rng``             ``{"cpu": ..., "cuda": [...]}`` generator states
- ``sampler``         the training batch stream's position (``TokenBatches.state_dict()``);
  ``sampler_by_rank``: every rank's, under torchrun
- ``history``         ``{"steps": [StepInfo fields...], "evals": [EvalInfo fields...]}`` for a resumed run's curves

Also here: the checkpoint file names (:data:`BEST_NAME`, :data:`LAST_NAME`), :func:`clean_state_dict` and
:func:`load_model_state` (a state_dict into a model, with a clear error). A Trainer's state goes into a
TrainingState through ``Trainer.state_dict()`` and back through ``Trainer.load_state_dict()``. Nothing here
touches a file: :mod:`llmlab.checkpoint` is the only module that writes or reads them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # imported lazily at run time: this module sits below nothing heavy
    from llmlab.config import ModelConfig

__all__ = [
    "BEST_NAME",
    "LAST_NAME",
    "FORMAT_VERSION",
    "ARCH_FIELDS",
    "TrainingState",
    "clean_state_dict",
    "load_model_state",
]

BEST_NAME = "best_checkpoint.bin"
LAST_NAME = "last_checkpoint.bin"
# The checkpoint layout this code writes and the newest it reads. Raise it when a key changes meaning,
# and teach TrainingState.from_dict to read the older numbers.
FORMAT_VERSION = 1
# Wrappers add these to parameter names: torch.compile (_orig_mod.) and DistributedDataParallel (module.).
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
_REQUIRED_KEYS = ("model", "config")
# Settings that change the architecture: a checkpoint can only resume into the same values.
ARCH_FIELDS = (
    "vocab_size",
    "block_size",
    "embedding_size",
    "num_heads",
    "depth",
    "bias",
    "position",
    "norm",
    "qk_norm",
    "activation",
    "mlp",
    "mlp_hidden",
    "tie_embeddings",
    "logit_softcap",
    "unet_skips",
    "value_embeds",
    "vocab_multiple",
)


def _check_format_version(payload: Mapping[str, Any], source: str) -> int:
    version = payload.get("format_version", 1)  # written before versions existed: version 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"{source} has format_version {version!r}, not a version number (1, 2, ...); it was not written by llmlab."
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{source} has checkpoint format_version {version}, but this llmlab reads versions up to "
            f"{FORMAT_VERSION}: it was written by a newer llmlab. Upgrade llmlab (pip install -U llmlab, or "
            f"git pull in its folder) to load it."
        )
    return version


@dataclass
class TrainingState:
    """Everything a training run needs to continue exactly where it stopped: one checkpoint, typed.

    Field names are the checkpoint's keys (see the module docstring); ``extra`` keeps keys this version
    does not know, so a round trip loses nothing. ``source`` (not saved) is where it was read from.
    """

    model: dict[str, torch.Tensor]
    config: dict[str, Any]
    tokenizer: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    iter: int = 0
    best_val_loss: float = float("inf")
    train_seconds: float = 0.0
    rng: dict[str, Any] = field(default_factory=dict)
    sampler: dict[str, Any] | None = None
    sampler_by_rank: list[dict[str, Any]] | None = None
    scaler: dict[str, Any] | None = None
    data_meta: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"steps": [], "evals": []})
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint dict (what :func:`save_checkpoint` writes); entries that are None are left out."""
        out: dict[str, Any] = {"format_version": self.format_version}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("format_version", "extra", "source") and value is not None:
                out[f.name] = value
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], source: str = "checkpoint") -> TrainingState:
        """Read a checkpoint dict (any version this code knows; a missing ``format_version`` is 1)."""
        if not isinstance(payload, Mapping):
            raise ValueError(f"{source} is not a checkpoint dict (found {type(payload).__name__}).")
        version = _check_format_version(payload, source)
        missing = [k for k in _REQUIRED_KEYS if k not in payload]
        if missing:
            raise ValueError(f"{source} lacks {missing}; a checkpoint needs at least {list(_REQUIRED_KEYS)}.")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "format_version", "source"}
        values = {k: v for k, v in payload.items() if k in known and v is not None}
        extra = {k: v for k, v in payload.items() if k not in known and k != "format_version"}
        state = cls(**values, extra=extra, format_version=version, source=source)
        state.iter = int(state.iter)
        state.best_val_loss = float(state.best_val_loss)
        state.train_seconds = float(state.train_seconds)
        return state

    def check_architecture(self, model_config: ModelConfig, source: str = "the checkpoint") -> None:
        """Refuse to resume into a model whose tensor shapes differ from the checkpoint's."""
        from llmlab.config import Config

        saved = Config.from_dict(self.config).model
        diffs = [
            f"{k}: checkpoint {getattr(saved, k)!r}, now {getattr(model_config, k)!r}"
            for k in ARCH_FIELDS
            if getattr(saved, k) != getattr(model_config, k)
        ]
        if diffs:
            raise ValueError(
                f"cannot resume from {source}: it was made for another architecture ({'; '.join(diffs)}). "
                f"Resume with the checkpoint's settings, or start fresh in a new --out directory."
            )


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain state_dict: wrapper prefixes stripped (repeatedly: compile inside DDP stacks them)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        out[name] = tensor
    return out


def load_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``model.load_state_dict`` with a clear error naming the mismatching names and shapes.

    Nothing is copied unless every name and shape matches (the model is left as it was).
    """
    state = clean_state_dict(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{name} {tuple(state[name].shape)} vs {tuple(t.shape)}"
        for name, t in expected.items()
        if name in state and tuple(state[name].shape) != tuple(t.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch (checkpoint vs model): " + "; ".join(wrong[:4]))
        if missing:
            parts.append(f"missing from the {source}: {missing[:4]}")
        if unexpected:
            parts.append(f"not in the model: {unexpected[:4]}")
        raise ValueError(
            f"the {source} was made for another architecture: "
            + " | ".join(parts)
            + ". Build the model from the checkpoint's own config (llmlab.checkpoint.model_from_checkpoint)."
        )
    model.load_state_dict(state)
