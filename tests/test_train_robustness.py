"""Trainer robustness: a second run into a finished out/, honest NaN messages and advice, Ctrl-C / SIGTERM
between steps, steps too large for the memory or the data, unwritable folders and full disks, and the
extension point for fine-tuning (any data object, starting weights)."""

from __future__ import annotations

import errno
import os
import signal
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from llmlab.callbacks import Callback, StepInfo
from llmlab.checkpoint import CheckpointWriteError, load_checkpoint
from llmlab.config import Config
from llmlab.failures import TrainingError, TrainingInterrupted
from llmlab.model import GPT
from llmlab.tokenizers import get_tokenizer
from llmlab.train import Trainer

TinyConfig = Callable[..., Config]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _nan_at(trainer: Trainer, step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training loss of optimizer step ``step`` (1-based, one micro-batch per step) becomes NaN."""
    real_forward = trainer.raw_model.forward
    calls = {"n": 0}

    def forward(idx: torch.Tensor, targets: torch.Tensor | None = None, **kw: object):  # type: ignore[no-untyped-def]
        logits, loss = real_forward(idx, targets, **kw)
        if targets is not None and trainer.raw_model.training:
            calls["n"] += 1
            if calls["n"] == step:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(trainer.raw_model, "forward", forward)


# ---- a second run into the same out/ --------------------------------------------------------------


def test_a_second_run_into_a_finished_out_dir_is_refused_and_changes_nothing(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    Trainer(tiny_config(max_iters=10), char_data, out, cpu_threads=1).fit()
    before = _files(out)
    with pytest.raises(
        ValueError, match=r"holds a finished run \(step 10 of 10; .*--resume it.*another --out.*--overwrite"
    ):
        Trainer(tiny_config(max_iters=10, seed=7), char_data, out)
    assert _files(out) == before  # best_checkpoint.bin and the rest byte for byte
    # --overwrite replaces the run: the old checkpoints go when fit() starts, not before.
    trainer = Trainer(tiny_config(max_iters=4, eval_interval=100), char_data, out, overwrite=True, cpu_threads=1)
    assert _files(out) == before
    trainer.fit()
    assert load_checkpoint(out / "best_checkpoint.bin")["iter"] == 4
    # A missing or an empty folder is fine; so is continuing the run in it.
    (tmp_path / "empty").mkdir()
    Trainer(tiny_config(), char_data, tmp_path / "empty")
    Trainer(tiny_config(), char_data, tmp_path / "missing" / "deeper")
    assert not (tmp_path / "missing").exists()  # checking the folder creates nothing
    Trainer(tiny_config(max_iters=6), char_data, out, resume=True)


def test_a_stopped_run_is_named_as_such(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    out = tmp_path / "out"

    class Stop(Callback):
        def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
            if info.step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(max_iters=20), char_data, out, callbacks=[Stop()], cpu_threads=1).fit()
    with pytest.raises(ValueError, match=r"holds a stopped run \(step 3 of 20; last_checkpoint.bin\): --resume it"):
        Trainer(tiny_config(max_iters=20), char_data, out)


# ---- NaN: what the checkpoint holds, and advice that helps ----------------------------------------


def test_nan_before_any_checkpoint_says_nothing_of_this_run_was_saved(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    Trainer(tiny_config(max_iters=10), char_data, out, cpu_threads=1).fit()  # an earlier run's checkpoints
    trainer = Trainer(tiny_config(max_iters=30, eval_interval=10), char_data, out, overwrite=True, cpu_threads=1)
    _nan_at(trainer, 5, monkeypatch)
    with pytest.raises(TrainingError) as info:
        trainer.fit()
    message = str(info.value)
    assert "No checkpoint from this run was written: the first comes at step 10" in message
    assert "last good checkpoint" not in message  # the old message pointed at the previous run's model
    assert not (out / "last_checkpoint.bin").exists()  # the replaced run's files are gone, not passed off as ours


def test_nan_after_a_checkpoint_names_this_runs_step(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    trainer = Trainer(tiny_config(max_iters=30, eval_interval=10), char_data, out, cpu_threads=1)
    _nan_at(trainer, 15, monkeypatch)
    with pytest.raises(TrainingError, match=rf"this run's step 10, kept at {out / 'last_checkpoint.bin'}.*--resume"):
        trainer.fit()
    assert load_checkpoint(out / "last_checkpoint.bin")["iter"] == 10


def test_nan_advice_names_the_presets_max_lr(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(tiny_config(max_lr=10.0, min_lr=1.0, max_iters=10), char_data, tmp_path / "out", cpu_threads=1)
    _nan_at(trainer, 3, monkeypatch)
    with pytest.raises(TrainingError) as info:
        trainer.fit()
    message = str(info.value)
    # Not a third of 10 (3.3, which diverges too): the known-good value of the preset this model is closest to.
    assert "cpu_small's default 0.002, a safe choice: --set max_lr=0.002" in message
    assert "3.3" not in message
    # Already at or below the preset's value: then a smaller step down is the advice.
    low = Trainer(tiny_config(max_lr=1e-3, min_lr=1e-4, max_iters=10), char_data, tmp_path / "o2", cpu_threads=1)
    _nan_at(low, 3, monkeypatch)
    with pytest.raises(TrainingError, match=r"already at or below cpu_small's default 0.002: try --set max_lr=0.00033"):
        low.fit()


# ---- Ctrl-C and SIGTERM in-process (real signals; the subprocess tests are in test_interrupt.py) -----


class SendSignal(Callback):
    def __init__(self, at: int, signum: int, times: int = 1) -> None:
        self.at, self.signum, self.times = at, signum, times

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        if info.step == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_between_steps_and_resume_is_exact(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, signum: int
) -> None:
    config = tiny_config(max_iters=20, eval_interval=10)
    full = Trainer(config, char_data, tmp_path / "full", cpu_threads=1).fit()
    out = tmp_path / "stopped"
    handler_before = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted) as stopped:
        Trainer(config, char_data, out, callbacks=[SendSignal(13, signum)], cpu_threads=1).fit()
    assert signal.getsignal(signum) == handler_before  # the process's own handler is back
    name = signal.Signals(signum).name
    assert (stopped.value.step, stopped.value.signal_name, stopped.value.checkpoint) == (
        13,
        name,
        out / "last_checkpoint.bin",
    )
    assert f"interrupted ({name}) at step 13 of 20" in str(stopped.value)
    assert load_checkpoint(out / "last_checkpoint.bin")["iter"] == 13  # not 10: the steps since the eval are kept
    resumed_trainer = Trainer(config, char_data, out, resume=True, cpu_threads=1)
    resumed = resumed_trainer.fit()
    assert any(m.startswith("continuing from step 13 of 20") for m in resumed.messages)
    assert [(s.step, s.loss, s.lr) for s in resumed.steps] == [(s.step, s.loss, s.lr) for s in full.steps]
    assert [(e.step, e.val_loss) for e in resumed.evals] == [(e.step, e.val_loss) for e in full.evals]


def test_a_second_ctrl_c_stops_at_once_without_saving(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted) as stopped:
        Trainer(tiny_config(max_iters=30), char_data, out, callbacks=[SendSignal(13, signal.SIGINT, times=2)]).fit()
    assert stopped.value.checkpoint is None and "nothing new was saved" in str(stopped.value)
    assert f"this run's step 10, kept at {out / 'last_checkpoint.bin'}" in str(stopped.value)
    assert load_checkpoint(out / "last_checkpoint.bin")["iter"] == 10


def test_an_interrupt_in_the_middle_of_a_step_saves_nothing_inexact(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(tiny_config(max_iters=30), char_data, tmp_path / "out", cpu_threads=1)
    real_step = trainer.train_step
    calls = {"n": 0}

    def train_step(lr: float) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # e.g. Ctrl-C outside the main thread, during the backward pass
        return real_step(lr)

    monkeypatch.setattr(trainer, "train_step", train_step)
    with pytest.raises(TrainingInterrupted, match="in the middle of a step: nothing new was saved") as stopped:
        trainer.fit()
    assert stopped.value.checkpoint is None and not (tmp_path / "out" / "last_checkpoint.bin").exists()


# ---- steps that cannot fit: the memory, the data ---------------------------------------------------


def test_a_step_too_large_for_the_memory_is_refused_before_the_model_is_built(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmlab.analysis

    built: list[object] = []
    real_init = GPT.__init__

    def init(self: GPT, *a: object, **k: object) -> None:
        real_init(self, *a, **k)
        if next(self.parameters()).device.type != "meta":  # the estimate itself counts on the meta device
            built.append(self)

    monkeypatch.setattr(GPT, "__init__", init)
    monkeypatch.setattr(llmlab.analysis, "available_memory", lambda device="cpu": 20 * 2**20)  # 20 MiB free
    with pytest.raises(
        MemoryError, match=r"batch_size=4096 .*needs at least .*Try --set batch_size=\d+ grad_accum_steps"
    ):
        Trainer(tiny_config(batch_size=4096), char_data, tmp_path / "out")
    assert not built and not (tmp_path / "out").exists()
    # The bytes per value follow the dtype: 4 for float32, 2 for bfloat16 / float16.
    seen: list[int] = []
    monkeypatch.setattr(llmlab.analysis, "check_step_fits", lambda config, device, bpv: seen.append(bpv))
    Trainer(tiny_config(), char_data, tmp_path / "a")
    Trainer(tiny_config(dtype="bfloat16"), char_data, tmp_path / "b")
    assert seen == [4, 2]


def _small_data(root: Path, chars: int = 3000) -> Path:
    from llmlab import data
    from llmlab.corpus import shakespeare_text

    src = root / "small.txt"
    src.write_text(shakespeare_text()[:chars], encoding="utf-8")
    out = root / "small_char"
    data.prepare(source=str(src), tokenizer="char", out_dir=out, split="tail", val_fraction=0.1, progress=False)
    return out


def test_a_batch_larger_than_a_split_is_refused_with_numbers(tiny_config: TinyConfig, tmp_path: Path) -> None:
    small = _small_data(tmp_path)
    import json

    meta = json.loads((small / "meta.json").read_text())
    train, val = meta["train_tokens"], meta["val_tokens"]
    windows = train - 16
    with pytest.raises(
        ValueError,
        match=rf"batch_size=5000 does not fit the train split: .*train.bin has {train:,} tokens, i.e. {windows:,} "
        rf"windows of block_size\+1 = 17 tokens. To fix it, use --set batch_size={windows}; or prepare more text",
    ):
        Trainer(tiny_config(batch_size=5000), small, tmp_path / "out")
    # The val split is smaller: a batch that fits train but not val is refused too, before training.
    with pytest.raises(
        ValueError,
        match=rf"batch_size={val - 5} does not fit the val split.*use --set batch_size={val - 16}; "
        rf"or use --set block_size=5; or prepare more text \(a larger --val-fraction",
    ):
        Trainer(tiny_config(batch_size=val - 5), small, tmp_path / "out")
    with pytest.raises(ValueError, match=rf"{train:,} tokens, i.e. 0 windows.*use --set block_size={train - 4}"):
        Trainer(tiny_config(block_size=train + 10), small, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- folders that cannot be written, full disks -----------------------------------------------------


def test_an_output_folder_that_cannot_be_created_is_refused_first(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointWriteError, match=r"cannot create the output folder /proc/llmlab-x: .*--out"):
        Trainer(tiny_config(), char_data, "/proc/llmlab-x")
    afile = tmp_path / "afile"
    afile.write_text("notes")
    with pytest.raises(CheckpointWriteError, match="is a file, not a folder"):
        Trainer(tiny_config(), char_data, afile)
    with pytest.raises(CheckpointWriteError, match=f"{afile} is a file"):
        Trainer(tiny_config(), char_data, afile / "run")
    assert afile.read_text() == "notes"


@pytest.mark.parametrize(
    "code, says",
    [(errno.ENOSPC, "the disk is full.*free some space"), (errno.EACCES, "the folder is not writable.*--out")],
    ids=["ENOSPC", "EACCES"],
)
def test_a_full_disk_while_checkpointing_stops_with_the_previous_checkpoint_intact(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, says: str
) -> None:
    out = tmp_path / "out"
    saved: list[int] = []

    class AfterFirstSave(Callback):
        def on_eval(self, trainer: Trainer, info: Any) -> None:
            if info.step == 10:
                saved.append(1)
                real_save = torch.save

                def failing_save(obj: object, f: Any, *a: object, **k: object) -> None:
                    real_save({"partial": torch.zeros(100)}, f)  # some bytes reach the temp file first
                    raise OSError(code, os.strerror(code))

                monkeypatch.setattr(torch, "save", failing_save)

    trainer = Trainer(tiny_config(max_iters=30, eval_interval=10), char_data, out, callbacks=[AfterFirstSave()])
    with pytest.raises(
        CheckpointWriteError, match=rf"could not write the checkpoint {out / 'last_checkpoint.bin'}: {says}"
    ):
        trainer.fit()
    assert saved
    monkeypatch.undo()
    assert load_checkpoint(out / "last_checkpoint.bin")["iter"] == 10  # intact
    assert sorted(p.name for p in out.iterdir()) == ["best_checkpoint.bin", "last_checkpoint.bin"]  # no temp file


def test_a_read_only_folder_fails_at_the_temp_file_with_a_clear_message(
    char_data: Path, tiny_config: TinyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    trainer = Trainer(tiny_config(max_iters=10), char_data, out, cpu_threads=1)

    def read_only(*a: object, **k: object) -> tuple[int, str]:
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(CheckpointWriteError) as info:
        trainer.fit()
    message = str(info.value)
    assert f"could not write the checkpoint {out / 'last_checkpoint.bin'}" in message
    assert "not writable (Read-only file system)" in message and "choose a folder you can write to" in message
    assert not message.startswith("[Errno")


# ---- the extension point: any data object, starting weights ----------------------------------------


class ListSampler:
    """Random windows of a token list, in the protocol's shape."""

    def __init__(self, tokens: torch.Tensor, block_size: int, batch_size: int, seed: int, device: str) -> None:
        self.tokens, self.block_size, self.batch_size, self.seed, self.device = (
            tokens,
            block_size,
            batch_size,
            seed,
            device,
        )
        self.drawn = 0

    def _batch(self, stream: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1000 + stream * 100_000 + index)
        starts = torch.randint(len(self.tokens) - self.block_size, (self.batch_size,), generator=g)
        rows = torch.stack([self.tokens[s : s + self.block_size + 1] for s in starts])  # (B, T+1)
        return rows[:, :-1].to(self.device), rows[:, 1:].to(self.device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.drawn += 1
        return self._batch(0, self.drawn - 1)

    def eval_batches(self, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return (self._batch(1, i) for i in range(n))

    def state_dict(self) -> dict[str, Any]:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.drawn = int(state["drawn"])


class TextData:
    """Training data that is not a prepared folder: a string, tokenized in memory."""

    def __init__(self, text: str, block_size: int) -> None:
        self.tokenizer = get_tokenizer("char", text=text)
        cut = int(len(text) * 0.9)
        self.splits = {
            s: torch.tensor(self.tokenizer.encode(t)) for s, t in (("train", text[:cut]), ("val", text[cut:]))
        }
        self.block_size = block_size
        self.meta = {
            "vocab_size": self.tokenizer.vocab_size,
            "val_tokens": len(self.splits["val"]),
            "val_bytes": len(text[cut:].encode()),
            "source": "in-test text",
        }

    def batches(
        self, split: str, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, device: str = "cpu"
    ) -> ListSampler:
        return ListSampler(self.splits[split], self.block_size, batch_size, seed * world_size + rank, device)


def test_a_data_object_and_starting_weights(tiny_config: TinyConfig, tmp_path: Path) -> None:
    from llmlab.corpus import shakespeare_text

    data = TextData(shakespeare_text()[:20_000], block_size=16)
    config = tiny_config(max_iters=12, eval_interval=6, vocab_size=data.tokenizer.vocab_size)
    torch.manual_seed(123)
    start = GPT(config.model)
    with torch.no_grad():
        start.transformer.wte.weight.mul_(0.5)  # weights no fresh initialisation would give
    start_weights = {k: v.clone() for k, v in start.state_dict().items()}
    trainer = Trainer(config, data, tmp_path / "out", init_model=start, cpu_threads=1)
    assert trainer.raw_model is start and trainer.data_dir is None
    for name, tensor in trainer.raw_model.state_dict().items():
        assert torch.equal(tensor, start_weights[name]), name
    result = trainer.fit()
    assert result.evals[-1].val_loss < result.evals[0].val_loss
    assert not torch.equal(start.state_dict()["transformer.wte.weight"], start_weights["transformer.wte.weight"])
    saved = load_checkpoint(tmp_path / "out" / "last_checkpoint.bin")
    assert saved["data_meta"]["source"] == "in-test text" and saved["tokenizer"]["name"] == "char"
    assert saved["sampler"] == {"drawn": 12}
    # Resume works with a data object too (its sampler position comes back).
    more = Trainer(config.override(max_iters=14), data, tmp_path / "out", resume=True, cpu_threads=1)
    assert more.train_batches.drawn == 12 and more.fit().final_step == 14


def test_starting_weights_must_match_the_config(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(), char_data, tmp_path / "a")
    wider = GPT(trainer.config.model.__class__(**{**vars(trainer.config.model), "embedding_size": 64}))
    with pytest.raises(
        ValueError, match="init_model does not match config.model .*embedding_size: init_model 64, config 32"
    ):
        Trainer(tiny_config(), char_data, tmp_path / "b", init_model=wider)
    same = GPT(trainer.config.model)
    assert Trainer(tiny_config(), char_data, tmp_path / "c", init_model=same).raw_model is same


def test_data_is_given_one_way(char_data: Path, tiny_config: TinyConfig, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(), data=char_data, out_dir=tmp_path / "out")  # the notebooks' call
    assert trainer.data_dir == char_data and trainer.meta["vocab_size"] == trainer.tokenizer.vocab_size
    with pytest.raises(TypeError, match="data_dir"):  # the old alias is gone: one name for one thing
        Trainer(tiny_config(), data_dir=char_data, out_dir=tmp_path / "out")
    with pytest.raises(TypeError, match="data"):
        Trainer(tiny_config(), out_dir=tmp_path / "out")
