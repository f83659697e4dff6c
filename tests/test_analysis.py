"""llmlab.analysis: the memory check that refuses a step before allocating it."""

from __future__ import annotations

import re

import pytest

from llmlab.analysis import (
    available_memory,
    check_step_fits,
    memory_estimate,
    minimum_step_memory,
    parameters_by_component,
)
from llmlab.config import get_preset


def _config(batch_size: int, grad_accum_steps: int = 1):
    return get_preset("cpu_small").override(vocab_size=1024, batch_size=batch_size, grad_accum_steps=grad_accum_steps)


def test_lower_bound_is_below_the_typical_estimate_and_grows_with_the_batch() -> None:
    cfg = _config(16)
    for b in (1, 16, 64):
        assert minimum_step_memory(cfg, b) < sum(memory_estimate(cfg.model, b).values())
    n = sum(parameters_by_component(cfg.model).values())
    assert minimum_step_memory(cfg, 1) > 4 * n * 4  # weights + grads + two AdamW moments, fp32
    assert minimum_step_memory(cfg, 32) - minimum_step_memory(cfg, 16) == minimum_step_memory(
        cfg, 48
    ) - minimum_step_memory(cfg, 32)  # linear in the batch


def test_a_step_that_fits_passes_and_one_that_cannot_is_refused_with_a_fix() -> None:
    check_step_fits(_config(16), "cpu", available=2**30)
    with pytest.raises(MemoryError) as info:
        check_step_fits(_config(100_000, grad_accum_steps=2), "cpu", available=2**30)
    msg = str(info.value)
    assert "batch_size=100000" in msg and "1.00 GiB free" in msg
    b, accum = map(int, re.search(r"batch_size=(\d+) grad_accum_steps=(\d+)", msg).groups())
    assert b * accum == 200_000  # the same sequences per step
    assert sum(memory_estimate(_config(b).model, b).values()) <= 2**30  # the suggestion fits
    assert sum(memory_estimate(_config(b).model, 2 * b).values()) > 2**30 or 100_000 % (2 * b) != 0


def test_nothing_fits_names_the_model_size() -> None:
    with pytest.raises(MemoryError, match="Even batch_size=1 would not fit.*block_size"):
        check_step_fits(_config(4), "cpu", available=1024)


def test_available_memory_on_this_machine() -> None:
    free = available_memory("cpu")
    assert free is None or free > 0


def test_parameter_counts_of_a_config_equal_the_real_model_and_come_back_as_fresh_dicts() -> None:
    from dataclasses import replace

    from llmlab.model import GPT

    for cfg in (_config(1).model, replace(_config(1).model, tie_embeddings=False)):
        counts = parameters_by_component(cfg)
        assert sum(counts.values()) == GPT(cfg).num_parameters()  # the meta model counts what a real one holds
        assert counts == parameters_by_component(GPT(cfg))
        counts["MLP"] = -1  # a caller's edit must not reach the cache
        assert parameters_by_component(cfg)["MLP"] > 0
