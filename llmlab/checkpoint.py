"""Checkpoints: the only module that writes or reads ``*.bin`` training checkpoints.

A checkpoint is a plain dict saved with :func:`torch.save` and read back with ``weights_only=True``, so
loading one never runs code from the file. Keys:

- ``model``       plain ``state_dict`` (GPT-2 names, no ``_orig_mod.`` / ``module.`` prefixes), so the
  manual's snippet works: ``model = GPT(config); model.load_state_dict(torch.load(path)['model'])``
- ``optimizer``   AdamW state, ``config`` (``Config.to_dict()``), ``tokenizer`` (``Tokenizer.to_dict()``)
- ``iter``, ``best_val_loss``, ``rng`` (CPU/CUDA generator states), ``sampler`` (data-sampler state),
  ``data_meta`` (the data's ``meta.json``)

Writes are atomic: the bytes go to a temporary file in the same directory, are fsync'ed, then renamed
over the target. A run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

if TYPE_CHECKING:  # imported lazily at run time: checkpoint.py sits below nothing heavy
    from llmlab.model import GPT
    from llmlab.tokenizers import Tokenizer

__all__ = [
    "BEST_NAME",
    "LAST_NAME",
    "save_checkpoint",
    "load_checkpoint",
    "clean_state_dict",
    "load_model_state",
    "model_from_checkpoint",
    "describe_checkpoint",
]

BEST_NAME = "best_checkpoint.bin"
LAST_NAME = "last_checkpoint.bin"
# Wrappers add these to parameter names: torch.compile (_orig_mod.) and DistributedDataParallel (module.).
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
_REQUIRED_KEYS = ("model", "config")


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain state_dict: wrapper prefixes stripped (repeatedly: compile inside DDP stacks them)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix):], True
        out[name] = tensor
    return out


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same dir, fsync, ``os.replace``)."""
    path = Path(path)
    missing = [k for k in _REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}; a checkpoint needs at least {list(_REQUIRED_KEYS)}.")
    payload = dict(payload)
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
        raise FileNotFoundError(
            f"{path} is a directory, not a checkpoint file; pass a file such as {hint}."
        )
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
    return payload


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
            f"the {source} was made for another architecture: " + " | ".join(parts)
            + ". Build the model from the checkpoint's own config (llmlab.checkpoint.model_from_checkpoint)."
        )
    model.load_state_dict(state)


def model_from_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple["GPT", "Tokenizer", dict[str, Any]]:
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


def describe_checkpoint(payload: Mapping[str, Any]) -> str:
    """A few human-readable lines about a loaded checkpoint (``llmlab info``)."""
    from llmlab.config import Config

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
            import math

            bpb = best / math.log(2) * meta["val_tokens"] / meta["val_bytes"]
            line += f" = {bpb:.3f} bits/byte"
        lines.append(line)
    meta = payload.get("data_meta") or {}
    if meta:
        lines.append(f"data         {meta.get('source', '?')} ({meta.get('train_tokens', '?')} train tokens, "
                     f"split={meta.get('split', '?')})")
    return "\n".join(lines)
