"""callbacks.py on its own: the hooks' defaults and the opt-in helpers, against a stand-in trainer.

(The trainer calling them is tested in test_train.py.)
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from llmlab.callbacks import Callback, EvalInfo, MetricsLogger, OOMRetry, StepInfo, StuckHint, ThreadTuner, TrainResult
from llmlab.config import get_preset
from llmlab.failures import divergence_advice, nearest_preset, smaller_batch
from llmlab.runtime import DistInfo


def fake_trainer(
    evals: list[EvalInfo] | None = None, batch_size: int = 8, dist: DistInfo | None = None, device: str = "cpu"
) -> Any:
    """The trainer attributes callbacks read; ``log`` collects messages."""
    messages: list[str] = []
    dist = dist or DistInfo()
    return SimpleNamespace(
        config=get_preset("cpu_small").override(batch_size=batch_size),
        start_iter=0,
        result=TrainResult(evals=evals or []),
        dist=dist,
        device=torch.device(device),
        messages=messages,
        log=messages.append,
    )


def test_base_hooks_do_nothing() -> None:
    cb, trainer = Callback(), fake_trainer()
    assert not cb.all_ranks
    cb.on_train_start(trainer)
    cb.on_step_start(trainer, 0)
    cb.on_step_timed(trainer, 1, 0.1)
    cb.on_step_end(trainer, StepInfo(1, 2.0, 1e-3, 100.0))
    cb.on_eval(trainer, EvalInfo(1, 2.0, 2.0, 1.0))
    assert cb.on_oom(trainer, RuntimeError("oom")) is None  # by default: no retry


def test_thread_tuner_picks_the_faster_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    current = {"n": 2}
    monkeypatch.setattr(torch, "set_num_threads", lambda n: current.update(n=n))
    tuner = ThreadTuner(2, period=20, probe=3)

    def run(steps: int, speed: dict[int, float]) -> None:
        for i in range(10_000):
            if i >= steps and tuner.trying is None:  # stop between probes
                return
            tuner.before_step()
            tuner.after_step(speed[current["n"]])

    run(40, {2: 1.0, 1: 0.3})  # a busy machine: one thread is faster
    assert tuner.current == 1 and current["n"] == 1
    run(40, {2: 0.1, 1: 0.3})  # the machine became idle: back to all threads at the next probe
    assert tuner.current == 2 and current["n"] == 2
    run(60, {2: 0.1, 1: 0.095})  # within 10%: no switch for a marginal gain
    assert tuner.current == 2 and current["n"] == 2


def test_thread_tuner_probes_rarely_on_an_idle_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    current = {"n": 2}
    monkeypatch.setattr(torch, "set_num_threads", lambda n: current.update(n=n))
    tuner = ThreadTuner(2, period=50, probe=3)
    single_thread_steps = 0
    for _ in range(1000):  # idle: one thread is twice as slow, so every probe loses
        tuner.before_step()
        single_thread_steps += current["n"] == 1
        tuner.after_step({2: 0.1, 1: 0.2}[current["n"]])
    # A losing probe ends after one step and the next one waits twice as long: 6 probes, not 19 x 3 steps.
    assert tuner.current == 2 and single_thread_steps <= 8


def test_thread_tuner_through_the_hooks_only_on_a_multithreaded_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    current = {"n": 2}
    monkeypatch.setattr(torch, "get_num_threads", lambda: current["n"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: current.update(n=n))
    assert ThreadTuner.all_ranks  # every torchrun process tunes its own threads

    def drive(tuner: ThreadTuner, trainer: Any, steps: int) -> None:
        tuner.on_train_start(trainer)
        for step in range(steps):
            tuner.on_step_start(trainer, step)
            tuner.on_step_timed(trainer, step + 1, 1.0 if current["n"] == 2 else 0.3)

    tuner = ThreadTuner()
    drive(tuner, fake_trainer(), 20)
    assert tuner.enabled and current["n"] == 1  # the busy-machine case, through the hooks
    current["n"] = 2
    gpu_tuner = ThreadTuner()
    drive(gpu_tuner, fake_trainer(device="cuda"), 20)
    assert not gpu_tuner.enabled and current["n"] == 2
    current["n"] = 1
    one = ThreadTuner()
    drive(one, fake_trainer(), 20)
    assert not one.enabled


def _evals(*val: float, train: float = 2.0) -> list[EvalInfo]:
    return [EvalInfo(10 * i, train, v, v) for i, v in enumerate(val)]


def test_stuck_hint_once_per_run_and_resets_at_the_start() -> None:
    hint = StuckHint(patience=3)
    assert hint.hinted is False  # its state is set up in __init__, not on first use
    trainer = fake_trainer(_evals(3.0, 2.5, 2.55, 2.52, 2.51))
    hint.on_train_start(trainer)
    hint.on_eval(trainer, trainer.result.evals[-1])
    trainer.result.evals.append(EvalInfo(50, 2.0, 2.6, 2.6))
    hint.on_eval(trainer, trainer.result.evals[-1])
    assert len(trainer.messages) == 1 and "less than 0.5% over the last 3 evaluations" in trainer.messages[0]
    assert "max_lr" in trainer.messages[0]  # train loss flat too: a learning-rate / size hint
    hint.on_train_start(trainer)  # the same callback in a new run hints again
    hint.on_eval(trainer, trainer.result.evals[-1])
    assert len(trainer.messages) == 2


def test_stuck_hint_says_overfitting_when_train_loss_still_falls() -> None:
    evals = [EvalInfo(10 * i, 3.0 - 0.3 * i, v, v) for i, v in enumerate([3.0, 2.5, 2.6, 2.6, 2.6])]
    trainer = fake_trainer(evals)
    StuckHint(patience=3).on_eval(trainer, evals[-1])
    assert len(trainer.messages) == 1 and "overfitting" in trainer.messages[0]


def test_stuck_hint_quiet_while_improving_or_switched_off() -> None:
    trainer = fake_trainer(_evals(*(3.0 - 0.1 * i for i in range(8))))
    StuckHint(patience=3).on_eval(trainer, trainer.result.evals[-1])
    flat = fake_trainer(_evals(3.0, 2.5, 2.6, 2.6, 2.6))
    StuckHint(patience=0).on_eval(flat, flat.result.evals[-1])
    assert trainer.messages == [] and flat.messages == []


def _hints(val: list[float], train: list[float] | None = None, patience: int = 3) -> list[str]:
    """The hints StuckHint gives when the evaluations arrive one by one (as in a run)."""
    train = train or [2.0] * len(val)
    evals = [EvalInfo(10 * i, t, v, v) for i, (t, v) in enumerate(zip(train, val))]
    trainer = fake_trainer([])
    hint = StuckHint(patience=patience)
    hint.on_train_start(trainer)
    for e in evals:
        trainer.result.evals.append(e)
        hint.on_eval(trainer, e)
    return trainer.messages


def test_no_hint_while_val_improves_slowly_even_when_train_falls_fast() -> None:
    # The review's case (04b mission 4): val still falling by ~0.1% per evaluation while train loss plunges.
    val = [3.0, 2.5, 2.4, *(2.4 * (1 - 0.001 * i) for i in range(1, 10))]
    train = [3.0 - 0.15 * i for i in range(len(val))]
    assert _hints(val, train) == []
    # Levelling off at its best (within the 1% rise allowed to evaluation noise) is no overfitting either.
    assert _hints([3.0, 2.5, 2.4, 2.41, 2.405, 2.42, 2.41, 2.415], train[:8]) == []


def test_the_overfitting_hint_fires_once_val_has_turned_up() -> None:
    val = [3.0, 2.5, 2.4, 2.38, 2.4, 2.45, 2.52, 2.6]
    train = [3.0, 2.5, 2.35, 2.2, 2.05, 1.9, 1.75, 1.6]
    messages = _hints(val, train)
    assert len(messages) == 1 and "overfitting" in messages[0]
    assert "risen from its best 2.3800 (step 30)" in messages[0] and "step 30, is kept" in messages[0]
    # It fired at the first evaluation more than 1% above the best once 3 evaluations brought no progress:
    assert "to 2.5200 (step 60)" in messages[0]


def test_a_rise_with_train_loss_flat_points_at_the_learning_rate() -> None:
    messages = _hints([3.0, 2.5, 2.4, 2.42, 2.45, 2.6], [3.0, 2.5, 2.4, 2.4, 2.41, 2.42])
    assert len(messages) == 1 and "overfitting" not in messages[0] and "lower max_lr" in messages[0]


def test_a_bad_learning_rate_flat_or_rising_from_the_start_gets_its_own_hint() -> None:
    flat = _hints([3.0, 3.0, 2.999, 3.0, 3.001])
    assert len(flat) == 1 and "stayed flat from the first evaluation" in flat[0]
    assert "too high and too low both stall" in flat[0] and "overfitting" not in flat[0]
    rising = _hints([3.0, 3.1, 3.3, 3.6, 4.0], [3.0, 3.1, 3.3, 3.6, 4.0])
    assert len(rising) == 1 and "rose from the first evaluation" in rising[0] and "lower max_lr" in rising[0]
    assert "not learning" in rising[0] and "overfitting" not in rising[0]


def test_oom_retry_halves_keeping_sequences_per_step() -> None:
    assert [smaller_batch(b) for b in (1, 2, 6, 7, 8, 12)] == [1, 1, 3, 1, 4, 6]
    retry = OOMRetry()
    assert retry.on_oom(fake_trainer(batch_size=8), RuntimeError()) == 4
    assert retry.on_oom(fake_trainer(batch_size=6), RuntimeError()) == 3
    assert retry.on_oom(fake_trainer(batch_size=1), RuntimeError()) is None  # nothing left to halve
    ddp = DistInfo(enabled=True, rank=0, local_rank=0, world_size=2)
    assert retry.on_oom(fake_trainer(batch_size=8, dist=ddp), RuntimeError()) is None  # ranks must stay in step


def test_metrics_logger_rewrites_a_resumed_file(tmp_path: Any) -> None:
    path = tmp_path / "m.csv"
    logger, trainer = MetricsLogger(path), fake_trainer()
    logger.on_train_start(trainer)
    for step in (1, 2, 3):
        logger.on_step_end(trainer, StepInfo(step, 2.0, 1e-3, 10.0))
    logger.on_eval(trainer, EvalInfo(2, 2.0, 2.1, 1.5, is_best=True))
    logger.on_train_end(trainer, TrainResult())
    trainer.start_iter = 2  # resumed from step 2: the interrupted run's step 3 is dropped
    logger.on_train_start(trainer)
    logger.on_step_end(trainer, StepInfo(3, 1.9, 1e-3, 10.0))
    logger.on_train_end(trainer, TrainResult())
    rows = MetricsLogger.read(path)
    assert [(r["kind"], r["step"]) for r in rows] == [("step", 1), ("step", 2), ("eval", 2), ("step", 3)]
    assert rows[-1]["loss"] == pytest.approx(1.9)
    with pytest.raises(ValueError, match=r"\.csv or \.jsonl"):
        MetricsLogger(tmp_path / "m.txt")


def test_divergence_advice_names_a_known_good_max_lr() -> None:
    assert nearest_preset(get_preset("cpu_small").model) == ("cpu_small", 2e-3)
    assert nearest_preset(get_preset("gpt2_124m").model) == ("gpt2_124m", 6e-4)
    assert nearest_preset(get_preset("seed_manual").model) == ("seed_manual", 2.5e-5)
    high = divergence_advice(get_preset("cpu_small").override(max_lr=10.0), float16=False)
    assert high.startswith("Lower max_lr (now 10) to cpu_small's default 0.002, a safe choice: --set max_lr=0.002")
    low = divergence_advice(get_preset("cpu_small").override(max_lr=1e-3, min_lr=1e-4, grad_clip=0.0), float16=True)
    assert "already at or below cpu_small's default 0.002: try --set max_lr=0.00033" in low
    assert "grad_clip=1.0" in low and "bfloat16" in low
