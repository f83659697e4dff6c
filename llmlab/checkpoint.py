"""Checkpoints: the only module that writes or reads ``*.bin`` training checkpoints.

A checkpoint is a plain dict saved with :func:`torch.save` and read back with ``weights_only=True``, so
loading one never runs code from the file. :class:`TrainingState` is its typed form (``to_dict`` /
``from_dict``); the keys, all plain values and tensors:

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

Writes are atomic: the bytes go to a temporary file in the same directory, are fsync'ed, then renamed
over the target. A run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmlab.metrics import bits_per_byte

if TYPE_CHECKING:  # imported lazily at run time: checkpoint.py sits below nothing heavy
    from llmlab.config import ModelConfig
    from llmlab.model import GPT
    from llmlab.tokenizers import Tokenizer

__all__ = [
    "BEST_NAME",
    "LAST_NAME",
    "FORMAT_VERSION",
    "ARCH_FIELDS",
    "TrainingState",
    "save_checkpoint",
    "load_checkpoint",
    "load_training_state",
    "load_resume_state",
    "clean_state_dict",
    "load_model_state",
    "model_from_checkpoint",
    "describe_checkpoint",
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
    "tie_embeddings",
    "logit_softcap",
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
    does not know, so a round trip loses nothing.
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

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint dict (what :func:`save_checkpoint` writes); entries that are None are left out."""
        out: dict[str, Any] = {"format_version": self.format_version}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("format_version", "extra") and value is not None:
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
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "format_version"}
        values = {k: v for k, v in payload.items() if k in known and v is not None}
        extra = {k: v for k, v in payload.items() if k not in known and k != "format_version"}
        state = cls(**values, extra=extra, format_version=version)
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


def save_checkpoint(path: str | os.PathLike, state: TrainingState | Mapping[str, Any]) -> Path:
    """Write ``state`` (a :class:`TrainingState` or its dict) to ``path`` atomically.

    The bytes go to a temp file in the same directory, are fsync'ed, then ``os.replace`` d over ``path``.
    """
    path = Path(path)
    if not isinstance(state, TrainingState):
        state = TrainingState.from_dict(state, source="checkpoint payload")
    payload = state.to_dict()
    payload["model"] = clean_state_dict(payload["model"])
    path.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a save that was killed (SIGKILL, power loss) before its rename: never valid, remove.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    # Same directory as the target: os.replace is only atomic within one file system.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        # Never leave a half-written temp file behind, whatever interrupted us.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable (POSIX); not available on Windows, where it is a no-op.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; every failure is a clear ``ValueError``/``FileNotFoundError``."""
    path = Path(path)
    if path.is_dir():
        hint = path / BEST_NAME
        raise FileNotFoundError(f"{path} is a directory, not a checkpoint file; pass a file such as {hint}.")
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist. Train one first (llmlab train --out {path.parent}) "
            f"or pass the path of an existing {BEST_NAME}/{LAST_NAME}."
        )
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive: anything else was never a (modern) PyTorch checkpoint.
    if head != b"PK\x03\x04":
        raise ValueError(
            f"{path} is not a PyTorch checkpoint (it does not start with a zip header; first bytes {head!r}). "
            f"Pass a {BEST_NAME} or {LAST_NAME} written by llmlab."
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is truncated or corrupt ({size:,} bytes; its zip directory is missing), e.g. a copy or save "
            f"that was cut short. Use the other checkpoint ({BEST_NAME}/{LAST_NAME}) or train again."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _weights_only_reason(str(e))
        raise ValueError(
            f"refused to load {path}: it holds Python objects that weights_only=True does not allow "
            f"({reason}). llmlab checkpoints contain only tensors and plain values; load this file only if "
            f"you trust it, and convert it into a plain dict of tensors."
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path} is truncated or corrupt ({size:,} bytes): {first}. Train again or use the other checkpoint."
        ) from None
    if not isinstance(payload, dict) or not all(k in payload for k in _REQUIRED_KEYS):
        keys = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path} is a PyTorch file but not an llmlab checkpoint: expected a dict with keys "
            f"{list(_REQUIRED_KEYS)}, found {keys}."
        )
    _check_format_version(payload, str(path))
    return payload


def load_training_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainingState:
    """:func:`load_checkpoint` as a :class:`TrainingState`."""
    return TrainingState.from_dict(load_checkpoint(path, map_location), source=str(path))


def load_resume_state(out_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainingState:
    """The state of the run in ``out_dir`` (its ``last_checkpoint.bin``), for ``--resume`` / ``resume=True``."""
    path = Path(out_dir) / LAST_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"--resume: no checkpoint to resume from at {path}. Start a fresh run without --resume "
            f"(llmlab train --out {out_dir}), or pass the --out directory of the earlier run."
        )
    return load_training_state(path, map_location)


def _weights_only_reason(message: str) -> str:
    # torch's message is long; the line naming the refused global is the useful part.
    for line in message.splitlines():
        line = line.strip()
        # e.g. "Unsupported global: GLOBAL __main__.Foo ..." or "Trying to load unsupported GLOBAL posix.getcwd ..."
        if "GLOBAL" in line or "nsupported" in line:
            return line.removeprefix("WeightsUnpickler error:").split(". Please")[0].strip().rstrip(".")
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return lines[0] if lines else "unsupported content"


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


def model_from_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer, dict[str, Any]]:
    """Rebuild ``(model in eval mode on device, tokenizer, payload)`` from a checkpoint file."""
    from llmlab.config import Config
    from llmlab.model import GPT
    from llmlab.tokenizers import tokenizer_from_dict

    payload = load_checkpoint(path, map_location="cpu")
    config = Config.from_dict(payload["config"])
    if "tokenizer" not in payload:
        raise ValueError(f"{path} has no tokenizer entry; it was not written by llmlab's trainer.")
    tokenizer = tokenizer_from_dict(payload["tokenizer"])
    model = GPT(config.model)
    load_model_state(model, payload["model"], source=f"checkpoint {path}")
    model.to(device).eval()
    return model, tokenizer, payload


def describe_checkpoint(payload: TrainingState | Mapping[str, Any]) -> str:
    """A few human-readable lines about a loaded checkpoint (``llmlab info``)."""
    from llmlab.config import Config

    if isinstance(payload, TrainingState):
        payload = payload.to_dict()
    config = Config.from_dict(payload["config"])
    m, t = config.model, config.train
    n_params = sum(v.numel() for k, v in payload["model"].items() if k != "lm_head.weight")
    tok = payload.get("tokenizer") or {}
    lines = [
        f"model        GPT depth={m.depth} heads={m.num_heads} embedding={m.embedding_size} "
        f"block={m.block_size} vocab={m.vocab_size} dropout={m.dropout} ({n_params / 1e6:.2f} M parameters)",
        f"tokenizer    {tok.get('name', '?')}",
        f"trained      {payload.get('iter', '?')} steps of max_iters={t.max_iters}, batch {t.batch_size}"
        f" x accum {t.grad_accum_steps}, max_lr={t.max_lr:g}",
    ]
    best = payload.get("best_val_loss")
    if isinstance(best, (int, float)):
        line = f"best val     {best:.4f} nats/token"
        meta = payload.get("data_meta") or {}
        if meta.get("val_bytes") and meta.get("val_tokens"):
            line += f" = {bits_per_byte(best, int(meta['val_tokens']), int(meta['val_bytes'])):.3f} bits/byte"
        lines.append(line)
    meta = payload.get("data_meta") or {}
    if meta:
        lines.append(
            f"data         {meta.get('source', '?')} ({meta.get('train_tokens', '?')} train tokens, "
            f"split={meta.get('split', '?')})"
        )
    return "\n".join(lines)
