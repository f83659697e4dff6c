"""Muon: momentum, then the update orthogonalised, for the hidden weight matrices (Jordan et al., 2024).

Same algorithm and defaults as ``torch.optim.Muon`` (which modded-nanogpt's record runs made popular), with
one change for CPUs: torch's version runs its Newton-Schulz iterations in bfloat16, which is fast on GPUs
and very slow on CPUs without native bf16 (about 0.85 s per cpu_modern step on the course machine against
a few milliseconds in float32). Here the iteration runs in ``ns_dtype``: bfloat16 on CUDA, float32
elsewhere by default. With ``ns_dtype=torch.bfloat16`` the result equals torch's (tested).

Per step, for a weight matrix W with gradient G::

    B = momentum * B + (1 - momentum) * G              # momentum buffer
    U = G + momentum * (B - G)   (nesterov)  or  B      # the direction
    O = newton_schulz(U)                                # ~ U V^T of U's SVD: every direction moves alike
    W = W * (1 - lr * weight_decay) - lr * sqrt(max(1, rows / cols)) * O

:class:`MuonWithAdamW` steps Muon (hidden matrices) and AdamW (everything else) as one optimizer; it is what
:meth:`llmlab.model.GPT.configure_optimizer` returns for ``optimizer="muon"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["Muon", "MuonWithAdamW", "newton_schulz"]

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)  # the quintic of Keller Jordan's Muon: steep slope at zero


def newton_schulz(
    g: torch.Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """An approximate orthogonalisation of the matrix ``g`` (its singular values pushed towards 1), in ``dtype``."""
    a, b, c = coefficients
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:  # iterate on the wide orientation: the Gram matrix x x^T is then the small one
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm = 1: inside the iteration's basin
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b * gram + c * gram @ gram
        x = torch.addmm(x, poly, x, beta=a, alpha=1.0)  # a * x + poly @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters. ``ns_dtype=None``: bfloat16 for CUDA tensors, float32 otherwise."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_dtype: torch.dtype | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, ns_dtype=ns_dtype
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(
                        f"Muon updates 2-D weight matrices only; got a parameter of shape "
                        f"{tuple(p.shape)} (give biases, gains and embeddings to AdamW)."
                    )

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: ARG002 - the Optimizer signature
        for group in self.param_groups:
            lr, mom = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mom)
                update = p.grad.lerp(buf, mom) if group["nesterov"] else buf
                dtype = group["ns_dtype"] or (torch.bfloat16 if p.is_cuda else torch.float32)
                ortho = newton_schulz(update, group["ns_steps"], dtype=dtype)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(ortho.to(p.dtype), alpha=-lr * math.sqrt(max(1.0, p.size(0) / p.size(1))))


class MuonWithAdamW:
    """Two optimizers stepped as one: Muon for the hidden matrices, AdamW for the rest.

    Offers what a training loop uses of an optimizer: ``param_groups`` (both, for the schedule),
    ``step``, ``zero_grad``, ``state_dict`` / ``load_state_dict`` (resume).
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [*self.muon.param_groups, *self.adamw.param_groups]

    @property
    def state(self) -> dict[Any, Any]:
        return {**self.muon.state, **self.adamw.state}

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError(
                "this optimizer state is not Muon + AdamW's: resume with the optimizer the run used "
                "(--set optimizer=...)."
            )
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])
