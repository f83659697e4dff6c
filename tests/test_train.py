"""Trainer: the schedule, the loop, checkpoints, resume, and the troubleshooting paths (injected failures).

Device / dtype / compile selection is tested in test_runtime.py, the callbacks on their own in test_callbacks.py.
Fixtures (``char_data``, ``tiny_config``) come from conftest.py.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmlab.callbacks import Callback, EvalInfo, MetricsLogger, ProgressBar, StepInfo
from llmlab.checkpoint import load_checkpoint
from llmlab.config import Config, TrainConfig
from llmlab.failures import TrainingError, TrainingInterrupted
from llmlab.metrics import bits_per_byte
from llmlab.model import GPT
from llmlab.schedule import lr_at
from llmlab.train import Trainer

TinyConfig = Callable[..., Config]


# ---- schedule ------------------------------------------------------------------------------------


def test_lr_schedule_matches_formula() -> None:
    tc = TrainConfig(max_lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    # Warmup: linear ramp reaching max_lr at the end of warmup.
    assert lr_at(0, tc) == pytest.approx(1e-3 / 11)
    assert lr_at(9, tc) == pytest.approx(1e-3 * 10 / 11)
    assert lr_at(10, tc) == pytest.approx(1e-3)
    # Cosine: half-way down at the midpoint, min_lr at the end and after.
    assert lr_at(60, tc) == pytest.approx((1e-3 + 1e-4) / 2)
    assert lr_at(35, tc) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi * 0.25)) * 9e-4)
    assert lr_at(110, tc) == pytest.approx(1e-4) and lr_at(500, tc) == pytest.approx(1e-4)
    after = [lr_at(s, tc) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    # A wall-clock budget ends the cosine early when time runs out first.
    assert lr_at(20, tc, time_fraction=0.5) == pytest.approx((1e-3 + 1e-4) / 2)
    assert lr_at(20, tc, time_fraction=1.0) == pytest.approx(1e-4)
    assert lr_at(100, tc, time_fraction=0.0) == pytest.approx(lr_at(100, tc))


def test_wsd_schedule_holds_max_lr_then_decays_linearly_by_steps_or_time() -> None:
    # Warm-up as usual; progress p = (s - 10) / 100; max_lr while p <= 0.7; then a straight line to min_lr at p = 1.
    tc = TrainConfig(max_lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110, schedule="wsd", decay_fraction=0.3)
    assert lr_at(0, tc) == pytest.approx(1e-3 / 11) and lr_at(9, tc) == pytest.approx(1e-3 * 10 / 11)
    assert [lr_at(s, tc) for s in (10, 40, 80)] == pytest.approx([1e-3] * 3)
    assert lr_at(95, tc) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half-way down the decay (p = 0.85)
    assert lr_at(110, tc) == pytest.approx(1e-4) and lr_at(500, tc) == pytest.approx(1e-4)
    # The decay follows the clock when the time runs out first, as the cosine does.
    assert lr_at(20, tc, time_fraction=0.85) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr_at(20, tc, time_fraction=0.5) == pytest.approx(1e-3)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="decay_fraction"):
            TrainConfig(schedule="wsd", decay_fraction=bad)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")


def test_bits_per_byte() -> None:
    # 1 nat/token, 2 tokens per 3 bytes -> (1 / ln 2) * 2 / 3 bits per byte.
    assert bits_per_byte(1.0, 200, 300) == pytest.approx(2 / (3 * math.log(2)))
    with pytest.raises(ValueError, match="bytes"):
        bits_per_byte(1.0, 10, 0)


# ---- the trainer's runtime choices ------------------------------------------------------------------


def test_float16_uses_grad_scaler_and_bf16_does_not(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    t16 = Trainer(tiny_config(dtype="float16"), char_data, tmp_path / "a")
    assert isinstance(t16.scaler, torch.amp.GradScaler)
    tbf = Trainer(tiny_config(dtype="bfloat16"), char_data, tmp_path / "b")
    assert tbf.scaler is None and tbf.dtype == torch.bfloat16


def test_cpu_optimizer_is_fused_adamw_with_decay_on_matrices_only(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path
) -> None:
    trainer = Trainer(tiny_config(weight_decay=0.1), char_data, tmp_path / "out")
    opt = trainer.optimizer
    assert isinstance(opt, torch.optim.AdamW) and all(g["fused"] for g in opt.param_groups)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    for p in trainer.raw_model.parameters():
        assert id(p) in (decay if p.dim() >= 2 else no_decay)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)


def test_compile_flag_wraps_model_and_checkpoints_stay_plain(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for torch.compile with the same visible effect (an `_orig_mod.` wrapper), minus the
    # 40 s compile time: the flag must route training through the wrapper and keep checkpoints plain.
    calls: list[torch.nn.Module] = []

    class Compiled(torch.nn.Module):
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self._orig_mod = module

        def forward(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            calls.append(self)
            return self._orig_mod(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", lambda module, **kw: Compiled(module))
    trainer = Trainer(tiny_config(compile="true", max_iters=10), char_data, tmp_path / "out")
    assert trainer.compiled and isinstance(trainer.model, Compiled)
    trainer.fit()
    assert calls  # training went through the compiled module
    keys = load_checkpoint(tmp_path / "out" / "last_checkpoint.bin")["model"].keys()
    assert keys == trainer.raw_model.state_dict().keys() and not any("_orig_mod" in k for k in keys)
    assert not Trainer(tiny_config(compile="auto"), char_data, tmp_path / "o2").compiled  # CPU default: off


def test_compiled_cpu_steps_equal_eager_steps(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    # compile=true on a CPU really compiles (inductor with its C++ wrapper, runtime.compile_model) and trains
    # the same model: the same losses and weights as eager, step for step, with the modern options on too.
    from llmlab.config import modern_settings

    settings = {**modern_settings(), "max_iters": 3}
    eager = Trainer(tiny_config(**settings), char_data, tmp_path / "eager")
    compiled = Trainer(tiny_config(**settings, compile="true"), char_data, tmp_path / "compiled")
    assert compiled.compiled and compiled.model is not compiled.raw_model
    for _ in range(3):
        a, b = eager.train_step(1e-3), compiled.train_step(1e-3)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(eager.raw_model.named_parameters(), compiled.raw_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


def test_cpu_threads_setting(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        Trainer(tiny_config(), char_data, tmp_path / "a", cpu_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="cpu_threads=0"):
        Trainer(tiny_config(), char_data, tmp_path / "b", cpu_threads=0)


def test_keyword_arguments_add_the_helper_callbacks(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmlab.callbacks import OOMRetry, StuckHint, ThreadTuner

    def kinds(**kw: object) -> list[type]:
        return [type(cb) for cb in Trainer(tiny_config(), char_data, tmp_path / "o", **kw).callbacks]

    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)  # a multi-core CPU: the tuner is worth having
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    assert kinds() == [ThreadTuner, OOMRetry, StuckHint]  # the defaults: today's behaviour in notebooks and CLI
    assert kinds(cpu_threads=2, oom_retry=False, stuck_patience=0) == []
    mine = StuckHint(patience=5)
    trainer = Trainer(tiny_config(), char_data, tmp_path / "o", callbacks=[mine], cpu_threads=1)
    assert trainer.callbacks == [mine, trainer.callbacks[1]] and isinstance(trainer.callbacks[1], OOMRetry)


# ---- the loop --------------------------------------------------------------------------------------


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.steps: list[StepInfo] = []
        self.evals: list[EvalInfo] = []

    def on_train_start(self, trainer: Trainer) -> None:
        self.events.append("start")

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        self.steps.append(info)

    def on_eval(self, trainer: Trainer, info: EvalInfo) -> None:
        self.evals.append(info)

    def on_train_end(self, trainer: Trainer, result: object) -> None:
        self.events.append("end")


def test_fit_trains_evaluates_and_checkpoints(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    rec = Recorder()
    csv_path, jsonl_path = tmp_path / "m.csv", tmp_path / "m.jsonl"
    cfg = tiny_config(max_iters=30, eval_interval=10)
    trainer = Trainer(
        cfg, char_data, tmp_path / "out", callbacks=[rec, MetricsLogger(csv_path), MetricsLogger(jsonl_path)]
    )
    assert trainer.config.model.vocab_size == trainer.tokenizer.vocab_size  # set from the data
    result = trainer.fit()
    assert rec.events == ["start", "end"]
    assert [e.step for e in result.evals] == [0, 10, 20, 30]
    assert [s.step for s in result.steps] == list(range(1, 31))
    assert result.evals[-1].val_loss < result.evals[0].val_loss - 0.3  # it learns
    # bits per byte from the data's own token/byte counts.
    meta = trainer.meta
    for e in result.evals:
        assert e.val_bpb == pytest.approx(e.val_loss / math.log(2) * meta["val_tokens"] / meta["val_bytes"])
    # Checkpoints: last at the final step, best at the lowest val loss; both weights_only-loadable.
    last = load_checkpoint(tmp_path / "out" / "last_checkpoint.bin")
    best = load_checkpoint(tmp_path / "out" / "best_checkpoint.bin")
    assert last["iter"] == 30
    best_eval = min((e for e in result.evals if e.step > 0), key=lambda e: e.val_loss)
    assert best["iter"] == best_eval.step and best["best_val_loss"] == pytest.approx(best_eval.val_loss)
    assert set(last) >= {
        "model",
        "optimizer",
        "config",
        "tokenizer",
        "iter",
        "best_val_loss",
        "rng",
        "sampler",
        "data_meta",
        "format_version",
        "history",
        "train_seconds",
    }
    # The manual's snippet on a real training checkpoint.
    model = GPT(trainer.config.model)
    model.load_state_dict(torch.load(tmp_path / "out" / "best_checkpoint.bin")["model"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model"][name])
    # Metrics files: one row per step and per eval, in both formats, same numbers.
    for path in (csv_path, jsonl_path):
        rows = MetricsLogger.read(path)
        assert sum(r["kind"] == "step" for r in rows) == 30 and sum(r["kind"] == "eval" for r in rows) == 4
        step5 = next(r for r in rows if r["kind"] == "step" and r["step"] == 5)
        assert all(isinstance(r["step"], int) for r in rows)  # not 5.0: a resumed file is rewritten from these
        assert step5["loss"] == pytest.approx(result.steps[4].loss)
    assert result.messages[0].startswith("Training on CPU")  # says where it runs, and why not on a GPU
    with pytest.raises(RuntimeError, match="ran already"):
        trainer.fit()


def test_what_the_data_decides_is_applied_and_said_once(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path
) -> None:
    # The config asks for BPE with 1,024 tokens; the data is character-level: the data wins, in one message.
    cfg = tiny_config(vocab_size=1024, tokenizer="bpe", max_iters=2, eval_interval=2)
    trainer = Trainer(cfg, char_data, tmp_path / "out")
    assert trainer.config.model.vocab_size == trainer.tokenizer.vocab_size and trainer.config.train.tokenizer == "char"
    notes = [m for m in trainer.fit().messages if "the config said" in m]
    assert len(notes) == 1
    assert f"vocab_size={trainer.tokenizer.vocab_size} (the config said 1024)" in notes[0]
    assert "tokenizer='char' (the config said 'bpe')" in notes[0]
    # Nothing to say when the config already matches the data.
    same = Trainer(trainer.config.override(max_iters=2), char_data, tmp_path / "o2").fit()
    assert not [m for m in same.messages if "the config said" in m]


def test_hooks_run_every_step_and_loss_is_reported_at_log_steps(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path
) -> None:
    seen: list[tuple[str, int]] = []

    class Hooks(Callback):
        def on_step_start(self, trainer: Trainer, step: int) -> None:
            seen.append(("start", step))

        def on_step_timed(self, trainer: Trainer, step: int, seconds: float) -> None:
            assert seconds > 0
            seen.append(("timed", step))

        def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
            seen.append(("end", info.step))

    Trainer(tiny_config(max_iters=10, log_interval=5), char_data, tmp_path / "out", callbacks=[Hooks()]).fit()
    assert [s for kind, s in seen if kind == "start"] == list(range(10))
    assert [s for kind, s in seen if kind == "timed"] == list(range(1, 11))
    assert [s for kind, s in seen if kind == "end"] == [5, 10]


def test_progress_bar_prints_evaluations(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    Trainer(
        tiny_config(max_iters=10, eval_interval=5), char_data, tmp_path / "out", callbacks=[ProgressBar(file=out)]
    ).fit()
    text = out.getvalue()
    assert "step 5: train" in text and "bits/byte" in text and "10/10" in text
    assert "Training on CPU" in text  # trainer messages go through the bar, not around it


def test_train_step_equals_reference_with_accumulation(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path
) -> None:
    """One step with 2 micro-batches of 3 == a plain AdamW step on the 6 sequences at once (with clipping)."""
    cfg = tiny_config(batch_size=3, grad_accum_steps=2, grad_clip=0.5, weight_decay=0.1)
    trainer = Trainer(cfg, char_data, tmp_path / "out")
    reference = copy.deepcopy(trainer.raw_model)
    torch.manual_seed(0)
    xs = torch.randint(0, trainer.config.model.vocab_size, (2, 3, 16))
    ys = torch.randint(0, trainer.config.model.vocab_size, (2, 3, 16))
    batches = iter([(xs[0], ys[0]), (xs[1], ys[1])])
    trainer.train_batches.next = lambda: next(batches)  # type: ignore[method-assign]
    lr = 2e-3
    loss = trainer.train_step(lr)

    # Independent reference: full-batch loss, torch's clip_grad_norm_, AdamW with decay on >= 2-D params.
    x, y = xs.reshape(6, 16), ys.reshape(6, 16)
    logits, _ = reference(x)
    ref_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    ref_loss.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    params = list(reference.parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(cfg.train.beta1, cfg.train.beta2),
    )
    opt.step()
    assert float(loss) == pytest.approx(float(ref_loss.detach()), rel=1e-5)
    for (name, p), q in zip(trainer.raw_model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    assert all(p.grad is None for p in trainer.raw_model.parameters())  # zero_grad(set_to_none=True)


def test_max_seconds_stops_on_wall_clock(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    class Pace(Callback):  # at least 50 ms a step, so the budget spans several steps on any machine
        def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
            time.sleep(0.05)

    tc = tiny_config(max_iters=100_000, max_seconds=2.0, eval_interval=100_000)
    result = Trainer(tc, char_data, tmp_path / "out", callbacks=[Pace()]).fit()
    assert result.stop_reason == "max_seconds"
    assert 3 <= result.final_step < 100_000
    assert 2.0 <= result.seconds < 8.0
    assert result.evals[-1].step == result.final_step  # a final evaluation + checkpoint at the stop
    # The cosine followed the time budget down: by steps alone (of 100,000) lr would still be ~max_lr.
    last = result.steps[-1]
    assert last.lr < 0.5 * (tc.train.max_lr + tc.train.min_lr) < lr_at(last.step - 1, tc.train)
    lrs = [s.lr for s in result.steps if s.step > tc.train.warmup_iters]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


# ---- troubleshooting paths (injected failures) -------------------------------------------------------


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    trainer = Trainer(tiny_config(max_iters=30, eval_interval=10), char_data, out)
    real_forward = trainer.raw_model.forward
    calls = {"n": 0}

    def forward(idx: torch.Tensor, targets: torch.Tensor | None = None, **kw: object):  # type: ignore[no-untyped-def]
        logits, loss = real_forward(idx, targets, **kw)
        if targets is not None and trainer.raw_model.training:
            calls["n"] += 1
            if calls["n"] == 15:  # step 15: after the checkpoint at step 10
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(trainer.raw_model, "forward", forward)
    with pytest.raises(TrainingError, match=r"train loss became nan at step 15.*max_lr.*last good checkpoint"):
        trainer.fit()
    assert load_checkpoint(out / "last_checkpoint.bin")["iter"] == 10


def _oom_forward(trainer: Trainer, above: int):  # type: ignore[no-untyped-def]
    real_forward = trainer.raw_model.forward

    def forward(idx: torch.Tensor, targets: torch.Tensor | None = None, **kw: object):  # type: ignore[no-untyped-def]
        if idx.shape[0] > above:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(idx, targets, **kw)

    return forward


def test_oom_is_retried_with_smaller_micro_batch(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(tiny_config(batch_size=8, grad_accum_steps=1, max_iters=4), char_data, tmp_path / "out")
    monkeypatch.setattr(trainer.raw_model, "forward", _oom_forward(trainer, above=2))
    result = trainer.fit()
    assert result.final_step == 4
    assert (trainer.config.train.batch_size, trainer.config.train.grad_accum_steps) == (2, 4)  # same 8 per step
    assert any("retrying with batch_size=4, grad_accum_steps=2" in m for m in result.messages)
    assert load_checkpoint(tmp_path / "out" / "last_checkpoint.bin")["config"]["train"]["batch_size"] == 2


def test_second_oom_continues_the_batch_stream_with_fresh_batches(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the stream used to be reseeded from the run's start after each retry, so after a second
    # out-of-memory error the model trained again on the windows it had seen after the first one.
    trainer = Trainer(tiny_config(batch_size=8, max_iters=12, eval_interval=100), char_data, tmp_path / "out")
    real_forward = trainer.raw_model.forward
    calls = {"n": 0}
    trained: list[torch.Tensor] = []  # every training micro-batch's inputs (B, T), in order

    def forward(idx: torch.Tensor, targets: torch.Tensor | None = None, **kw: object):  # type: ignore[no-untyped-def]
        if targets is not None and trainer.raw_model.training:
            calls["n"] += 1
            if calls["n"] in (3, 10):  # step 2 at batch 8, then step 5 at batch 4
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            trained.append(idx.clone())
        return real_forward(idx, targets, **kw)

    monkeypatch.setattr(trainer.raw_model, "forward", forward)
    result = trainer.fit()
    assert result.final_step == 12 and [len(x) for x in trained[:2]] == [8, 8]
    assert (trainer.config.train.batch_size, trainer.config.train.grad_accum_steps) == (2, 4)
    assert sum(m.startswith("out of memory") for m in result.messages) == 2
    assert [len(x) for x in trained] == [8] * 2 + [4] * 6 + [2] * 28
    # A replayed micro-batch repeats two earlier windows side by side (single 17-character windows do recur
    # by chance in Shakespeare, pairs do not).
    rows = [[tuple(r.tolist()) for r in x] for x in trained]
    earlier_pairs = {(x[i], x[i + 1]) for x in rows[:8] for i in range(len(x) - 1)}
    replayed = [k for k, x in enumerate(rows[8:]) if (x[0], x[1]) in earlier_pairs]
    assert not replayed, f"after the second retry, micro-batches {replayed} replay earlier windows"


def test_an_on_oom_callback_chooses_the_micro_batch(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Quarter(Callback):
        def on_oom(self, trainer: Trainer, error: BaseException) -> int | None:
            return trainer.config.train.batch_size // 4

    trainer = Trainer(
        tiny_config(batch_size=8, max_iters=3), char_data, tmp_path / "out", callbacks=[Quarter()], oom_retry=False
    )
    monkeypatch.setattr(trainer.raw_model, "forward", _oom_forward(trainer, above=2))
    assert trainer.fit().final_step == 3
    assert (trainer.config.train.batch_size, trainer.config.train.grad_accum_steps) == (2, 4)

    class Wrong(Callback):
        def on_oom(self, trainer: Trainer, error: BaseException) -> int | None:
            return 3  # does not divide 8

    bad = Trainer(tiny_config(batch_size=8), char_data, tmp_path / "o2", callbacks=[Wrong()])
    monkeypatch.setattr(bad.raw_model, "forward", _oom_forward(bad, above=2))
    with pytest.raises(ValueError, match="must divide batch_size=8"):
        bad.fit()


def test_oom_without_retry_says_what_fits(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(tiny_config(batch_size=6, grad_accum_steps=2), char_data, tmp_path / "out", oom_retry=False)
    monkeypatch.setattr(trainer.raw_model, "forward", _oom_forward(trainer, above=2))
    with pytest.raises(
        TrainingError,
        match=r"out of memory.*batch_size=6, block_size=16, grad_accum_steps=2.*"
        r"--set batch_size=3 grad_accum_steps=4",
    ):
        trainer.fit()
    # At batch 1 the only way left is a shorter context or a smaller model.
    t1 = Trainer(tiny_config(batch_size=1), char_data, tmp_path / "o1")
    monkeypatch.setattr(t1.raw_model, "forward", _oom_forward(t1, above=0))
    with pytest.raises(TrainingError, match="block_size=8.*smaller model"):
        t1.fit()


def test_stuck_val_loss_gives_a_hint(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(tiny_config(max_iters=12, eval_interval=2), char_data, tmp_path / "out")
    losses = iter([(3.0, 3.0), (2.5, 2.5), (2.6, 2.55), (2.6, 2.52), (2.6, 2.51), (2.6, 2.6), (2.6, 2.6)])
    monkeypatch.setattr(trainer, "evaluate", lambda: next(losses))
    result = trainer.fit()
    hints = [m for m in result.messages if m.startswith("hint:")]
    assert len(hints) == 1 and "less than 0.5% over the last 3" in hints[0] and "max_lr" in hints[0]


def test_no_hint_while_improving(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(tiny_config(max_iters=12, eval_interval=2), char_data, tmp_path / "out")
    losses = iter([(3.0 - 0.1 * i, 3.0 - 0.1 * i) for i in range(7)])
    monkeypatch.setattr(trainer, "evaluate", lambda: next(losses))
    assert not [m for m in trainer.fit().messages if m.startswith("hint:")]


# ---- resume bad inputs --------------------------------------------------------------------------------


def test_resume_from_a_loaded_state_reads_no_file(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmlab.checkpoint import load_resume_state

    out = tmp_path / "out"
    Trainer(tiny_config(max_iters=10), char_data, out, cpu_threads=1).fit()
    state = load_resume_state(out)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the checkpoint was read a second time"))
    resumed = Trainer(tiny_config(max_iters=12), char_data, out, resume=state, cpu_threads=1)
    assert resumed.start_iter == 10 and [e.step for e in resumed.result.evals] == [0, 10]


def test_resume_without_checkpoint_says_how_to_start_fresh(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"no checkpoint to resume from.*without --resume"):
        Trainer(tiny_config(), char_data, tmp_path / "empty", resume=True)


def test_resume_into_other_architecture_refused_nothing_overwritten(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    Trainer(tiny_config(max_iters=10), char_data, out).fit()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="another architecture.*embedding_size: checkpoint 32, now 64"):
        Trainer(tiny_config(embedding_size=64, max_iters=20), char_data, out, resume=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


MODERN = dict(
    position="rope",
    norm="rmsnorm",
    qk_norm=True,
    activation="relu2",
    tie_embeddings=False,
    zero_init=True,
    logit_softcap=15.0,
    optimizer="muon",
    muon_lr=0.02,
    embedding_lr_scale=10.0,
)


@pytest.mark.parametrize("options", [{}, MODERN], ids=["gpt2", "modern+muon"])
def test_resume_in_process_continues_where_it_stopped(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, options: dict
) -> None:
    threads = torch.get_num_threads()  # a fixed thread count: bit-exact comparisons need one
    base = tiny_config
    tiny_config = lambda **kw: base(**options, **kw)  # noqa: E731 - the same settings for all three runs
    full = Trainer(tiny_config(max_iters=20), char_data, tmp_path / "full", cpu_threads=threads).fit()
    out = tmp_path / "split"

    class Interrupt(Callback):
        def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
            if info.step == 13:  # after the checkpoint at step 10
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stopped:  # a Ctrl-C that reaches Python as KeyboardInterrupt
        Trainer(tiny_config(max_iters=20), char_data, out, callbacks=[Interrupt()], cpu_threads=threads).fit()
    # The steps since the last evaluation are kept: the checkpoint holds the interrupted state (was: step 10).
    assert isinstance(stopped.value, TrainingInterrupted) and stopped.value.step == 13
    assert load_checkpoint(out / "last_checkpoint.bin")["iter"] == 13
    resumed = Trainer(tiny_config(max_iters=20), char_data, out, resume=True, cpu_threads=threads).fit()
    assert [s.step for s in resumed.steps] == list(range(1, 21))  # history carried over
    assert [s.loss for s in resumed.steps] == [s.loss for s in full.steps]
    assert [(e.step, e.val_loss) for e in resumed.evals] == [(e.step, e.val_loss) for e in full.evals]
    assert full.evals[-1].val_loss < full.evals[0].val_loss  # and it learns


def test_muon_groups_follow_the_schedule_at_their_own_rate(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path
) -> None:
    trainer = Trainer(tiny_config(**MODERN, max_iters=4), char_data, tmp_path / "out")
    trainer.train_step(1e-3)
    lrs = sorted({g["lr"] for g in trainer.optimizer.param_groups})
    # AdamW at the schedule's rate, the embeddings at 10x, Muon at muon_lr / max_lr = 0.02 / 3e-3 of it
    assert lrs == pytest.approx([1e-3, 1e-3 * 0.02 / 3e-3, 1e-2])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_trains(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    for compile_flag in ("false", "true"):
        cfg = tiny_config(device="cuda", dtype="auto", compile=compile_flag, max_iters=20)
        trainer = Trainer(cfg, char_data, tmp_path / compile_flag)
        assert trainer.dtype in (torch.bfloat16, torch.float16)
        result = trainer.fit()
        assert result.evals[-1].val_loss < result.evals[0].val_loss
        ck = load_checkpoint(tmp_path / compile_flag / "last_checkpoint.bin")
        assert not any(k.startswith("_orig_mod.") for k in ck["model"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_modern_options_train_compile_resume_and_cache(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path
) -> None:
    # Issue 10: every modern option (and Muon) works on CUDA with bf16/fp16 autocast, with and without compile,
    # resumes, and its KV-cache decoding agrees with a full forward on the GPU.
    from llmlab.checkpoint import model_from_checkpoint
    from llmlab.model import KVCache, MuonWithAdamW

    for compile_flag in ("false", "true"):
        out = tmp_path / compile_flag
        on_gpu = dict(**MODERN, device="cuda", dtype="auto", compile=compile_flag)
        trainer = Trainer(tiny_config(**on_gpu, max_iters=20), char_data, out)
        assert trainer.dtype in (torch.bfloat16, torch.float16)
        assert isinstance(trainer.optimizer, MuonWithAdamW)
        result = trainer.fit()
        assert all(math.isfinite(s.loss) for s in result.steps)
        assert result.evals[-1].val_loss < result.evals[0].val_loss
        resumed = Trainer(tiny_config(**on_gpu, max_iters=30), char_data, out, resume=True).fit()
        assert resumed.final_step == 30 and [s.step for s in resumed.steps][:20] == list(range(1, 21))

        model, _, _ = model_from_checkpoint(out / "last_checkpoint.bin", device="cuda")
        model.double()  # float64: the comparison is exact up to rounding (no TF32, no autocast)
        idx = torch.randint(0, model.config.vocab_size, (2, 10), device="cuda")
        with torch.no_grad():
            full = model.logits(model.hidden_states(idx))[:, -1]  # (B, V): the last position, no cache
            cache = KVCache(model.config, batch_size=2)
            model.hidden_states(idx[:, :-1], cache)  # prefill 9 tokens
            step = model.logits(model.hidden_states(idx[:, -1:], cache))[:, -1]  # the 10th from the cache
        torch.testing.assert_close(step, full, atol=1e-9, rtol=1e-9)


def test_best_checkpoint_is_written_even_if_training_never_beats_the_untrained_model(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run whose val loss only rises (too high a learning rate, say) must still leave a best_checkpoint.bin
    # for `llmlab generate`: step 0 (the untrained model, never saved) cannot be "best".
    losses = iter([(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: next(losses))
    result = Trainer(tiny_config(max_iters=20, eval_interval=10), char_data, tmp_path / "out", cpu_threads=1).fit()
    assert [e.val_loss for e in result.evals] == [1.0, 2.0, 3.0]
    best = load_checkpoint(tmp_path / "out" / "best_checkpoint.bin")
    assert best["iter"] == 10 and best["best_val_loss"] == pytest.approx(2.0)
    assert result.best_val_loss == pytest.approx(2.0)
