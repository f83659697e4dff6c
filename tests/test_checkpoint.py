"""Checkpoints: round trip, the versioned TrainingState contract, atomic writes, the manual's load snippet,
and every bad input named in the issue."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
import torch

from llmlab.checkpoint import (
    CheckpointWriteError,
    check_out_dir,
    describe_checkpoint,
    load_checkpoint,
    load_resume_state,
    load_training_state,
    model_from_checkpoint,
    save_checkpoint,
)
from llmlab.checkpoint_state import FORMAT_VERSION, TrainingState, clean_state_dict, load_model_state
from llmlab.config import Config, ModelConfig
from llmlab.model import GPT
from llmlab.tokenizers import get_tokenizer

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


def _payload(embedding_size: int = 32) -> tuple[GPT, dict]:
    tok = get_tokenizer("char", TEXT)
    config = Config(
        model=ModelConfig(vocab_size=tok.vocab_size, block_size=16, embedding_size=embedding_size, num_heads=2, depth=2)
    )
    torch.manual_seed(0)
    model = GPT(config.model)
    payload = {
        "model": model.state_dict(),
        "config": config.to_dict(),
        "tokenizer": tok.to_dict(),
        "iter": 7,
        "best_val_loss": 1.5,
        "rng": {"cpu": torch.get_rng_state()},
    }
    return model, payload


def test_round_trip_and_manual_snippet(tmp_path: Path) -> None:
    model, payload = _payload()
    path = save_checkpoint(tmp_path / "best_checkpoint.bin", payload)
    loaded = load_checkpoint(path)
    assert loaded["iter"] == 7 and loaded["best_val_loss"] == 1.5
    assert torch.equal(loaded["rng"]["cpu"], payload["rng"]["cpu"])
    # The manual's snippet, verbatim apart from the path: plain torch.load (weights_only by default).
    config = Config.from_dict(loaded["config"]).model
    fresh = GPT(config)
    fresh.load_state_dict(torch.load(path)["model"])
    idx = torch.randint(0, config.vocab_size, (2, 16))
    torch.testing.assert_close(fresh(idx)[0], model(idx)[0], rtol=0, atol=0)
    # And the helper that generation/CLI use gives the same model, in eval mode, with the tokenizer.
    rebuilt, tok, _ = model_from_checkpoint(path)
    assert not rebuilt.training and tok.decode(tok.encode("To be")) == "To be"
    torch.testing.assert_close(rebuilt(idx)[0], model(idx)[0], rtol=0, atol=0)
    assert "depth=2" in describe_checkpoint(loaded)


def test_wrapper_prefixes_are_stripped(tmp_path: Path) -> None:
    model, payload = _payload()
    # What torch.compile inside DDP produces: "module._orig_mod.<name>".
    payload["model"] = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    path = save_checkpoint(tmp_path / "c.bin", payload)
    keys = set(torch.load(path)["model"])
    assert keys == set(model.state_dict())
    assert clean_state_dict({"_orig_mod.a": torch.zeros(1)}).keys() == {"a"}


def test_save_is_atomic_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, payload = _payload()
    path = save_checkpoint(tmp_path / "last_checkpoint.bin", payload)
    before = path.read_bytes()

    def broken_save(obj: object, f: object) -> None:
        f.write(b"PK\x03\x04 half a file")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    payload["iter"] = 99
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, payload)
    assert path.read_bytes() == before  # the old checkpoint survives intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint.bin"]  # no temp file left
    # A temp file left by a process killed mid-save is cleaned up by the next save.
    monkeypatch.undo()
    (tmp_path / ".last_checkpoint.bin.abc123.tmp").write_bytes(b"PK\x03\x04 partial")
    save_checkpoint(path, payload)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint.bin"]
    assert load_checkpoint(path)["iter"] == 99


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist.*llmlab train"):
        load_checkpoint(tmp_path / "nope.bin")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_truncated_file(tmp_path: Path) -> None:
    _, payload = _payload()
    path = save_checkpoint(tmp_path / "c.bin", payload)
    data = path.read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.bin is truncated or corrupt"):
        load_checkpoint(cut)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.bin"
    text.write_text("hello, I am a text file")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_checkpoint(text)
    # A real PyTorch file that is not an llmlab checkpoint (a bare tensor).
    other = tmp_path / "tensor.bin"
    torch.save(torch.zeros(3), other)
    with pytest.raises(ValueError, match="not an llmlab checkpoint"):
        load_checkpoint(other)


class Sneaky:
    """Stands in for arbitrary pickled code: weights_only must refuse to build it."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.getcwd, ())


class PlainObject:
    pass


def test_pickled_object_refused_with_reason(tmp_path: Path) -> None:
    _, payload = _payload()
    for i, obj in enumerate([Sneaky(), PlainObject()]):
        path = tmp_path / f"evil{i}.bin"
        torch.save({**payload, "extra": obj}, path)
        with pytest.raises(ValueError, match="weights_only") as info:
            load_checkpoint(path)
        # The reason names what was refused.
        assert ("getcwd" in str(info.value)) if i == 0 else ("PlainObject" in str(info.value))


def test_other_architecture_clear_error_and_model_untouched(tmp_path: Path) -> None:
    _, payload = _payload(embedding_size=32)
    other, _ = _payload(embedding_size=64)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"another architecture.*transformer\.wte\.weight \(\d+, 32\) vs \(\d+, 64\)"):
        load_model_state(other, payload["model"])
    for k, v in other.state_dict().items():
        assert torch.equal(v, before[k])
    # Keys from a different naming scheme are listed too.
    with pytest.raises(ValueError, match="missing from the checkpoint"):
        load_model_state(other, {"foo.weight": torch.zeros(2)})


def test_payload_needs_model_and_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(tmp_path / "x.bin", {"model": {}})
    assert not (tmp_path / "x.bin").exists()


# ---- the versioned contract --------------------------------------------------------------------------


def test_training_state_round_trip(tmp_path: Path) -> None:
    model, payload = _payload()
    state = TrainingState.from_dict({**payload, "sampler": {"step": 5}, "future_key": [1, 2]})
    assert state.iter == 7 and state.format_version == FORMAT_VERSION == 1 and state.extra == {"future_key": [1, 2]}
    path = save_checkpoint(tmp_path / "last_checkpoint.bin", state)
    raw = torch.load(path)
    assert raw["format_version"] == 1 and raw["future_key"] == [1, 2]  # unknown keys survive a round trip
    assert "scaler" not in raw and "sampler_by_rank" not in raw  # optional entries are left out, not None
    back = load_training_state(path)
    assert (back.iter, back.best_val_loss, back.sampler, back.config) == (7, 1.5, {"step": 5}, payload["config"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.model[name], tensor)
    assert TrainingState.from_dict(back.to_dict()).to_dict().keys() == back.to_dict().keys()


def test_checkpoint_without_format_version_reads_as_version_1(tmp_path: Path) -> None:
    _, payload = _payload()  # what llmlab wrote before checkpoints were versioned
    path = tmp_path / "old.bin"
    torch.save(payload, path)
    assert "format_version" not in load_checkpoint(path)
    assert load_training_state(path).format_version == 1
    assert model_from_checkpoint(path)[0].config.depth == 2


def test_newer_format_version_is_refused_with_the_fix(tmp_path: Path) -> None:
    _, payload = _payload()
    path = tmp_path / "future.bin"
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, path)
    for read in (load_checkpoint, load_training_state, model_from_checkpoint):
        with pytest.raises(ValueError, match=rf"format_version {FORMAT_VERSION + 1}.*newer llmlab.*Upgrade llmlab"):
            read(path)
    with pytest.raises(ValueError, match="format_version 'one'"):
        TrainingState.from_dict({**payload, "format_version": "one"})
    with pytest.raises(ValueError, match="newer llmlab"):  # nor is one written
        save_checkpoint(tmp_path / "x.bin", {**payload, "format_version": FORMAT_VERSION + 1})
    assert not (tmp_path / "x.bin").exists()


def test_resume_state_and_architecture_check(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no checkpoint to resume from.*without --resume"):
        load_resume_state(tmp_path)
    _, payload = _payload(embedding_size=32)
    save_checkpoint(tmp_path / "last_checkpoint.bin", payload)
    state = load_resume_state(tmp_path)
    model_config = Config.from_dict(payload["config"]).model
    state.check_architecture(model_config)  # same shapes: fine
    other = Config.from_dict(payload["config"]).override(embedding_size=64).model
    with pytest.raises(ValueError, match="another architecture.*embedding_size: checkpoint 32, now 64"):
        state.check_architecture(other)


def test_describe_reports_bits_per_byte_through_metrics() -> None:
    from llmlab.metrics import bits_per_byte

    _, payload = _payload()
    payload["data_meta"] = {"val_tokens": 200, "val_bytes": 300, "source": "x", "train_tokens": 10, "split": "tail"}
    text = describe_checkpoint(TrainingState.from_dict(payload))
    assert f"= {bits_per_byte(1.5, 200, 300):.3f} bits/byte" in text and "depth=2" in text


# ---- a full disk, a read-only folder, a damaged last checkpoint ----------------------------------------


@pytest.mark.parametrize(
    "code, says",
    [
        (errno.ENOSPC, r"the disk is full \(No space left on device\)\. The previous c\.bin is unchanged\. Fix: free"),
        (errno.EACCES, r"the folder is not writable \(Permission denied\)\. The previous c\.bin is unchanged\. Fix: "),
        (errno.EROFS, r"the folder is not writable \(Read-only file system\).* make this one writable"),
    ],
    ids=["ENOSPC", "EACCES", "EROFS"],
)
@pytest.mark.parametrize("where", ["write", "temp file"])
def test_disk_full_or_read_only_is_one_clear_error_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, says: str, where: str
) -> None:
    _, payload = _payload()
    path = save_checkpoint(tmp_path / "c.bin", payload)
    before = path.read_bytes()

    def fail(*args: object, **kwargs: object) -> None:
        if where == "write":
            args[1].write(b"PK\x03\x04 some bytes")  # type: ignore[attr-defined]
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch, "save", fail) if where == "write" else monkeypatch.setattr(tempfile, "mkstemp", fail)
    with pytest.raises(CheckpointWriteError, match=rf"could not write the checkpoint {path}: {says}") as info:
        save_checkpoint(path, {**payload, "iter": 99})
    assert isinstance(info.value, OSError) and isinstance(info.value, ValueError) and info.value.errno == code
    assert not str(info.value).startswith("[Errno")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.bin"]


def test_a_damaged_last_checkpoint_points_to_resume_from_best(tmp_path: Path) -> None:
    _, payload = _payload()
    payload = {**payload, "optimizer": {"state": {}, "param_groups": []}}  # resumable: the advice may point to it
    save_checkpoint(tmp_path / "best_checkpoint.bin", payload)
    last = save_checkpoint(tmp_path / "last_checkpoint.bin", payload)
    last.write_bytes(last.read_bytes()[:200])
    with pytest.raises(
        ValueError,
        match=rf"truncated or corrupt.*replace --resume with --resume-from {tmp_path / 'best_checkpoint.bin'}",
    ) as info:
        load_resume_state(tmp_path)
    assert "Use the other checkpoint" not in str(info.value)  # --resume cannot read the other one by itself
    last.unlink()
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from.*--resume-from"):
        load_resume_state(tmp_path)
    # The state read with load_training_state knows its file (not saved into the checkpoint).
    state = load_training_state(tmp_path / "best_checkpoint.bin")
    assert state.source == str(tmp_path / "best_checkpoint.bin") and "source" not in state.to_dict()


def test_check_out_dir(tmp_path: Path) -> None:
    check_out_dir(tmp_path / "new" / "deeper")  # missing: fine, and nothing is created by the check
    assert not (tmp_path / "new").exists()
    _, payload = _payload()
    save_checkpoint(tmp_path / "run" / "best_checkpoint.bin", payload)
    with pytest.raises(ValueError, match=r"holds a finished run \(best_checkpoint.bin\): --resume it"):
        check_out_dir(tmp_path / "run")
    check_out_dir(tmp_path / "run", resume=True)
    check_out_dir(tmp_path / "run", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointWriteError, match="is a file, not a folder"):
        check_out_dir(tmp_path / "file")
