"""Checkpoints: the only module that writes or reads ``*.bin`` training checkpoints.

A checkpoint is a plain dict saved with :func:`torch.save` and read back with ``weights_only=True``, so
loading one never runs code from the file. Its keys and its typed form, :class:`TrainingState`, are defined in
:mod:`llmlab.checkpoint_state` (with the file names and :func:`load_model_state`); a Trainer's state goes into one
through ``Trainer.state_dict()`` and back through ``Trainer.load_state_dict()``.

Writes are atomic: the bytes go to a temporary file in the same directory, are fsync'ed, then renamed
over the target. A run killed mid-save leaves the previous checkpoint intact; a full disk or a read-only
folder raises :class:`CheckpointWriteError` (what failed, the path, the fix), with the previous checkpoint
intact and no temporary file left. :func:`check_out_dir` refuses, before training, an output folder that
cannot be written or that holds another run's checkpoints. Reads (:func:`load_checkpoint`,
:func:`load_training_state`, :func:`load_resume_state`, :func:`model_from_checkpoint`) turn every way a file
can be wrong (missing, truncated, not a checkpoint, from a newer llmlab, unsafe objects) into one clear error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmlab.checkpoint_state import (
    _REQUIRED_KEYS,
    BEST_NAME,
    LAST_NAME,
    TrainingState,
    _check_format_version,
    clean_state_dict,
    load_model_state,
)
from llmlab.files import fsync_dir as _fsync_dir
from llmlab.i18n import tr
from llmlab.metrics import bits_per_byte

if TYPE_CHECKING:  # imported lazily at run time: checkpoint.py sits below nothing heavy
    from llmlab.config import ModelConfig
    from llmlab.model import GPT
    from llmlab.tokenizers import Tokenizer

__all__ = [
    "CheckpointWriteError",
    "check_out_dir",
    "save_checkpoint",
    "load_checkpoint",
    "load_training_state",
    "load_resume_state",
    "model_from_checkpoint",
    "describe_checkpoint",
    "resume_state",
]


class CheckpointWriteError(OSError, ValueError):
    """A checkpoint or its folder cannot be written (disk full, read-only folder, no such place); the
    message names the path and the fix. Also a ValueError: the CLI reports it as one line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)  # one argument: str() is the message alone, without "[Errno N]"
        self.errno = code


_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _write_error(error: OSError, path: Path, what: str, size: int = 0) -> CheckpointWriteError:
    """``error`` (from writing ``path``) as one sentence: what failed, why, and what to do."""
    reason = error.strerror or str(error)
    if error.errno in _DISK_FULL:
        need = f" (a checkpoint here needs about {size / 2**20:,.1f} MiB)" if size else ""
        why, fix = "the disk is full", f"free some space{need} or choose a folder on another disk with --out"
    elif error.errno in _NOT_WRITABLE:
        why, fix = (
            "the folder is not writable",
            "choose a folder you can write to with --out, or make this one writable",
        )
    else:
        why, fix = "the system refused the write", "check the disk and the folder, or choose another one with --out"
    kept = f" The previous {path.name} is unchanged." if what == "checkpoint" and path.exists() else ""
    return CheckpointWriteError(
        error.errno or errno.EIO, f"could not write the {what} {path}: {why} ({reason}).{kept} Fix: {fix}."
    )


def check_out_dir(out_dir: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse, before training, an output folder that cannot be written or that holds another run.

    The folder may be missing (it is created when training starts) or empty. One with a
    ``last_checkpoint.bin`` / ``best_checkpoint.bin`` is refused unless the run continues it (``resume``)
    or replaces it (``overwrite``): a second run would silently replace the first one's best checkpoint.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointWriteError(
            errno.ENOTDIR, f"--out {out} is a file, not a folder: choose a folder for the checkpoints, e.g. --out out"
        )
    if not out.exists():
        _probe_folder(out)
    elif not os.access(out, os.W_OK | os.X_OK):
        raise _write_error(PermissionError(errno.EACCES, os.strerror(errno.EACCES)), out, "output folder")
    found = [out / name for name in (LAST_NAME, BEST_NAME) if (out / name).exists()]
    if not found or resume or overwrite:
        return
    what, step = _describe_run(found[0]) if found[0].name == LAST_NAME else (tr("run.finished"), "")
    longer = tr("run.longer") if what == tr("run.finished") else ""
    files = ", ".join(p.name for p in found)
    raise ValueError(tr("error.out_holds_run", out=out, what=what, step=step, files=files, longer=longer))


def _probe_folder(out: Path) -> None:
    """Create ``out`` (and missing parents) and remove them again: can training write there?"""
    missing, existing = [], out
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise CheckpointWriteError(
            errno.ENOTDIR, f"cannot create the output folder {out}: {existing} is a file. Choose another --out."
        )
    try:
        out.mkdir(parents=True)
    except OSError as e:
        raise CheckpointWriteError(
            e.errno or errno.EIO,
            f"cannot create the output folder {out}: {existing} does not accept new folders ({e.strerror or e}). "
            f"Choose a folder you can write to with --out, e.g. --out out/{out.name or 'run'}.",
        ) from None
    finally:
        for folder in missing:  # the deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()


def _describe_run(last: Path) -> tuple[str, str]:
    """("a finished run" or "a stopped run", "step 13 of 30; "), read without loading the tensors."""
    try:
        payload = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        step, max_iters = int(payload["iter"]), int(payload["config"]["train"]["max_iters"])
    except Exception:  # damaged or foreign: the refusal still stands, with less detail
        return tr("run.earlier"), ""
    return tr("run.finished") if step >= max_iters else tr("run.stopped"), tr("run.step_of", step=step, total=max_iters)


def save_checkpoint(path: str | os.PathLike, state: TrainingState | Mapping[str, Any]) -> Path:
    """Write ``state`` (a :class:`TrainingState` or its dict) to ``path`` atomically.

    The bytes go to a temp file in the same directory, are fsync'ed, then ``os.replace`` d over ``path``.
    """
    path = Path(path)
    if not isinstance(state, TrainingState):
        state = TrainingState.from_dict(state, source="checkpoint payload")
    payload = state.to_dict()
    payload["model"] = clean_state_dict(payload["model"])
    size = sum(t.numel() * t.element_size() for t in payload["model"].values() if isinstance(t, torch.Tensor))
    size *= 3 if payload.get("optimizer") else 1  # AdamW keeps two moments per weight
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Leftovers of a save that was killed (SIGKILL, power loss) before its rename: never valid, remove.
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        # Same directory as the target: os.replace is only atomic within one file system.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(e, path, "checkpoint", size) from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as e:
        # Never leave a half-written temp file behind, whatever interrupted us.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(e, OSError) and e.errno is not None:
            raise _write_error(e, path, "checkpoint", size) from None
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", fix: str | Callable[[], str] | None = None
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; every failure is a clear ``ValueError``/``FileNotFoundError``.

    ``fix`` replaces the advice given for a damaged file (the resume path names a flag that helps there): a text,
    or a function that returns one, called only when a message needs it.
    """
    path = Path(path)
    if path.is_dir():
        hint = path / BEST_NAME
        raise FileNotFoundError(f"{path} is a directory, not a checkpoint file; pass a file such as {hint}.")
    if not path.exists():
        there = [p for p in (path.parent / BEST_NAME, path.parent / LAST_NAME) if p.is_file()]
        if there:  # the folder holds a run: name its files (training into it again would be refused)
            advice = f"{path.parent} holds {' and '.join(p.name for p in there)}: pass {there[0]}."
        else:
            advice = f"Train one first (llmlab train --out {path.parent}), or pass an existing {BEST_NAME}/{LAST_NAME}."
        raise FileNotFoundError(f"checkpoint {path} does not exist. {advice}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)

    def advice(default: str) -> str:  # a callable fix is worked out only when a message needs it
        return (fix() if callable(fix) else fix) or default

    damaged = f"Use the other checkpoint ({BEST_NAME}/{LAST_NAME}) or train again."
    # torch.save writes a zip archive: anything else was never a (modern) PyTorch checkpoint.
    if head != b"PK\x03\x04":
        raise ValueError(
            f"{path} is not a PyTorch checkpoint (it does not start with a zip header; first bytes {head!r}). "
            + advice(f"Pass a {BEST_NAME} or {LAST_NAME} written by llmlab.")
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is truncated or corrupt ({size:,} bytes; its zip directory is missing), e.g. a copy or save "
            f"that was cut short. {advice(damaged)}"
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
        raise ValueError(f"{path} is truncated or corrupt ({size:,} bytes): {first}. {advice(damaged)}") from None
    if not isinstance(payload, dict) or not all(k in payload for k in _REQUIRED_KEYS):
        keys = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path} is a PyTorch file but not an llmlab checkpoint: expected a dict with keys "
            f"{list(_REQUIRED_KEYS)}, found {keys}. " + advice(f"Pass a {BEST_NAME} or {LAST_NAME} written by llmlab.")
        )
    _check_format_version(payload, str(path))
    return payload


def load_training_state(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", fix: str | Callable[[], str] | None = None
) -> TrainingState:
    """:func:`load_checkpoint` as a :class:`TrainingState`."""
    return TrainingState.from_dict(load_checkpoint(path, map_location, fix), source=str(path))


def load_resume_state(out_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainingState:
    """The state of the run in ``out_dir`` (its ``last_checkpoint.bin``), for ``--resume`` / ``resume=True``.

    When that file is missing or damaged but ``best_checkpoint.bin`` is there, the message says how to
    continue from the best one instead (``--resume-from``; in Python ``resume=load_training_state(path)``).
    """
    path = Path(out_dir) / LAST_NAME
    best = Path(out_dir) / BEST_NAME

    def instead() -> str:  # read only when something failed; never points at a file that would be refused too
        if best.is_file() and _readable(best):
            return (
                f"Continue from the best checkpoint instead: replace --resume with --resume-from {best} "
                f"(in Python: resume=load_training_state('{best}'))."
            )
        if path.exists():
            return f"Start a fresh run instead: llmlab train --out {out_dir} --overwrite."
        return (
            f"Start a fresh run without --resume (llmlab train --out {out_dir}), or pass the --out directory of "
            f"the earlier run."
        )

    if not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {path}. {instead()}")
    return load_training_state(path, map_location, fix=instead)  # the advice is worked out only if it fails


def _readable(path: Path) -> bool:
    """Whether ``path`` loads as a resumable checkpoint (the check behind a piece of advice)."""
    try:
        return load_training_state(path).optimizer is not None
    except (ValueError, FileNotFoundError, OSError):
        return False


def _weights_only_reason(message: str) -> str:
    # torch's message is long; the line naming the refused global is the useful part.
    for line in message.splitlines():
        line = line.strip()
        # e.g. "Unsupported global: GLOBAL __main__.Foo ..." or "Trying to load unsupported GLOBAL posix.getcwd ..."
        if "GLOBAL" in line or "nsupported" in line:
            return line.removeprefix("WeightsUnpickler error:").split(". Please")[0].strip().rstrip(".")
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return lines[0] if lines else "unsupported content"


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
    try:
        load_model_state(model, payload["model"], source=f"checkpoint {path}")
    except ValueError as e:
        detail = str(e).split(". Build the model")[0]
        raise ValueError(
            f"{path} does not match its own config: {detail}. The file was edited or mixed up with another; use "
            f"another checkpoint or train again."
        ) from None
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


# ---- resuming: the checkpoint a Trainer continues from (capture / restore: llmlab.checkpoint_state) ---


def resume_state(
    resume: bool | TrainingState, out_dir: str | os.PathLike, model_config: ModelConfig, tokenizer: Tokenizer
) -> TrainingState | None:
    """The state a Trainer resumes (``resume=True``: ``out_dir``'s last checkpoint; a TrainingState as is),
    after checking that it fits the model's architecture and the data's tokenizer (None: a fresh run)."""
    if isinstance(resume, TrainingState):
        state = resume
    elif resume:
        state = load_resume_state(out_dir)  # the one place a missing checkpoint is reported
    else:
        return None
    source = state.source or str(Path(out_dir) / LAST_NAME)
    state.check_architecture(model_config, source=source)
    if state.tokenizer is not None:
        from llmlab.tokenizers import tokenizer_from_dict

        saved = tokenizer_from_dict(dict(state.tokenizer))
        if saved.fingerprint != tokenizer.fingerprint:
            raise ValueError(
                f"cannot resume from {source}: it was trained with another tokenizer ({saved.name!r}, fingerprint "
                f"{saved.fingerprint[:12]}) than the data's ({tokenizer.name!r}, {tokenizer.fingerprint[:12]}). "
                f"Resume with the data it was trained on (--data), or start a fresh run in a new --out."
            )
    return state
