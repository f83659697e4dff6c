"""The chunked head + soft-cap + cross-entropy (llmlab.head_loss) against the plain form, and the GPT's use of it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmlab.config import ModelConfig
from llmlab.head_loss import linear_cross_entropy, reference_linear_cross_entropy
from llmlab.model import GPT


def _inputs(n: int = 70, c: int = 12, v: int = 30, ignored: int = 5) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, dtype=torch.float64, generator=g, requires_grad=True)
    w = (3 * torch.randn(v, c, dtype=torch.float64, generator=g)).requires_grad_()  # logits well past a cap of 2
    t = torch.randint(0, v, (n,), generator=g)
    t[torch.randperm(n, generator=g)[:ignored]] = -1
    return x, w, t


@pytest.mark.parametrize("softcap", [0.0, 2.0, 15.0])
@pytest.mark.parametrize("rows", [1, 16, 33, 70, 1000])  # chunks of one row, uneven chunks, one chunk, more than N
def test_value_and_gradients_equal_the_plain_form(softcap: float, rows: int) -> None:
    x, w, t = _inputs()
    ours = linear_cross_entropy(x, w, t, softcap, rows)
    ref = reference_linear_cross_entropy(x, w, t, softcap)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    g_ours = torch.autograd.grad(ours * 3.0, (x, w))  # an upstream gradient other than 1 is carried through
    g_ref = torch.autograd.grad(ref * 3.0, (x, w))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_the_plain_form_is_what_torch_computes() -> None:
    # The reference itself, written out once more with log_softmax: the soft-cap is cap * tanh(z / cap).
    x, w, t = _inputs(ignored=0)
    z = 4.0 * torch.tanh((x @ w.t()) / 4.0)
    manual = -z.log_softmax(-1).gather(1, t[:, None]).mean()
    torch.testing.assert_close(reference_linear_cross_entropy(x, w, t, 4.0), manual)


def test_float32_matches_and_extreme_logits_stay_finite() -> None:
    x, w, t = _inputs()
    x = x.detach().float().requires_grad_()
    w = w.detach().float()
    w = (100 * w).requires_grad_()  # logits in the thousands: the uncapped path must subtract the row max
    for cap in (0.0, 15.0):
        ours = linear_cross_entropy(x, w, t, cap, 8)
        ref = reference_linear_cross_entropy(x, w, t, cap)
        assert torch.isfinite(ours)
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)
        for a, b in zip(torch.autograd.grad(ours, (x, w)), torch.autograd.grad(ref, (x, w))):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_frozen_weight_and_no_grad() -> None:
    x, w, t = _inputs()
    w = w.detach()  # a frozen head: only x gets a gradient
    (gx,) = torch.autograd.grad(linear_cross_entropy(x, w, t, 15.0, 16), (x,))
    (gx_ref,) = torch.autograd.grad(reference_linear_cross_entropy(x, w, t, 15.0), (x,))
    torch.testing.assert_close(gx, gx_ref, atol=1e-12, rtol=1e-12)
    with torch.no_grad():  # evaluation: the value alone
        loss = linear_cross_entropy(x, w, t, 15.0, 16)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, reference_linear_cross_entropy(x.detach(), w, t, 15.0))


def test_all_targets_ignored_is_nan_like_cross_entropy() -> None:
    x, w, t = _inputs()
    t = torch.full_like(t, -1)
    assert torch.isnan(linear_cross_entropy(x, w, t)) and torch.isnan(reference_linear_cross_entropy(x, w, t))


def test_bad_shapes_are_refused() -> None:
    x, w, t = _inputs()
    with pytest.raises(ValueError, match=r"expected x \(N, C\), weight \(V, C\) and targets \(N,\)"):
        linear_cross_entropy(x, w, t[:-1])


@pytest.mark.parametrize(
    "options",
    [
        dict(),  # GPT-2: tied head, no cap
        dict(position="rope", norm="rmsnorm", qk_norm=True, tie_embeddings=False, zero_init=False, logit_softcap=15.0),
        dict(logit_softcap=5.0),  # a cap on GPT-2's tied head
    ],
)
def test_gpt_loss_without_logits_equals_the_plain_loss(options: dict) -> None:
    # The trainer's call, model(x, y, return_logits=False), takes the chunked path on the CPU with a soft-cap; it
    # must give the plain path's loss and the same gradient for every parameter. Without a cap: the plain path.
    vocab = 300
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=vocab, block_size=16, embedding_size=32, num_heads=4, depth=2, **options))
    idx = torch.randint(0, vocab, (3, 16))
    targets = torch.randint(0, vocab, (3, 16))
    targets[0, :4] = -1
    assert model._chunked_loss_applies(model.hidden_states(idx)) == bool(options)

    logits, loss = model(idx, targets)  # the plain path
    assert logits is not None and logits.shape == (3, 16, vocab)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=-1))
    plain = torch.autograd.grad(loss, list(model.parameters()))
    none, chunked_loss = model(idx, targets, return_logits=False)
    assert none is None
    torch.testing.assert_close(chunked_loss, loss, atol=1e-6, rtol=1e-6)
    chunked = torch.autograd.grad(chunked_loss, list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), chunked, plain):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_which_models_take_the_chunked_path() -> None:
    # Only with a soft-cap (cpu_modern), in float32 on the CPU: never under autocast or in float64.
    torch.manual_seed(0)
    idx = torch.zeros(1, 4, dtype=torch.long)
    small = dict(block_size=8, embedding_size=16, num_heads=2, depth=1)
    for vocab in (65, 1024, 50257):
        model = GPT(ModelConfig(vocab_size=vocab, **small))
        assert not model._chunked_loss_applies(model.hidden_states(idx))
    capped = GPT(ModelConfig(vocab_size=65, logit_softcap=15.0, **small))
    h = capped.hidden_states(idx)
    assert capped._chunked_loss_applies(h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not capped._chunked_loss_applies(h)
    assert not capped._chunked_loss_applies(h.double())
