"""llmlab.sampling against from-scratch computations."""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.sampling import apply_temperature, sample_next, top_k_filter, top_p_filter


def _logits(rows: int = 4, vocab: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 2.0


def test_temperature_divides_logits_and_flattens_distribution() -> None:
    logits = _logits()
    assert torch.allclose(apply_temperature(logits, 2.0), logits / 2.0)
    assert torch.allclose(apply_temperature(logits, 0.5), logits * 2.0)

    def entropy(x: torch.Tensor) -> torch.Tensor:
        p = x.softmax(-1)
        return -(p * p.log()).sum(-1)

    assert (entropy(apply_temperature(logits, 2.0)) > entropy(logits)).all()
    assert (entropy(apply_temperature(logits, 0.5)) < entropy(logits)).all()


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), "1", True])
def test_temperature_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(_logits(), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [1, 3, 7, 20, 50])
def test_top_k_keeps_exactly_the_k_largest(k: int) -> None:
    logits = _logits()
    out = top_k_filter(logits, k)
    kept = torch.isfinite(out)
    assert (kept.sum(-1) == min(k, logits.size(-1))).all()
    for row in range(logits.size(0)):
        expected = set(sorted(range(logits.size(1)), key=lambda i: -logits[row, i].item())[:k])
        assert set(torch.nonzero(kept[row]).flatten().tolist()) == expected
    assert torch.equal(out[kept], logits[kept])  # survivors keep their values
    assert (out[~kept] == float("-inf")).all()


def test_top_k_with_ties_still_keeps_exactly_k() -> None:
    logits = torch.zeros(2, 10)
    assert (torch.isfinite(top_k_filter(logits, 3)).sum(-1) == 3).all()


def _top_p_reference(logits: torch.Tensor, p: float) -> set[int]:
    """Smallest set of most likely tokens with total probability >= p, written out by hand."""
    probs = [math.exp(x) for x in logits.tolist()]
    total = sum(probs)
    probs = [x / total for x in probs]
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, mass = set(), 0.0
    for i in order:
        kept.add(i)
        mass += probs[i]
        if mass >= p:
            break
    return kept


@pytest.mark.parametrize("p", [1e-6, 0.1, 0.5, 0.8, 0.95, 1.0])
def test_top_p_matches_reference(p: float) -> None:
    logits = _logits(rows=6, vocab=12, seed=1)
    out = top_p_filter(logits, p)
    for row in range(logits.size(0)):
        kept = set(torch.nonzero(torch.isfinite(out[row])).flatten().tolist())
        assert kept == _top_p_reference(logits[row].double(), p)
    kept_mask = torch.isfinite(out)
    assert torch.equal(out[kept_mask], logits[kept_mask])


def test_top_p_tiny_keeps_only_the_argmax() -> None:
    logits = _logits()
    out = top_p_filter(logits, 1e-9)
    assert (torch.isfinite(out).sum(-1) == 1).all()
    assert torch.equal(out.argmax(-1), logits.argmax(-1))


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, True])
def test_top_p_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(_logits(), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_top_k_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(_logits(), bad)  # type: ignore[arg-type]


def test_filters_do_not_modify_input() -> None:
    logits = _logits()
    before = logits.clone()
    top_k_filter(logits, 2)
    top_p_filter(logits, 0.5)
    apply_temperature(logits, 0.7)
    sample_next(logits, temperature=0.7, top_k=3, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits, before)


def test_temperature_zero_is_argmax() -> None:
    logits = _logits(rows=8)
    out = sample_next(logits, temperature=0, top_k=5, top_p=0.5)
    assert out.shape == (8, 1) and out.dtype == torch.long
    assert torch.equal(out.squeeze(1), logits.argmax(-1))


def test_seeded_sampling_is_reproducible() -> None:
    logits = _logits(rows=16)
    a = sample_next(logits, temperature=1.3, generator=torch.Generator().manual_seed(42))
    b = sample_next(logits, temperature=1.3, generator=torch.Generator().manual_seed(42))
    c = sample_next(logits, temperature=1.3, generator=torch.Generator().manual_seed(43))
    assert a.shape == (16, 1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sampling_frequencies_follow_filtered_softmax() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    n = 40_000
    batch = logits.expand(n, -1)
    gen = torch.Generator().manual_seed(0)

    draws = sample_next(batch, temperature=0.8, generator=gen).flatten()
    freq = torch.bincount(draws, minlength=5).double() / n
    expected = torch.softmax(logits.double() / 0.8, -1)
    assert torch.allclose(freq, expected, atol=0.01)

    draws = sample_next(batch, temperature=1.0, top_k=2, generator=gen).flatten()
    freq = torch.bincount(draws, minlength=5).double() / n
    two = torch.softmax(logits[:2].double(), -1)
    assert torch.allclose(freq, torch.cat([two, torch.zeros(3, dtype=torch.double)]), atol=0.01)

    # probabilities ~ [.56, .21, .13, ...]: p=0.7 keeps the first two tokens, renormalised
    draws = sample_next(batch, temperature=1.0, top_p=0.7, generator=gen).flatten()
    assert set(draws.unique().tolist()) == {0, 1}


def test_sample_next_validates_arguments() -> None:
    with pytest.raises(ValueError, match="temperature"):
        sample_next(_logits(), temperature=-0.1)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(_logits(), top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(_logits(), top_p=2.0)
