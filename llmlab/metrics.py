"""Loss units (nats per token -> bits per byte and perplexity), counting baselines, and sample diversity.

Bits per byte divides out the tokenizer: a character model and a BPE model of the same text can be
compared by it, while their losses per token cannot. The counting baselines are the losses a model
with no learning at all reaches on its training text (token frequencies, then pair frequencies): a
trained GPT's loss is only interesting below them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmlab.validate import check_choice, check_int

__all__ = ["bits_per_byte", "sequence_bits_per_byte", "perplexity", "count_baselines", "distinct_n"]

# Below this many possible pairs a dense bincount is cheaper than sorting; above it (GPT-2's 50257**2)
# the pairs are counted with np.unique, which never allocates a V x V table.
_DENSE_PAIRS = 1 << 22


def bits_per_byte(loss_nats: float, tokens: int, nbytes: int) -> float:
    """Mean loss per token (nats) over ``tokens`` tokens of ``nbytes`` bytes of UTF-8 text -> bits per byte."""
    if tokens <= 0 or nbytes <= 0:
        raise ValueError(f"tokens={tokens}, bytes={nbytes}: both must be > 0 to convert to bits per byte.")
    return loss_nats / math.log(2) * tokens / nbytes


def sequence_bits_per_byte(model: Any, ids: Any, nbytes: int, block_size: int, batch_size: int = 64) -> float:
    """Bits per byte of a whole token sequence: the exact figure over a text, not a sample of windows.

    ``model(x, y)`` (llmlab's GPT, nanoGPT's, any model that returns ``(logits (B, T, V), ...)`` given targets)
    reads ``ids`` (1-D token ids of the whole text) in consecutive windows of ``block_size`` that do not overlap,
    so every token after the first is predicted exactly once; ``nbytes`` is the UTF-8 size of what is predicted.
    The summed cross-entropy in nats, over ln 2 and ``nbytes``. Used by notebook 06, the solutions and ``bench/``.
    """
    import torch
    import torch.nn.functional as F

    check_int("block_size", block_size, 1, "use the model's context length, e.g. block_size=256.")
    check_int("batch_size", batch_size, 1, "use batch_size >= 1, e.g. 64.")
    check_int("nbytes", nbytes, 1, "pass the UTF-8 byte count of the predicted text (> 0).")
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)).flatten()
    n = len(ids) - 1  # every token but the first is predicted
    if n < 1:
        raise ValueError(f"ids has {len(ids)} token(s): give at least two (one to read, one to predict).")
    rows = -(-n // block_size)
    x = torch.zeros(rows * block_size, dtype=torch.long)
    y = torch.full((rows * block_size,), -1, dtype=torch.long)  # -1 pads the last window; the loss ignores it
    x[:n], y[:n] = ids[:-1], ids[1:]
    x, y = x.view(rows, block_size), y.view(rows, block_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nats = 0.0
    try:
        with torch.no_grad():
            for i in range(0, rows, batch_size):
                xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
                logits = model(xb, yb)[0]  # (B, T, V)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), yb.flatten(), ignore_index=-1, reduction="sum")
                nats += float(loss)
    finally:
        model.train(was_training)
    return nats / math.log(2) / nbytes


def perplexity(loss_nats: float) -> float:
    """exp(mean loss per token): the number of equally likely tokens the model is as unsure as."""
    return math.exp(loss_nats)


def _entropy(counts: np.ndarray) -> float:
    """Entropy in nats of the empirical distribution given by ``counts`` (zeros ignored)."""
    counts = counts[counts > 0].astype(np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def count_baselines(tokens: np.ndarray, vocab_size: int) -> dict[str, float]:
    """The losses (nats per token) of two counting models scored on the very text they counted.

    ``"unigram"``: H(X), the entropy of the token frequencies (a model that ignores the context).
    ``"bigram"``: H(X_t | X_{t-1}), the conditional entropy of a token given the one before, from the
    pair counts (a lookup table indexed by the previous token). Both are maximum-likelihood estimates
    over ``tokens``; on held-out text such tables do worse, so these are lines a learner must beat,
    not targets. Pairs are counted as codes ``a * V + b``, so GPT-2's vocabulary needs no V x V table.
    """
    check_int("vocab_size", vocab_size, 1, "use the vocabulary size of the tokenizer (e.g. meta['vocab_size']).")
    ids = np.asarray(tokens).reshape(-1)
    if ids.size < 2:
        raise ValueError(f"tokens has {ids.size} ids: counting pairs needs at least 2; pass the training tokens.")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"tokens has dtype {ids.dtype}: pass integer token ids (e.g. np.memmap of train.bin).")
    ids = ids.astype(np.int64)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is outside [0, vocab_size={vocab_size}): pass the tokenizer's vocab_size.")
    unigram = _entropy(np.bincount(ids, minlength=vocab_size))
    prev, nxt = ids[:-1], ids[1:]
    codes = prev * vocab_size + nxt  # one int64 per pair: < 50257**2 < 2**63
    if vocab_size * vocab_size <= _DENSE_PAIRS:
        pair_counts = np.bincount(codes, minlength=vocab_size * vocab_size)
        pair_codes = np.nonzero(pair_counts)[0]
        pair_counts = pair_counts[pair_codes]
    else:
        pair_codes, pair_counts = np.unique(codes, return_counts=True)
    prev_counts = np.bincount(prev, minlength=vocab_size)  # how often each token starts a pair
    # H(X_t | X_{t-1}) = -1/N * sum over pairs (a, b) of c(a, b) * log(c(a, b) / c(a))
    c_ab = pair_counts.astype(np.float64)
    c_a = prev_counts[pair_codes // vocab_size].astype(np.float64)
    bigram = float(-(c_ab * np.log(c_ab / c_a)).sum() / codes.size)
    return {"unigram": unigram, "bigram": bigram}


def distinct_n(texts: Sequence[str], n: int = 2, unit: str = "word") -> float:
    """Distinct n-grams / all n-grams, pooled over ``texts``: 1.0 when no n-gram repeats, near 0 when
    every sample says the same thing.

    ``unit="word"`` splits each text on whitespace; ``"char"`` uses its characters. N-grams never span
    two texts. Returns 0.0 when the texts hold no n-gram at all (e.g. all shorter than ``n``).
    """
    check_int("n", n, 1, "use n >= 1 (2 counts distinct pairs).")
    check_choice("unit", unit, ("word", "char"))
    if isinstance(texts, str):
        raise ValueError("texts is one string: pass a list of samples, e.g. [text] or panel.samples.")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        units = text.split() if unit == "word" else list(text)
        grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0
