"""llmlab.signals: Ctrl-C and SIGTERM taken over under one policy (main thread only; ignored stays ignored)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from llmlab.signals import StopSignals, interrupts_clean_up, signals_deferred, take_over

ROOT = Path(__file__).resolve().parents[1]


def test_stop_signals_ask_once_then_stop_at_once_and_restore_the_handlers() -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first: only recorded, the work goes on
        assert stop.signal_name == "SIGINT" and not stop.forced
        with pytest.raises(KeyboardInterrupt, match="SIGINT again"):
            os.kill(os.getpid(), signal.SIGINT)  # the second: now
        assert stop.forced
    assert signal.getsignal(signal.SIGINT) is before


def test_every_helper_leaves_other_threads_and_ignored_signals_alone() -> None:
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(take_over(lambda s, f: None)))
    thread.start()
    thread.join()
    assert seen == [{}]  # outside the main thread nothing is installed (signal.signal would fail there)
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell does for a background job (`cmd &`)
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        with interrupts_clean_up():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        with signals_deferred():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # ignored, as the parent asked: nothing happens, now or after
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_signals_deferred_delivers_after_the_block_and_interrupts_clean_up_leaves_a_program_handler() -> None:
    events: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            events.append("renamed")  # the block finishes first
    assert events == ["renamed"]
    mine = signal.signal(signal.SIGINT, lambda s, f: events.append("mine"))
    try:
        with interrupts_clean_up():  # a handler the program installed is left alone
            os.kill(os.getpid(), signal.SIGINT)
        assert events == ["renamed", "mine"]
    finally:
        signal.signal(signal.SIGINT, mine)


@pytest.mark.slow
def test_the_signal_tests_pass_when_the_suite_starts_with_sigint_ignored(tmp_path: Path) -> None:
    """A shell starts a background job (`make test &`, nohup) with SIGINT ignored; the suite must not depend on
    it: tests/conftest.py gives SIGINT back its default, so the processes the tests signal react to it."""
    test = "tests/test_data_robustness.py::test_real_signals_leave_nothing_that_looks_complete"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
