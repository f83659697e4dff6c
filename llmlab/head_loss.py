"""The output layer's loss without the (N, V) logits: head matmul, soft-cap and cross-entropy, in row chunks.

``F.cross_entropy(cap * tanh((x @ W.T) / cap), targets)`` is what the GPT computes when it trains; written
as separate operations on a CPU it makes and re-reads several (N, V) float tensors (N = B*T rows): at
``cpu_modern``'s 2,048 rows x 1,024 tokens that is 8 MB each, far larger than the caches, and each fresh
one also costs the kernel a page fault per 4 KB. :func:`linear_cross_entropy` walks the rows in chunks
that stay in cache (``rows`` x V floats), and since the loss's gradient is known as soon as its softmax is
(softmax - one-hot, times the soft-cap's derivative), it computes the gradients of ``x`` and ``W`` in the
same pass and keeps them for ``backward`` — the (N, V) logits never exist. Measured with
``python bench/head_loss.py`` (docs/results.md).

Two identities keep the chunk's passes cheap: ``tanh(u) = 2 sigmoid(2u) - 1`` (torch's CPU sigmoid is
several times faster than its tanh), and ``d/dz cap*tanh(z/cap) = 1 - tanh^2 = 4 s (1 - s)`` with ``s``
that sigmoid; soft-capped logits lie in [-cap, cap], so their exponentials cannot overflow and need no
max subtracted. The model uses it on the CPU, in float32, outside ``torch.compile`` (which fuses the
plain form itself), with a soft-cap, where it measured faster; anywhere else the plain form runs.
"""

from __future__ import annotations

import torch

__all__ = ["linear_cross_entropy", "reference_linear_cross_entropy", "CHUNK_ELEMENTS", "MIN_ROWS"]

CHUNK_ELEMENTS = 1 << 18  # floats per chunk of logits (1 MB): 256 rows of a 1,024-token vocabulary
MIN_ROWS = 64  # fewer rows make the head's matrix products slow: GPT-2's 50,257 tokens take 64-row chunks


def reference_linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float = 0.0
) -> torch.Tensor:
    """The plain form: logits (N, V), soft-capped if ``softcap``, then mean cross-entropy (-1 ignored)."""
    logits = x @ weight.t()  # (N, V)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.nn.functional.cross_entropy(logits, targets, ignore_index=-1)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        softcap: float,
        rows: int,
    ) -> torch.Tensor:
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # type: ignore[attr-defined]
        N = x.size(0)
        valid = targets != -1  # (N,)
        all_valid = bool(valid.all())
        safe = torch.where(valid, targets, 0)[:, None]  # (N, 1): ignored rows point at token 0, then are zeroed
        row_loss = torch.empty(N, dtype=x.dtype, device=x.device)
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        for s in range(0, N, rows):
            xs, tgt = x[s : s + rows], safe[s : s + rows]  # (n, C), (n, 1)
            z = xs @ weight.t()  # (n, V) logits
            if softcap:
                sig = torch.sigmoid_(z.mul_(2.0 / softcap))  # in place: z is now s = sigmoid(2 logits / cap)
                capped = sig * (2.0 * softcap)
                capped.sub_(softcap)  # cap * tanh(logits / cap), in [-cap, cap]
                e = capped.exp()  # no overflow: |capped| <= cap
                total = e.sum(dim=1, keepdim=True)  # (n, 1)
                lse = total.log().squeeze(1)  # (n,)
            else:
                capped = z
                top = z.amax(dim=1, keepdim=True)  # (n, 1)
                e = (z - top).exp_()
                total = e.sum(dim=1, keepdim=True)  # (n, 1)
                lse = total.log().add_(top).squeeze(1)  # (n,)
            row_loss[s : s + rows] = lse - capped.gather(1, tgt).squeeze(1)
            if not (need_x or need_w):
                continue
            g = e.div_(total)  # softmax (n, V)
            g.scatter_add_(1, tgt, torch.full(tgt.shape, -1.0, dtype=g.dtype, device=g.device))  # minus one-hot
            if not all_valid:
                g.mul_(valid[s : s + rows, None])
            if softcap:
                g.mul_(torch.addcmul(sig, sig, sig, value=-1.0))  # times s (1 - s); the factor 4 is applied below
            if need_x:
                torch.mm(g, weight, out=grad_x[s : s + rows])  # type: ignore[index]
            if need_w:
                grad_w.addmm_(g.t(), xs)  # type: ignore[union-attr]
        count = valid.sum()
        ctx.save_for_backward(grad_x, grad_w, count)
        ctx.factor = 4.0 if softcap else 1.0  # type: ignore[attr-defined]
        if not all_valid:
            row_loss.mul_(valid)
        return row_loss.sum() / count

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        grad_x, grad_w, count = ctx.saved_tensors  # type: ignore[attr-defined]
        scale = grad * ctx.factor / count  # type: ignore[attr-defined]
        return (
            grad_x * scale if grad_x is not None else None,
            grad_w * scale if grad_w is not None else None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float = 0.0, rows: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy of ``softcap``-capped logits ``x @ weight.T`` against ``targets`` (-1 ignored).

    ``x`` (N, C), ``weight`` (V, C), ``targets`` (N,) long. The same value and gradients as
    :func:`reference_linear_cross_entropy`, in row chunks of ``rows`` (default: ``CHUNK_ELEMENTS // V``, at
    least ``MIN_ROWS``).
    """
    if x.dim() != 2 or weight.dim() != 2 or targets.shape != x.shape[:1]:
        raise ValueError(
            f"expected x (N, C), weight (V, C) and targets (N,); got {tuple(x.shape)}, {tuple(weight.shape)}, "
            f"{tuple(targets.shape)}."
        )
    if rows is None:
        rows = max(MIN_ROWS, CHUNK_ELEMENTS // weight.size(0))
    return _LinearCrossEntropy.apply(x, weight, targets, float(softcap), int(rows))
