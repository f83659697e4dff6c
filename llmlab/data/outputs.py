"""The prepared-data output folder, kept safe to interrupt and to share: what :mod:`llmlab.data.prepare` writes through.

- the folder is made on demand, and a run that fails removes it again if it created it (nothing complete is in
  it): :func:`_output_folder`;
- one writer at a time: a run holds an exclusive lock on ``<out>/.prepare.lock`` while it writes, and a second
  run into the same folder fails at once with :class:`OutputFolderBusyError` (it does not wait). On POSIX the
  lock is an flock, which the OS releases however the process ends; elsewhere an O_EXCL lock file;
- finished outputs are swapped in atomically: each is written under a temporary name (``<name>.tmp``) first;
  once all are complete, :func:`_swap_in` removes the old ``meta.json`` and renames the new files into place,
  ``meta.json`` last, holding Ctrl-C and SIGTERM back meanwhile (:func:`llmlab.signals.signals_deferred`). An
  interrupted or failed run leaves the earlier complete outputs as they were, and never a ``train.bin`` that
  looks complete (``meta.json`` vouches for the other files);
- while a run writes, SIGTERM raises an exception as Ctrl-C does (:func:`llmlab.signals.interrupts_clean_up`), so
  that its temporary files, its work folder (``<out>/.prepare-<pid>``) and the lock are removed;
- an OSError met while writing (a full disk, a read-only folder) becomes one clear :class:`OutputFolderError`
  naming the path and what to do (:func:`_write_failed`).

Nothing here knows about tokens or datasets (the caller names its outputs); it imports only :mod:`llmlab.files` and
:mod:`llmlab.signals`.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from llmlab.files import fsync_dir as _fsync_dir
from llmlab.signals import signals_deferred

try:  # POSIX: the folder lock is an flock, which the OS releases however the process ends
    import fcntl
except ImportError:  # elsewhere: an O_EXCL lock file (a killed run leaves it behind: the message says so)
    fcntl = None

__all__ = ["OutputFolderError", "OutputFolderBusyError", "LOCK_NAME"]

LOCK_NAME = ".prepare.lock"  # in the output folder while a run writes it
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class OutputFolderError(OSError, ValueError):
    """The output folder cannot be written: the disk is full, the folder is read-only, or another prepare is
    writing it. The message names the path and what to do; the earlier outputs in the folder are unchanged.

    Also a ValueError, so that callers that report bad input as one line (the CLI) report this the same way."""


class OutputFolderBusyError(OutputFolderError):
    """Another prepare holds the output folder's lock (``<out>/.prepare.lock``): it is writing there now."""


# --------------------------------------------------------------------------------------------------------
# Errors: one clear sentence for what went wrong while writing
# --------------------------------------------------------------------------------------------------------


def _write_failed(e: OSError, path: Path, out: Path) -> OutputFolderError:
    """One clear sentence for an OSError met while writing ``path`` in ``out``: what failed and what to do."""
    code = e.errno
    if code is None and "no space left" in str(e).lower():  # pyarrow's IO errors carry the text, not the errno
        code = errno.ENOSPC
    if code in _DISK_FULL:
        what, fix = "the disk is full", "free disk space, or choose another output folder on a disk with room"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        what, fix = (
            f"permission denied: {out} is read-only for this user",
            "choose another output folder, or make this one writable",
        )
    else:
        what, fix = (e.strerror or str(e)), "check the disk, or choose another output folder"
    if path.suffix == ".tmp":  # name the output, not its temporary name
        path = path.with_suffix("")
    kept = " (the earlier outputs there are unchanged)" if (out / "meta.json").is_file() else ""
    err = OutputFolderError(f"cannot write {path}: {what}; {fix} (out_dir=..., CLI: --out DIR){kept}")
    err.errno = code
    return err


# --------------------------------------------------------------------------------------------------------
# The folder: made on demand, locked while written, removed again by a run that fails
# --------------------------------------------------------------------------------------------------------


def _make_dirs(out: Path) -> list[Path]:
    """Create ``out`` and its missing parents; returns the folders this call created, outermost first."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(
            f"the output folder {out} is a file, not a folder; choose another output folder "
            f"(out_dir=..., CLI: --out DIR)"
        )
    missing = []
    p = out
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:  # made by another process meanwhile: not ours to remove
                continue
            created.append(d)
    except OSError as e:
        _remove_empty(created)
        raise _write_failed(e, d, d.parent) from None
    return created


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders a failed run created, innermost first, as long as they are empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:  # not empty (another run's files, or outputs): keep it and its parents
            return


def _lock_busy(out: Path, lock: Path, stale_hint: bool) -> OutputFolderBusyError:
    msg = (
        f"another prepare is writing {out} now (it holds the lock {lock}); wait for it to finish and run again, "
        f"or choose another output folder (out_dir=..., CLI: --out DIR)"
    )
    if stale_hint:  # an O_EXCL lock file outlives a killed process
        msg += "; if no prepare is running, the lock was left by a killed run: delete it"
    err = OutputFolderBusyError(msg)
    err.errno = errno.EBUSY
    return err


def _acquire_lock(out: Path) -> int:
    """An exclusive lock on ``out/.prepare.lock``, held through the returned file descriptor."""
    lock = out / LOCK_NAME
    if fcntl is None:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise _lock_busy(out, lock, stale_hint=True) from None
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _lock_busy(out, lock, stale_hint=False) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder before us deletes the file as it lets go: lock the file that is there now
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _release_lock(out: Path, fd: int) -> None:
    (out / LOCK_NAME).unlink(missing_ok=True)  # while still holding it, so no one locks a deleted file
    os.close(fd)


@contextmanager
def _output_folder(out: Path, outputs: Iterable[str]) -> Iterator[None]:
    """Make ``out`` if needed and hold its lock for the duration. If the body fails, the folders made here
    are removed again when nothing is left in them (the body cleans up its own temporary files first; should
    an interruption have cut that short, the temporary files of ``outputs`` and the work folder go here)."""
    created = _make_dirs(out)
    try:
        try:
            fd = _acquire_lock(out)
        except OSError as e:
            if isinstance(e, OutputFolderError):
                raise
            raise _write_failed(e, out / LOCK_NAME, out) from None
        try:
            yield
        except BaseException:  # a second line of defence, should an interruption have cut a cleanup short
            _remove_temporaries(out, outputs)  # (while still holding the lock: they are ours)
            raise
        finally:
            _release_lock(out, fd)
    except BaseException:
        _remove_empty(created)
        raise


def _work_dir(out: Path) -> Path:
    """This process's temporary work folder in ``out`` (same file system as the outputs: cheap to use)."""
    return out / f".prepare-{os.getpid()}"


def _remove_temporaries(out: Path, outputs: Iterable[str]) -> None:
    """Delete this process's temporary outputs and work folder in ``out``."""
    for name in outputs:
        (out / f"{name}.tmp").unlink(missing_ok=True)
    shutil.rmtree(_work_dir(out), ignore_errors=True)


def _remove_stale_work_dirs(out: Path) -> None:
    """Delete the temporary folders of earlier runs that were killed (their process is gone)."""
    for work in out.glob(".prepare-*"):
        try:
            os.kill(int(work.name.split("-")[1]), 0)  # still running (an older llmlab writing this folder)?
        except (ValueError, ProcessLookupError):
            shutil.rmtree(work, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass


# --------------------------------------------------------------------------------------------------------
# The swap: complete outputs renamed into place, meta.json last
# --------------------------------------------------------------------------------------------------------


def _swap_in(tmp: Mapping[str, Path], out: Path) -> None:
    """Rename the complete temporary outputs ``tmp`` (output name -> its temporary file) into place in ``out``.

    In the order of ``tmp``, which ends with ``meta.json``: the old ``meta.json`` is removed first, so from
    then until the rename of the new one the folder does not claim to be complete; signals wait for the swap.
    An OSError is raised as :class:`OutputFolderError` naming the output it failed on."""
    writing = out / "meta.json"
    try:
        with signals_deferred():
            writing.unlink(missing_ok=True)
            for name, path in tmp.items():
                writing = out / name
                os.replace(path, writing)
    except OSError as e:
        raise _write_failed(e, writing, out) from None
    _fsync_dir(out)
