"""Byte-level BPE from scratch: the training loop and a reference encoder, in plain Python.

This is the code the tokenization notebook (01) teaches; it reads top to bottom:
:func:`pretokenize` -> :func:`count_words` -> :func:`count_pairs` -> :func:`merge_pair` ->
:func:`bpe_merge_step` -> :func:`train_bpe` (the same loop, recounting only the words that change) ->
:func:`merges_to_vocab` and :func:`encode_from_scratch`.

Ids 0..255 are the bytes themselves; merge ``k`` creates id ``256 + k``. :class:`llmlab.tokenizers.BPETokenizer`
wraps the learned merges in a ``tiktoken.Encoding`` for speed (same ids as :func:`encode_from_scratch`).

Special tokens (``<|endoftext|>`` between documents, chat markers) are not text: :func:`train_bpe` takes them as
``special_tokens``, cuts the text at them first (:func:`split_on_specials`) and learns merges only inside the
stretches between them, so no learned token ever holds a piece of a special token or spans one.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import regex  # the `regex` module (a tiktoken dependency) understands \p{L}; the stdlib `re` does not

from llmlab.validate import invalid

DEFAULT_BPE_VOCAB_SIZE = 1024
EOT = "<|endoftext|>"  # every llmlab vocabulary ends with it (see llmlab.tokenizers)

# GPT-2's pre-tokenizer: split text into words, numbers, punctuation runs and whitespace so that BPE merges
# never cross a word boundary. The GPT-2 release wrote it as
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# this is tiktoken's equivalent, faster spelling (possessive `++`). The same string drives both our
# from-scratch encoder and the tiktoken wrapper, so the two split text identically.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

Pair = tuple[int, int]


def non_default_size(vocab_size: int | None) -> int | None:
    """``vocab_size`` when it asks for a BPE of another size than :data:`DEFAULT_BPE_VOCAB_SIZE`, else None: only
    such a size is named in a data folder, a prepare request or a command line."""
    return None if vocab_size in (None, DEFAULT_BPE_VOCAB_SIZE) else vocab_size


def check_special_tokens(special_tokens: Iterable[str], name: str = "special_tokens") -> tuple[str, ...]:
    """``special_tokens`` as a tuple of distinct non-empty strings in the given order, ``<|endoftext|>`` left
    out (every llmlab vocabulary has it already, as its last id); ValueError for anything else."""
    if isinstance(special_tokens, (str, bytes)) or not isinstance(special_tokens, Iterable):
        raise invalid(name, special_tokens, f"give a list of strings, e.g. [{EOT!r}, '<|pad|>'].")
    tokens = list(special_tokens)
    if any(not isinstance(t, str) or not t for t in tokens) or len(set(tokens)) != len(tokens):
        raise invalid(name, tokens, "give distinct, non-empty strings, e.g. ['<|pad|>', '<|sep|>'].")
    return tuple(t for t in tokens if t != EOT)


@functools.lru_cache(maxsize=64)
def special_tokens_regex(special_tokens: frozenset[str]) -> re.Pattern[str]:
    """A regex finding the special tokens in text, leftmost first and, where two start at the same place,
    the longest (``"<|a|>x"`` before ``"<|a|>"``), as Hugging Face tokenizers match added tokens.

    Longest first is a choice: tiktoken (0.14) follows no such rule. Given the special tokens ``"<|a|>x"``
    and ``"<|a|>"`` it finds ``"<|a|>"`` in ``"q<|a|>xz"``, given ``"<|c|>xyz"`` and ``"<|c|>"`` it finds
    ``"<|c|>xyz"``. With one special token, as GPT-2 has, or with none overlapping, both agree.
    """
    ordered = sorted(special_tokens, key=lambda t: (-len(t), t))  # alternation tries these in order
    return re.compile("|".join(map(re.escape, ordered)))


def split_on_specials(text: str, special_tokens: Iterable[str]) -> list[str]:
    """The stretches of ``text`` between its special tokens (the special tokens themselves dropped).

    ``split_on_specials("a<|endoftext|>b", ["<|endoftext|>"]) == ["a", "b"]``. Training and encoding both
    treat each stretch as a text of its own: no pre-token, and so no merge, crosses a special token.
    """
    tokens = frozenset(special_tokens)
    if not tokens:
        return [text]
    return special_tokens_regex(tokens).split(text)


def pretokenize(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> list[str]:
    """Split text into GPT-2 pre-tokens ("Hello", " world", "!", "\\n\\n"); BPE works inside each one."""
    return regex.findall(pattern, text)


def count_words(
    text: str, pattern: str = GPT2_SPLIT_PATTERN, special_tokens: Sequence[str] = ()
) -> dict[tuple[int, ...], int]:
    """Distinct pre-tokens as tuples of UTF-8 byte values, with how often each occurs.

    Shakespeare's million characters hold only tens of thousands of distinct words, so training loops over
    those (weighted by frequency) instead of over every occurrence. With ``special_tokens`` the text is cut
    at them first (:func:`split_on_specials`): they are not words, and no word spans one.
    """
    counts: Counter[str] = Counter()
    for stretch in split_on_specials(text, special_tokens):
        counts.update(pretokenize(stretch, pattern))
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
    """The most frequent pair; a tie goes to the smallest pair of ids, compared as tuples.

    Exactly: among the pairs with the highest count, the one with the smallest first id, and among those
    the smallest second id; so ``{(3, 4): 5, (1, 9): 5, (2, 0): 5}`` gives ``(1, 9)``. Ids are byte values
    (0..255), then merge ids (``256 + k``, in the order learned): ``(32, 97)`` = ``(b" ", b"a")`` beats
    ``(97, 98)`` = ``(b"a", b"b")``, and ``(97, 300)`` beats both ``(98, 99)`` and ``(256, 5)``. The rule
    depends only on the counts, never on the order of the text or of a dict, so training is deterministic.

    Other courses and libraries break ties differently, which is one reason their merges can differ from
    ours on the same text (checked on the text ``"cd ab"``, three pairs of count 1):

    - tiktoken's teaching trainer (``tiktoken._educational.bpe_train``) and Karpathy's minbpe both take
      ``max(stats, key=...)`` over a dict filled in text order: the tie goes to the pair that occurs *first
      in the text*. tiktoken's picks ``b"cd"`` there (run); minbpe's code reads the same way (read, not run).
    - Hugging Face ``tokenizers``' ``BpeTrainer`` (0.23, ByteLevel pre-tokenizer) picks ``(a, b)`` (run), where
      we pick ``(b" ", b"a")``: consistent with a smallest-pair rule over its own alphabet, in which a space is
      the character ``"Ġ"`` (U+0120) and sorts after the letters (its code was not read).
    - GPT-2's files (``vocab.bpe``) list the merges, not the rule that chose them: its tie rule is unknown.
    """
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


def train_bpe(
    text: str,
    vocab_size: int = DEFAULT_BPE_VOCAB_SIZE,
    verbose: bool = False,
    special_tokens: Sequence[str] = (),
) -> list[Pair]:
    """Learn byte-level BPE merges from ``text``: ``vocab_size`` counts the 256 bytes, the merges, the extra
    ``special_tokens`` and EOT.

    The loop is :func:`bpe_merge_step` repeated ``vocab_size - 257 - len(extra special tokens)`` times, with
    one speed-up: instead of recounting every pair after each merge, we keep the counts and an index
    pair -> words containing it, and update only the words that contain the merged pair (a handful, against
    tens of thousands). Merge ``k`` creates token id ``256 + k``. Stops early (with a warning) if no pair is
    left to merge.

    Each step merges the most frequent pair; ties go to the smallest pair of ids (:func:`most_frequent_pair`
    says exactly, and how other trainers differ).

    ``special_tokens`` (e.g. ``["<|endoftext|>", "<|pad|>"]``) are cut out of the text before counting
    (:func:`split_on_specials`), so no merge learns their bytes from them or joins text across them. They
    keep ids of their own after the merges (:class:`llmlab.tokenizers.BPETokenizer` gives them out);
    ``<|endoftext|>`` is always in the vocabulary, as its last id, and is counted once.
    """
    extra = check_special_tokens(special_tokens)
    num_merges = vocab_size - 256 - len(extra) - 1  # 256 single bytes, merges, extra specials, <|endoftext|>
    if num_merges < 0:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: byte-level BPE needs at least {257 + len(extra)} "
            f"(256 bytes + {len(extra)} special tokens + EOT)"
        )
    # Cut at exactly the tokens given: without special_tokens, "<|endoftext|>" in the text stays plain text.
    cut_at = (*extra, EOT) if EOT in special_tokens else extra
    word_counts = count_words(text, special_tokens=cut_at)
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
