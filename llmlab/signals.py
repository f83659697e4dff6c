"""Ctrl-C (SIGINT) and SIGTERM: the one place llmlab takes them over, under one policy.

The policy, for every helper here:

- only the main thread can set signal handlers, so in any other thread nothing changes;
- a signal the parent process set to be ignored stays ignored (a shell starts a background job, ``cmd &``,
  with SIGINT ignored, so that Ctrl-C in the terminal does not reach it; ``nohup`` does the same for SIGHUP);
- the handlers in place before are put back afterwards.

Three uses:

- :class:`StopSignals` (training): the first signal is only recorded, so the loop finishes its step, saves and
  stops; a second one raises KeyboardInterrupt at once.
- :func:`interrupts_clean_up` (data preparation): SIGTERM raises an exception as Ctrl-C does, so temporary
  files and the folder lock are removed, and the process then ends as SIGTERM would have ended it.
- :func:`signals_deferred`: the few renames that must not be cut in two hold both signals back, then deliver
  them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["StopSignals", "interrupts_clean_up", "signals_deferred", "Terminated", "take_over", "give_back"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, Any], None]


def take_over(handler: Handler, only_default: bool = False) -> dict[int, Any]:
    """Install ``handler`` for SIGINT and SIGTERM under the policy above; return what to give back.

    ``only_default``: take a signal only while it has Python's default behaviour (a handler that the program
    installed is left alone).
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    previous: dict[int, Any] = {}
    for number in SIGNALS:
        current = signal.getsignal(number)
        if current == signal.SIG_IGN or (only_default and current is not defaults[number]):
            continue
        with contextlib.suppress(ValueError, OSError):
            previous[number] = signal.signal(number, handler)
    return previous


def give_back(previous: dict[int, Any]) -> None:
    """Put back the handlers that :func:`take_over` replaced."""
    for number, handler in previous.items():
        with contextlib.suppress(ValueError, OSError):
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
    previous.clear()


class StopSignals:
    """While installed, Ctrl-C and SIGTERM ask for a stop instead of killing the work mid-step.

    ``with StopSignals() as stop:`` ... ``if stop.signal_name: ...`` -- the first signal only records its name
    (``"SIGINT"`` / ``"SIGTERM"``), so the loop can finish the step it is in, save, and stop. A second signal
    raises KeyboardInterrupt at once (``forced`` is then True): pressing Ctrl-C twice always stops.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.forced = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def install(self) -> None:
        """Take over SIGINT and SIGTERM (see the module's policy)."""
        if not self._previous:
            self._previous = take_over(self._handle)

    def restore(self) -> None:
        """Give the signals back to the handlers they had before :meth:`install`."""
        give_back(self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            self.forced = True
            raise KeyboardInterrupt(f"{name} again: stopping at once")
        self.signal_name = name


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that cleanup code runs (a KeyboardInterrupt, so libraries that clean
    up after Ctrl-C, as ``datasets.map`` does, clean up after it too)."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


@contextmanager
def interrupts_clean_up() -> Iterator[None]:
    """For the duration: SIGTERM raises an exception, as Ctrl-C does, so that temporary files and the lock are
    removed. Once one of them has, a second one waits until that cleanup is done (a third interrupts it, should
    it hang). At the end a SIGTERM ends the process as it would have without this (exit status 128 + 15).

    Only signals with Python's default behaviour are taken (a handler the program installed is left alone)."""
    owner, received = os.getpid(), []

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked tokenizing worker: behave as without this handler
            if signum == signal.SIGINT:
                signal.default_int_handler(signum, frame)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received.append(signum)
        if len(received) != 2:  # the first one interrupts; the second waits for its cleanup
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)

    previous = take_over(handler, only_default=True)
    took_term = signal.SIGTERM in previous
    try:
        yield
    finally:
        give_back(previous)
        if took_term and signal.SIGTERM in received:  # cleanup done: end as SIGTERM does
            os.kill(os.getpid(), signal.SIGTERM)
            raise SystemExit(128 + signal.SIGTERM)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM back for the duration (a few renames), then deliver them."""
    pending: list[int] = []
    previous = take_over(lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        give_back(previous)
        for number in dict.fromkeys(pending):
            signal.raise_signal(number)
