"""Loss units: nats per token -> bits per byte and perplexity.

Bits per byte divides out the tokenizer: a character model and a BPE model of the same text can be
compared by it, while their losses per token cannot.
"""

from __future__ import annotations

import math

__all__ = ["bits_per_byte", "perplexity"]


def bits_per_byte(loss_nats: float, tokens: int, nbytes: int) -> float:
    """Mean loss per token (nats) over ``tokens`` tokens of ``nbytes`` bytes of UTF-8 text -> bits per byte."""
    if tokens <= 0 or nbytes <= 0:
        raise ValueError(f"tokens={tokens}, bytes={nbytes}: both must be > 0 to convert to bits per byte.")
    return loss_nats / math.log(2) * tokens / nbytes


def perplexity(loss_nats: float) -> float:
    """exp(mean loss per token): the number of equally likely tokens the model is as unsure as."""
    return math.exp(loss_nats)
