"""Turning next-token logits into a choice: temperature, top-k, top-p (nucleus), then a draw.

Every function is pure: it takes logits of shape ``(..., V)`` and returns a new tensor, leaving the
input untouched. A filtered-out token gets the logit ``-inf``, so softmax gives it probability 0.

    next_id = sample_next(logits, temperature=0.8, top_k=50, top_p=0.95)   # (B, V) -> (B, 1)
"""

from __future__ import annotations

import torch

from llmlab.validate import check_int, check_number

__all__ = ["apply_temperature", "top_k_filter", "top_p_filter", "sample_next"]


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by ``temperature`` (> 0): below 1 sharpens the distribution, above 1 flattens it.

    Temperature 0 (greedy) is not a division; :func:`sample_next` handles it with an argmax.
    """
    check_number("temperature", temperature, 0.0, fix="use a finite number >= 0, e.g. 0.8.")
    check_number(
        "temperature",
        temperature,
        0.0,
        low_open=True,
        fix="apply_temperature needs temperature > 0; for greedy decoding call sample_next(logits, temperature=0).",
    )
    return logits / temperature


def _check_top_k(top_k: int) -> None:
    check_int("top_k", top_k, 1, "use a whole number >= 1 (e.g. 50), or None to keep all tokens.")


def _check_top_p(top_p: float) -> None:
    check_number(
        "top_p", top_p, 0.0, 1.0, low_open=True, fix="use a number in (0, 1] (e.g. 0.9), or None to keep all tokens."
    )


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` largest logits in the last dimension; set the rest to ``-inf``.

    Ties at the k-th value are broken by ``torch.topk``'s order, so exactly ``min(k, V)`` survive.
    """
    _check_top_k(k)
    k = min(k, logits.size(-1))
    values, indices = torch.topk(logits, k, dim=-1)  # (..., k)
    filtered = torch.full_like(logits, float("-inf"))
    return filtered.scatter(-1, indices, values)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probabilities sum to >= ``p``.

    The most likely token always survives, so even a tiny ``p`` leaves something to sample.
    """
    _check_top_p(p)
    sorted_logits, sorted_indices = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    sorted_probs = torch.softmax(sorted_logits.float(), dim=-1)
    # Probability mass of the tokens strictly before each one: a token is needed while that mass is < p.
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep_sorted = mass_before < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, sorted_indices, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token id per row of ``logits`` (B, V) -> LongTensor (B, 1).

    ``temperature=0`` is greedy (argmax; top-k/top-p then change nothing). Otherwise the logits are
    scaled, filtered by top-k then top-p, and a token is drawn from the softmax; pass a seeded
    ``torch.Generator`` (on the logits' device) for reproducible draws.
    """
    if logits.dim() < 1:
        raise ValueError(f"logits must have a vocabulary dimension, got shape {tuple(logits.shape)}.")
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    check_number("temperature", temperature, 0.0, fix="use 0 for greedy or a positive finite number, e.g. 0.8.")
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    flat = probs.reshape(-1, probs.size(-1))  # multinomial wants (rows, V)
    choice = torch.multinomial(flat, num_samples=1, generator=generator)  # (rows, 1)
    return choice.reshape(*probs.shape[:-1], 1)
