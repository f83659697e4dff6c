"""llmlab.metrics: counting baselines and distinct-n against brute-force Python references."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from llmlab.metrics import bits_per_byte, count_baselines, distinct_n, perplexity


def _entropy(counter: Counter) -> float:
    n = sum(counter.values())
    return -sum(c / n * math.log(c / n) for c in counter.values())


def _brute_force_baselines(tokens: list[int]) -> dict[str, float]:
    """H(X) from the token counts; H(X_t | X_{t-1}) = H(X_{t-1}, X_t) - H(X_{t-1}) over the pairs."""
    pairs = list(zip(tokens[:-1], tokens[1:]))
    return {
        "unigram": _entropy(Counter(tokens)),
        "bigram": _entropy(Counter(pairs)) - _entropy(Counter(a for a, _ in pairs)),
    }


def test_count_baselines_by_hand() -> None:
    alternating = count_baselines(np.array([0, 1, 0, 1, 0, 1]), vocab_size=2)
    assert alternating["unigram"] == pytest.approx(math.log(2))
    assert alternating["bigram"] == pytest.approx(0.0, abs=1e-12)  # the previous token decides the next
    # Pairs (0,0), (0,1), (1,1): after a 0 a coin flip (ln 2 twice), after a 1 certainty.
    assert count_baselines(np.array([0, 0, 1, 1]), 2)["bigram"] == pytest.approx(2 * math.log(2) / 3)
    uniform = count_baselines(np.arange(8).repeat(3), vocab_size=8)
    assert uniform["unigram"] == pytest.approx(math.log(8))


@pytest.mark.parametrize("seed", range(4))
def test_count_baselines_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(2, 30))
    # Skewed and context-dependent: a random walk on the ids, so unigram and bigram differ.
    tokens = np.cumsum(rng.integers(-2, 3, size=int(rng.integers(2, 400)))) % vocab
    got = count_baselines(tokens.astype(np.uint16), vocab)
    expected = _brute_force_baselines(tokens.tolist())
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert got["bigram"] <= got["unigram"] + 1e-12  # conditioning never raises entropy


def test_count_baselines_gpt2_vocabulary_without_a_dense_table() -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 12, size=3000)
    relabel = rng.choice(50257, size=12, replace=False)  # a bijection onto spread-out GPT-2 ids
    big = relabel[small].astype(np.uint32)
    got = count_baselines(big, vocab_size=50257)
    assert got == pytest.approx(count_baselines(small, 12), rel=1e-12)  # entropies ignore the ids' names
    assert got == pytest.approx(_brute_force_baselines(big.tolist()), rel=1e-9)


def test_count_baselines_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="token id 5 is outside"):
        count_baselines(np.array([0, 5, 1]), vocab_size=5)
    with pytest.raises(ValueError, match="at least 2"):
        count_baselines(np.array([3]), vocab_size=5)
    with pytest.raises(ValueError, match="vocab_size=0"):
        count_baselines(np.array([0, 0]), vocab_size=0)
    with pytest.raises(ValueError, match="integer token ids"):
        count_baselines(np.array([0.0, 1.0]), vocab_size=2)


def _brute_force_distinct(texts: list[str], n: int, unit: str) -> float:
    grams = []
    for text in texts:
        units = text.split() if unit == "word" else list(text)
        grams += ["\x00".join(units[i : i + n]) for i in range(len(units) - n + 1)]  # a separator no text has
    return len(set(grams)) / len(grams) if grams else 0.0


def test_distinct_n_by_hand_and_against_brute_force() -> None:
    # Word pairs: (a b) (b c) (c a) (a b) | (a b): 3 distinct out of 5.
    assert distinct_n(["a b c a b", "a b"]) == pytest.approx(3 / 5)
    assert distinct_n(["the cat", "the cat"], n=2) == 0.5  # identical samples: half the pairs are repeats
    assert distinct_n(["abab"], n=2, unit="char") == pytest.approx(2 / 3)  # ab, ba, ab
    assert distinct_n(["one", ""], n=2) == 0.0  # no pair at all
    rng = np.random.default_rng(0)
    for _ in range(20):
        texts = [" ".join(rng.choice(list("xyz"), size=int(rng.integers(0, 12)))) for _ in range(3)]
        for n, unit in ((1, "word"), (2, "word"), (3, "char")):
            assert distinct_n(texts, n, unit) == pytest.approx(_brute_force_distinct(texts, n, unit))
    with pytest.raises(ValueError, match="unit='token' is not valid"):
        distinct_n(["a b"], unit="token")
    with pytest.raises(ValueError, match="n=0 is not valid"):
        distinct_n(["a b"], n=0)
    with pytest.raises(ValueError, match="one string"):
        distinct_n("a b c")


def test_units() -> None:
    assert bits_per_byte(math.log(2), tokens=10, nbytes=10) == pytest.approx(1.0)
    assert perplexity(math.log(65)) == pytest.approx(65)


def test_sequence_bits_per_byte_equals_a_by_hand_sum_over_every_token() -> None:
    """Every token after the first is predicted once: the same as summing the loss position by position."""
    import torch.nn.functional as F

    from llmlab.metrics import sequence_bits_per_byte
    from llmlab.model import GPT

    torch.manual_seed(0)
    model = GPT(dict(vocab_size=11, block_size=8, embedding_size=16, num_heads=2, depth=1)).train()
    ids = torch.randint(0, 11, (30,))  # 29 predictions: 3 full windows of 8 and one of 5
    nats = 0.0
    with torch.no_grad():
        for start in range(0, 29, 8):
            x, y = ids[start : min(start + 8, 29)], ids[start + 1 : min(start + 9, 30)]
            logits, _ = model.eval()(x[None])
            nats += float(F.cross_entropy(logits[0], y, reduction="sum"))
    model.train()
    got = sequence_bits_per_byte(model, ids.numpy(), nbytes=40, block_size=8, batch_size=2)
    assert math.isclose(got, nats / math.log(2) / 40, rel_tol=1e-6)
    assert model.training  # the model's mode is given back
    with pytest.raises(ValueError, match="at least two"):
        sequence_bits_per_byte(model, ids[:1], nbytes=1, block_size=8)
