"""The Trainer's contract: what lower floors may read of it (TrainerView), and its state in and out."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from llmlab import runtime
from llmlab.train import Trainer
from llmlab.trainer_view import TrainerView


def test_a_real_trainer_has_everything_the_view_promises(char_data: Path, tiny_config, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(), char_data, tmp_path / "out")
    promised = set(TrainerView.__annotations__) | {"save", "log"}
    missing = sorted(name for name in promised if not hasattr(trainer, name))
    assert not missing, f"TrainerView promises {missing}, which a Trainer lacks"
    assert callable(trainer.save) and callable(trainer.log)


def test_state_dict_then_load_state_dict_continues_the_same_run(char_data: Path, tiny_config, tmp_path: Path) -> None:
    """A fresh Trainer given another's state_dict() takes the next step exactly as the first would have."""
    config = tiny_config(max_iters=6, eval_interval=3)
    first = Trainer(config, char_data, tmp_path / "a", cpu_threads=1)
    for _ in range(3):
        first.train_step(1e-3)
    # A checkpoint is a copy (saved to disk); in memory, state_dict() shares the live tensors, as torch's do.
    state = copy.deepcopy(first.state_dict(3))
    assert state.iter == 3 and state.optimizer is not None and state.sampler is not None

    second = Trainer(config, char_data, tmp_path / "b", cpu_threads=1)
    second.load_state_dict(state)
    assert second.start_iter == 3
    for a, b in zip(first.raw_model.parameters(), second.raw_model.parameters()):
        assert torch.equal(a, b)
    loss_first, loss_second = first.train_step(1e-3), second.train_step(1e-3)  # the same batch and update
    assert torch.equal(loss_first, loss_second)
    for a, b in zip(first.raw_model.parameters(), second.raw_model.parameters()):
        assert torch.equal(a, b)


def test_a_state_without_optimizer_is_refused(char_data: Path, tiny_config, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(), char_data, tmp_path / "out")
    state = trainer.state_dict(0)
    state.optimizer = None
    with pytest.raises(ValueError, match="no optimizer state"):
        Trainer(tiny_config(), char_data, tmp_path / "other").load_state_dict(state)


def test_malloc_tuning_only_in_the_cli_process(char_data: Path, tiny_config, tmp_path: Path, monkeypatch) -> None:
    """glibc's malloc thresholds are process-wide: a notebook's Trainer leaves them alone; `llmlab train` sets them."""
    calls: list[str] = []
    monkeypatch.setattr(runtime, "tune_cpu_allocator", lambda: calls.append("tuned") or True)
    Trainer(tiny_config(max_iters=2), char_data, tmp_path / "nb").fit()
    assert calls == []
    from llmlab.cli import main

    settings = "max_iters=2 block_size=16 embedding_size=32 num_heads=2 depth=2 batch_size=4 eval_interval=2"
    args = ["train", "--data", str(char_data), "--out", str(tmp_path / "cli"), "--quiet"]
    for item in [*settings.split(), "eval_iters=1", "warmup_iters=1", "device=cpu"]:
        args += ["--set", item]
    code = main(args)
    assert code == 0 and calls == ["tuned"]
