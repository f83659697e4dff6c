"""Config validation, presets and overrides (the manual's names, errors that say what to do)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmlab.config import Config, ModelConfig, TrainConfig, fast_mode, get_preset, preset_names


def test_presets_exist_with_the_manuals_values() -> None:
    assert preset_names()[0] == "cpu_small"
    manual = get_preset("seed_manual")
    assert (manual.model.embedding_size, manual.model.num_heads, manual.model.depth) == (768, 6, 6)
    assert manual.train.batch_size == 6
    assert manual.train.max_lr == pytest.approx(2.5e-5)
    gpt2 = get_preset("gpt2_124m")
    assert (gpt2.model.embedding_size, gpt2.model.num_heads, gpt2.model.depth) == (768, 12, 12)
    assert (gpt2.model.vocab_size, gpt2.model.block_size) == (50257, 1024)
    assert get_preset() == get_preset("cpu_small")


def test_unknown_preset_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        get_preset("tiny")
    for name in preset_names():
        assert name in str(err.value)


def test_heads_must_divide_embedding_size_and_message_suggests_fix() -> None:
    with pytest.raises(ValueError) as err:
        ModelConfig(embedding_size=100, num_heads=3)
    message = str(err.value)
    assert "num_heads=3" in message and "embedding_size=100" in message
    assert "[1, 2, 4, 5, 10, 20, 25, 50]" in message  # the valid choices


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"embedding_size": 0}, "embedding_size"),
        ({"depth": -1}, "depth"),
        ({"block_size": 2.5}, "block_size"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"vocab_size": True}, "vocab_size"),
    ],
)
def test_bad_model_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ModelConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"min_lr": 1e-2, "max_lr": 1e-3}, "min_lr"),
        ({"max_lr": 0.0}, "max_lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"warmup_iters": 50, "max_iters": 10}, "warmup_iters"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"tokenizer": "words"}, "tokenizer"),
        ({"device": "tpu"}, "device"),
        ({"beta2": 1.0}, "beta2"),
        ({"embedding_lr_scale": 0.0}, "embedding_lr_scale"),
    ],
)
def test_bad_train_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)


def test_min_lr_error_suggests_a_value() -> None:
    with pytest.raises(ValueError, match=r"min_lr=0\.0001"):
        TrainConfig(max_lr=1e-3, min_lr=1e-2)


def test_override_routes_names_and_converts_text() -> None:
    config = get_preset("cpu_small").override({"embedding_size": "256", "num_heads": "8", "max_lr": "3e-4"})
    assert config.model.embedding_size == 256 and config.model.num_heads == 8
    assert config.train.max_lr == pytest.approx(3e-4)
    assert isinstance(config.model.embedding_size, int)
    assert config.override(bias="false").model.bias is False


def test_override_validates_the_result() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        get_preset().override(num_heads=7)


def test_override_unknown_key_suggests_and_lists() -> None:
    with pytest.raises(ValueError) as err:
        get_preset().override(embeding_size=3)
    message = str(err.value)
    assert "'embedding_size'" in message and "max_lr" in message


def test_override_wrong_type_is_explained() -> None:
    with pytest.raises(ValueError, match="depth takes a whole number"):
        get_preset().override(depth="four")
    with pytest.raises(ValueError, match="depth"):
        get_preset().override(depth="2.5")


def test_dict_round_trip_is_json_safe() -> None:
    config = get_preset("gpt2_124m").override(dropout=0.1)
    data = json.loads(json.dumps(config.to_dict()))
    assert Config.from_dict(data) == config


def test_fast_mode_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMLAB_FAST", "1")
    assert fast_mode()
    monkeypatch.setenv("LLMLAB_FAST", "0")
    assert not fast_mode()
    monkeypatch.delenv("LLMLAB_FAST")
    assert not fast_mode()


def test_course_path_keeps_fast_mode_runs_away_from_the_learners(monkeypatch, tmp_path) -> None:
    from llmlab.config import course_path

    monkeypatch.delenv("LLMLAB_FAST", raising=False)
    assert course_path("out/shakespeare_char") == Path("out/shakespeare_char")
    monkeypatch.setenv("LLMLAB_FAST", "1")
    monkeypatch.setenv("LLMLAB_FAST_ROOT", str(tmp_path))
    assert course_path("out/shakespeare_char") == tmp_path / "out" / "shakespeare_char"
    monkeypatch.delenv("LLMLAB_FAST_ROOT")
    assert "llmlab-fast" in course_path("data/x").parts


def test_learner_files_fingerprint_sees_a_changed_checkpoint(tmp_path) -> None:
    from conftest import learner_files_fingerprint

    (tmp_path / "notebooks" / "out" / "run").mkdir(parents=True)
    ckpt = tmp_path / "notebooks" / "out" / "run" / "best_checkpoint.bin"
    ckpt.write_bytes(b"a")
    before = learner_files_fingerprint(tmp_path)
    ckpt.write_bytes(b"bb")
    assert learner_files_fingerprint(tmp_path) != before


def test_full_or_fast_follows_the_fast_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlab.config import full_or_fast

    monkeypatch.setenv("LLMLAB_FAST", "1")
    assert full_or_fast(full=500, fast=20) == 20
    monkeypatch.setenv("LLMLAB_FAST", "0")
    assert full_or_fast(full=500, fast=20) == 500
