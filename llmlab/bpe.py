"""Byte-level BPE from scratch: the training loop and a reference encoder, in plain Python.

This is the code the tokenization notebook (01) teaches; it reads top to bottom:
:func:`pretokenize` -> :func:`count_words` -> :func:`count_pairs` -> :func:`merge_pair` ->
:func:`bpe_merge_step` -> :func:`train_bpe` (the same loop, recounting only the words that change) ->
:func:`merges_to_vocab` and :func:`encode_from_scratch`.

Ids 0..255 are the bytes themselves; merge ``k`` creates id ``256 + k``. :class:`llmlab.tokenizers.BPETokenizer`
wraps the learned merges in a ``tiktoken.Encoding`` for speed (same ids as :func:`encode_from_scratch`).
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence

import regex  # the `regex` module (a tiktoken dependency) understands \p{L}; the stdlib `re` does not

DEFAULT_BPE_VOCAB_SIZE = 1024

# GPT-2's pre-tokenizer: split text into words, numbers, punctuation runs and whitespace so that BPE merges
# never cross a word boundary. The GPT-2 release wrote it as
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# this is tiktoken's equivalent, faster spelling (possessive `++`). The same string drives both our
# from-scratch encoder and the tiktoken wrapper, so the two split text identically.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

Pair = tuple[int, int]


def pretokenize(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> list[str]:
    """Split text into GPT-2 pre-tokens ("Hello", " world", "!", "\\n\\n"); BPE works inside each one."""
    return regex.findall(pattern, text)


def count_words(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> dict[tuple[int, ...], int]:
    """Distinct pre-tokens as tuples of UTF-8 byte values, with how often each occurs.

    Shakespeare's million characters hold only tens of thousands of distinct words, so training loops over
    those (weighted by frequency) instead of over every occurrence.
    """
    counts = Counter(pretokenize(text, pattern))
    return {tuple(word.encode("utf-8")): n for word, n in counts.items()}


def count_pairs(words: dict[tuple[int, ...], int]) -> Counter[Pair]:
    """How often each pair of adjacent ids occurs, summed over the words (weighted by word frequency)."""
    pairs: Counter[Pair] = Counter()
    for ids, freq in words.items():
        for pair in zip(ids, ids[1:]):
            pairs[pair] += freq
    return pairs


def merge_pair(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` (left to right, no overlaps) by ``new_id``."""
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def most_frequent_pair(pair_counts: dict[Pair, int]) -> Pair:
    """The most frequent pair; ties go to the smallest pair of ids, so training is deterministic."""
    top = max(pair_counts.values())  # two passes at C speed: ~10x faster than one min() with a key function
    return min(p for p, n in pair_counts.items() if n == top)


def bpe_merge_step(words: dict[tuple[int, ...], int], new_id: int) -> tuple[dict[tuple[int, ...], int], Pair]:
    """One BPE step, the plain way: count all pairs, merge the most frequent one everywhere.

    Returns the updated words and the merged pair. :func:`train_bpe` gives the same merges, faster.
    """
    pair = most_frequent_pair(count_pairs(words))
    merged: dict[tuple[int, ...], int] = defaultdict(int)
    for ids, freq in words.items():
        merged[tuple(merge_pair(ids, pair, new_id))] += freq
    return dict(merged), pair


def train_bpe(text: str, vocab_size: int = DEFAULT_BPE_VOCAB_SIZE, verbose: bool = False) -> list[Pair]:
    """Learn byte-level BPE merges from ``text``: ``vocab_size`` counts the 256 bytes, the merges and EOT.

    The loop is :func:`bpe_merge_step` repeated ``vocab_size - 257`` times, with one speed-up: instead of
    recounting every pair after each merge, we keep the counts and an index pair -> words containing it, and
    update only the words that contain the merged pair (a handful, against tens of thousands).
    Merge ``k`` creates token id ``256 + k``. Stops early (with a warning) if no pair is left to merge.
    """
    num_merges = vocab_size - 256 - 1  # 256 single bytes, then merges, then <|endoftext|>
    if num_merges < 0:
        raise ValueError(f"vocab_size={vocab_size} is too small: byte-level BPE needs at least 257 (256 bytes + EOT)")
    word_counts = count_words(text)
    words = [list(ids) for ids in word_counts]  # each distinct word as a mutable list of ids
    freqs = list(word_counts.values())
    pair_counts: Counter[Pair] = Counter()
    where: defaultdict[Pair, set[int]] = defaultdict(set)  # pair -> indices of the words that contain it
    for w, ids in enumerate(words):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += freqs[w]
            where[pair].add(w)

    # `where` may keep listing a word under a pair the word has since lost. That is harmless: re-merging such
    # a word changes nothing, and its pairs are taken out and put back with the same counts.
    merges: list[Pair] = []
    for k in range(num_merges):
        if not pair_counts:
            warnings.warn(
                f"BPE training stopped after {k} merges: the text has no pair left to merge "
                f"(vocab_size {256 + k + 1} instead of {vocab_size}); train on a longer text",
                stacklevel=2,
            )
            break
        pair = most_frequent_pair(pair_counts)
        new_id = 256 + k
        if verbose and k % 100 == 0:
            print(f"merge {k + 1}/{num_merges}: {pair} -> {new_id} (occurs {pair_counts[pair]:,} times)")
        for w in where.pop(pair):
            old, new, freq = words[w], merge_pair(words[w], pair, new_id), freqs[w]
            for p in zip(old, old[1:]):  # take the word's old pairs out of the counts...
                pair_counts[p] -= freq
                if pair_counts[p] == 0:
                    del pair_counts[p]
            for p in zip(new, new[1:]):  # ...and put its new pairs in
                pair_counts[p] += freq
                where[p].add(w)
            words[w] = new
        merges.append(pair)
    return merges


def merges_to_vocab(merges: Sequence[Pair]) -> list[bytes]:
    """Token id -> the bytes it stands for (ids 0..255 are the bytes themselves)."""
    vocab = [bytes([b]) for b in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    return vocab


def encode_from_scratch(text: str, merges: Sequence[Pair], pattern: str = GPT2_SPLIT_PATTERN) -> list[int]:
    """Reference BPE encoder in plain Python: split into pre-tokens, then in each one repeatedly apply
    the earliest-learned merge that is present, until none is. Slow but obvious; tiktoken must agree."""
    rank = {pair: 256 + k for k, pair in enumerate(merges)}  # pair -> id of the merged token
    ids_of: dict[str, list[int]] = {}  # cache: a word is encoded the same way every time
    out: list[int] = []
    for word in pretokenize(text, pattern):
        if word not in ids_of:
            ids = list(word.encode("utf-8"))
            while len(ids) >= 2:
                pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
                if pair not in rank:
                    break  # no learned merge applies any more
                ids = merge_pair(ids, pair, rank[pair])
            ids_of[word] = ids
        out.extend(ids_of[word])
    return out
