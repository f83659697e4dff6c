"""Trainer: schedule, device/dtype/compile selection, the loop, checkpoints, and the troubleshooting paths."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmlab import train as train_mod
from llmlab.checkpoint import load_checkpoint
from llmlab.config import TrainConfig
from llmlab.model import GPT
from llmlab.train import (
    Callback,
    EvalInfo,
    MetricsLogger,
    ProgressBar,
    StepInfo,
    Trainer,
    TrainingError,
    bits_per_byte,
    lr_at,
    select_device,
    select_dtype,
    should_compile,
)
from test_train_support import make_data, tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("data"))


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


def test_bits_per_byte() -> None:
    # 1 nat/token, 2 tokens per 3 bytes -> (1 / ln 2) * 2 / 3 bits per byte.
    assert bits_per_byte(1.0, 200, 300) == pytest.approx(2 / (3 * math.log(2)))
    with pytest.raises(ValueError, match="bytes"):
        bits_per_byte(1.0, 10, 0)


# ---- device / dtype / compile --------------------------------------------------------------------


def test_select_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_mod, "_mps_available", lambda: False)
    assert select_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="device='cuda'.*(no CUDA support|sees no GPU)"):
        select_device("cuda")
    with pytest.raises(ValueError, match="mps"):
        select_device("mps")
    monkeypatch.setattr(train_mod, "_mps_available", lambda: True)
    assert select_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto").type == "cuda"
    assert select_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="only 2 CUDA"):
        select_device("cuda:2")
    assert select_device("cpu").type == "cpu"


def test_explain_cpu_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    msg = train_mod.explain_device(torch.device("cpu"))
    assert "Training on CPU" in msg and "no CUDA support" in msg and "CUDA build" in msg
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    assert "sees no GPU" in train_mod.explain_device(torch.device("cpu"))


def test_select_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert select_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert select_dtype("auto", cuda) == torch.float16  # pre-Ampere GPUs: fp16 + GradScaler
    assert select_dtype("auto", cpu) == torch.float32
    assert select_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype='fp8'"):
        select_dtype("fp8", cpu)


def test_should_compile() -> None:
    assert should_compile("auto", torch.device("cuda")) is True
    assert should_compile("auto", torch.device("cpu")) is False
    assert should_compile("true", torch.device("cpu")) is True
    assert should_compile("false", torch.device("cuda")) is False


def test_float16_uses_grad_scaler_and_bf16_does_not(data_dir: Path, tmp_path: Path) -> None:
    t16 = Trainer(tiny_config(dtype="float16"), data_dir, tmp_path / "a")
    assert isinstance(t16.scaler, torch.amp.GradScaler)
    tbf = Trainer(tiny_config(dtype="bfloat16"), data_dir, tmp_path / "b")
    assert tbf.scaler is None and tbf.dtype == torch.bfloat16


def test_cpu_optimizer_is_fused_adamw_with_decay_on_matrices_only(data_dir: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(weight_decay=0.1), data_dir, tmp_path / "out")
    opt = trainer.optimizer
    assert isinstance(opt, torch.optim.AdamW) and all(g["fused"] for g in opt.param_groups)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    for p in trainer.raw_model.parameters():
        assert id(p) in (decay if p.dim() >= 2 else no_decay)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)


def test_compile_flag_wraps_model_and_checkpoints_stay_plain(data_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
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
    trainer = Trainer(tiny_config(compile="true", max_iters=10), data_dir, tmp_path / "out")
    assert trainer.compiled and isinstance(trainer.model, Compiled)
    trainer.fit()
    assert calls  # training went through the compiled module
    keys = load_checkpoint(tmp_path / "out" / "last_checkpoint.bin")["model"].keys()
    assert keys == trainer.raw_model.state_dict().keys() and not any("_orig_mod" in k for k in keys)
    assert not Trainer(tiny_config(compile="auto"), data_dir, tmp_path / "o2").compiled  # CPU default: off


def test_thread_tuner_picks_the_faster_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    current = {"n": 2}
    monkeypatch.setattr(torch, "set_num_threads", lambda n: current.update(n=n))
    tuner = train_mod._ThreadTuner(2, period=20, probe=3)

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


def test_cpu_threads_setting(data_dir: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        Trainer(tiny_config(), data_dir, tmp_path / "a", cpu_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="cpu_threads=0"):
        Trainer(tiny_config(), data_dir, tmp_path / "b", cpu_threads=0)


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


def test_fit_trains_evaluates_and_checkpoints(data_dir: Path, tmp_path: Path) -> None:
    rec = Recorder()
    csv_path, jsonl_path = tmp_path / "m.csv", tmp_path / "m.jsonl"
    cfg = tiny_config(max_iters=30, eval_interval=10)
    trainer = Trainer(cfg, data_dir, tmp_path / "out", callbacks=[rec, MetricsLogger(csv_path),
                                                                  MetricsLogger(jsonl_path)])
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
    assert set(last) >= {"model", "optimizer", "config", "tokenizer", "iter", "best_val_loss", "rng", "sampler",
                         "data_meta"}
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


def test_progress_bar_prints_evaluations(data_dir: Path, tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    Trainer(tiny_config(max_iters=10, eval_interval=5), data_dir, tmp_path / "out",
            callbacks=[ProgressBar(file=out)]).fit()
    text = out.getvalue()
    assert "step 5: train" in text and "bits/byte" in text and "10/10" in text
    assert "Training on CPU" in text  # trainer messages go through the bar, not around it


def test_train_step_equals_reference_with_accumulation(data_dir: Path, tmp_path: Path) -> None:
    """One step with 2 micro-batches of 3 == a plain AdamW step on the 6 sequences at once (with clipping)."""
    cfg = tiny_config(batch_size=3, grad_accum_steps=2, grad_clip=0.5, weight_decay=0.1)
    trainer = Trainer(cfg, data_dir, tmp_path / "out")
    reference = copy.deepcopy(trainer.raw_model)
    torch.manual_seed(0)
    xs = torch.randint(0, trainer.config.model.vocab_size, (2, 3, 16))
    ys = torch.randint(0, trainer.config.model.vocab_size, (2, 3, 16))
    batches = iter([(xs[0], ys[0]), (xs[1], ys[1])])
    trainer.train_batches.next = lambda: next(batches)  # type: ignore[method-assign]
    lr = 2e-3
    loss = trainer._train_step(lr)

    # Independent reference: full-batch loss, torch's clip_grad_norm_, AdamW with decay on >= 2-D params.
    x, y = xs.reshape(6, 16), ys.reshape(6, 16)
    logits, _ = reference(x)
    ref_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    ref_loss.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    params = list(reference.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=lr, betas=(cfg.train.beta1, cfg.train.beta2))
    opt.step()
    assert float(loss) == pytest.approx(float(ref_loss.detach()), rel=1e-5)
    for (name, p), q in zip(trainer.raw_model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    assert all(p.grad is None for p in trainer.raw_model.parameters())  # zero_grad(set_to_none=True)


def test_max_seconds_stops_on_wall_clock(data_dir: Path, tmp_path: Path) -> None:
    class Pace(Callback):  # at least 50 ms a step, so the budget spans several steps on any machine
        def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
            time.sleep(0.05)

    tc = tiny_config(max_iters=100_000, max_seconds=2.0, eval_interval=100_000)
    result = Trainer(tc, data_dir, tmp_path / "out", callbacks=[Pace()]).fit()
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


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    trainer = Trainer(tiny_config(max_iters=30, eval_interval=10), data_dir, out)
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


def test_oom_is_retried_with_smaller_micro_batch(data_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(tiny_config(batch_size=8, grad_accum_steps=1, max_iters=4), data_dir, tmp_path / "out")
    monkeypatch.setattr(trainer.raw_model, "forward", _oom_forward(trainer, above=2))
    result = trainer.fit()
    assert result.final_step == 4
    assert (trainer.config.train.batch_size, trainer.config.train.grad_accum_steps) == (2, 4)  # same 8 per step
    assert any("retrying with batch_size=4, grad_accum_steps=2" in m for m in result.messages)
    assert load_checkpoint(tmp_path / "out" / "last_checkpoint.bin")["config"]["train"]["batch_size"] == 2


def test_oom_without_retry_says_what_fits(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(tiny_config(batch_size=6, grad_accum_steps=2), data_dir, tmp_path / "out", oom_retry=False)
    monkeypatch.setattr(trainer.raw_model, "forward", _oom_forward(trainer, above=2))
    with pytest.raises(TrainingError, match=r"out of memory.*batch_size=6, block_size=16, grad_accum_steps=2.*"
                                            r"--set batch_size=3 grad_accum_steps=4"):
        trainer.fit()
    # At batch 1 the only way left is a shorter context or a smaller model.
    t1 = Trainer(tiny_config(batch_size=1), data_dir, tmp_path / "o1")
    monkeypatch.setattr(t1.raw_model, "forward", _oom_forward(t1, above=0))
    with pytest.raises(TrainingError, match="block_size=8.*smaller model"):
        t1.fit()


def test_stuck_val_loss_gives_a_hint(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(tiny_config(max_iters=12, eval_interval=2), data_dir, tmp_path / "out")
    losses = iter([(3.0, 3.0), (2.5, 2.5), (2.6, 2.55), (2.6, 2.52), (2.6, 2.51), (2.6, 2.6), (2.6, 2.6)])
    monkeypatch.setattr(trainer, "evaluate", lambda: next(losses))
    result = trainer.fit()
    hints = [m for m in result.messages if m.startswith("hint:")]
    assert len(hints) == 1 and "not improved for 3 evaluations" in hints[0] and "max_lr" in hints[0]


def test_no_hint_while_improving(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(tiny_config(max_iters=12, eval_interval=2), data_dir, tmp_path / "out")
    losses = iter([(3.0 - 0.1 * i, 3.0 - 0.1 * i) for i in range(7)])
    monkeypatch.setattr(trainer, "evaluate", lambda: next(losses))
    assert not [m for m in trainer.fit().messages if m.startswith("hint:")]


# ---- resume bad inputs --------------------------------------------------------------------------------


def test_resume_without_checkpoint_says_how_to_start_fresh(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no checkpoint to resume from.*without --resume"):
        Trainer(tiny_config(), data_dir, tmp_path / "empty", resume=True)


def test_resume_into_other_architecture_refused_nothing_overwritten(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    Trainer(tiny_config(max_iters=10), data_dir, out).fit()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="another architecture.*embedding_size: checkpoint 32, now 64"):
        Trainer(tiny_config(embedding_size=64, max_iters=20), data_dir, out, resume=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_in_process_continues_where_it_stopped(data_dir: Path, tmp_path: Path) -> None:
    threads = torch.get_num_threads()  # a fixed thread count: bit-exact comparisons need one
    full = Trainer(tiny_config(max_iters=20), data_dir, tmp_path / "full", cpu_threads=threads).fit()
    out = tmp_path / "split"

    class Interrupt(Callback):
        def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
            if info.step == 13:  # after the checkpoint at step 10
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(max_iters=20), data_dir, out, callbacks=[Interrupt()], cpu_threads=threads).fit()
    assert load_checkpoint(out / "last_checkpoint.bin")["iter"] == 10
    resumed = Trainer(tiny_config(max_iters=20), data_dir, out, resume=True, cpu_threads=threads).fit()
    assert [s.step for s in resumed.steps] == list(range(1, 21))  # history carried over
    assert [s.loss for s in resumed.steps] == [s.loss for s in full.steps]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_trains(data_dir: Path, tmp_path: Path) -> None:
    for compile_flag in ("false", "true"):
        cfg = tiny_config(device="cuda", dtype="auto", compile=compile_flag, max_iters=20)
        trainer = Trainer(cfg, data_dir, tmp_path / compile_flag)
        assert trainer.dtype in (torch.bfloat16, torch.float16)
        result = trainer.fit()
        assert result.evals[-1].val_loss < result.evals[0].val_loss
        ck = load_checkpoint(tmp_path / compile_flag / "last_checkpoint.bin")
        assert not any(k.startswith("_orig_mod.") for k in ck["model"])


def test_best_checkpoint_is_written_even_if_training_never_beats_the_untrained_model(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A run whose val loss only rises (too high a learning rate, say) must still leave a best_checkpoint.bin
    # for `llmlab generate`: step 0 (the untrained model, never saved) cannot be "best".
    losses = iter([(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: next(losses))
    result = Trainer(tiny_config(max_iters=20, eval_interval=10), data_dir, tmp_path / "out",
                     cpu_threads=1).fit()
    assert [e.val_loss for e in result.evals] == [1.0, 2.0, 3.0]
    best = load_checkpoint(tmp_path / "out" / "best_checkpoint.bin")
    assert best["iter"] == 10 and best["best_val_loss"] == pytest.approx(2.0)
    assert result.best_val_loss == pytest.approx(2.0)
