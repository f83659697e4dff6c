"""Checks for notebook 01 (tokenization): one BPE merge, one training step, the encoder, the counted bigram
table and the neural bigram's loss."""

from __future__ import annotations

import copy
import math
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F

from llmlab.bpe import GPT2_SPLIT_PATTERN, bpe_merge_step, encode_from_scratch, merge_pair, pretokenize
from llmlab.check.core import Case, Mistake, Piece, Result, run_check

__all__ = ["merge", "bpe_step", "bpe_encode", "bigram_table", "bigram_loss"]


# --- merge(ids, pair, new_id) -------------------------------------------------------------------------------


def _as_ids(out: Any) -> Any:
    return [int(i) for i in out] if isinstance(out, (list, tuple)) else out


def _run_merge(fn: Any, case: Case) -> dict[str, Any]:
    ids, pair, new_id = copy.deepcopy(case.args)
    before = list(ids)
    out = fn(ids, pair, new_id)
    return {"ids": _as_ids(out), "input changed": list(ids) != before}


def _merge_advance_one(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return out


def _merge_first_only(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return list(ids[:i]) + [new_id] + list(ids[i + 2 :])
    return list(ids)


def _merge_drops_last(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_right_to_left(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    flipped = merge_pair(list(reversed(ids)), (pair[1], pair[0]), new_id)
    return list(reversed(flipped))


def _merge_cases() -> list[Case]:
    return [
        Case("one occurrence", "1 か所", ([1, 2, 3], (1, 2), 256)),
        Case("two occurrences", "2 か所", ([5, 1, 2, 7, 1, 2], (1, 2), 300)),
        Case("[7, 7, 7]", "[7, 7, 7]", ([7, 7, 7], (7, 7), 256)),
        Case("[7, 7, 7, 7]", "[7, 7, 7, 7]", ([7, 7, 7, 7], (7, 7), 256)),
        Case("pair at the end", "末尾のペア", ([4, 1, 2], (1, 2), 256)),
        Case("pair absent", "ペアなし", ([2, 1, 3], (1, 2), 256)),
        Case("empty list", "空のリスト", ([], (1, 2), 256)),
        Case("one id", "id 1 個", ([1], (1, 2), 256)),
    ]


MERGE = Piece(
    title="merge",
    reference=merge_pair,
    cases=_merge_cases,
    run=_run_merge,
    mistakes=(
        Mistake(
            "changes_input",
            "it changes the list it was given; build a new list (out = []) and return it, so the caller's ids "
            "stay as they were",
            "渡されたリストを書き換えています。新しいリスト（out = []）を作って返し、呼び出し側の ids はそのままに"
            "してください",
            probe=lambda seen: any(o["input changed"] for o in seen),
        ),
        Mistake(
            "advance_one",
            "after a merge, step past both ids of the pair (i += 2): stepping by one lets an id take part in two "
            "merges ([7, 7, 7] with the pair (7, 7) must give [X, 7])",
            "ペアを置き換えたら、ペアの 2 つの id を両方とも読み飛ばしてください（i += 2）。1 つしか進めないと、"
            "同じ id が 2 回の置き換えに使われます（[7, 7, 7] でペア (7, 7) なら [X, 7] が正解）",
            variant=_merge_advance_one,
        ),
        Mistake(
            "first_only",
            "only the first occurrence is replaced; keep scanning to the end of the list and replace every one",
            "最初の 1 か所しか置き換えていません。リストの最後まで調べて、すべての出現を置き換えてください",
            variant=_merge_first_only,
        ),
        Mistake(
            "drops_last",
            "the last id is lost when it is not part of a merge: loop while i < len(ids), and test i + 1 < len(ids) "
            "before looking at a pair",
            "置き換えに使われなかった最後の id が消えています。ループは i < len(ids) の間続け、ペアを見る前に "
            "i + 1 < len(ids) を確かめてください",
            variant=_merge_drops_last,
        ),
        Mistake(
            "right_to_left",
            "overlapping pairs are merged from the right; scan left to right ([7, 7, 7] must give [X, 7], not [7, X])",
            "重なったペアを右から置き換えています。左から右へ調べてください（[7, 7, 7] は [7, X] ではなく [X, 7]）",
            variant=_merge_right_to_left,
        ),
    ),
)


def merge(fn: Any, **options: bool) -> Result:
    """Check ``merge(ids, pair, new_id) -> list[int]`` (a tuple is fine too): every occurrence of ``pair`` in
    ``ids``, left to right without overlaps, replaced by ``new_id``; ``ids`` itself unchanged.

    Options of every check: ``show=False`` prints nothing, ``record=False`` leaves the progress file alone,
    ``strict=True`` raises :class:`llmlab.check.CheckFailed` when the piece does not pass.
    """
    return run_check(MERGE, fn, **options)


# --- bpe_step(words, new_id) -> (new_words, pair) -------------------------------------------------------------


def _run_bpe_step(fn: Any, case: Case) -> Any:
    words, new_id = copy.deepcopy(case.args)
    out = fn(words, new_id)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return out
    new_words, pair = out
    if isinstance(new_words, dict):
        new_words = {tuple(int(i) for i in k): int(v) for k, v in new_words.items()}
    if isinstance(pair, (tuple, list)):
        pair = tuple(int(i) for i in pair)
    return new_words, pair


def _pair_counts(words: dict[tuple[int, ...], int], weighted: bool = True) -> Counter:
    counts: Counter = Counter()
    for ids, freq in words.items():
        for pair in zip(ids, ids[1:]):
            counts[pair] += freq if weighted else 1
    return counts


def _apply(words: dict, pair: tuple[int, int], new_id: int, keep_freq: bool = True) -> dict:
    out: Counter = Counter()
    for ids, freq in words.items():
        out[tuple(merge_pair(ids, pair, new_id))] += freq if keep_freq else 1
    return dict(out)


def _smallest(counts: Counter) -> tuple[int, int]:
    return min(counts, key=lambda p: (-counts[p], p))


def _step_unweighted(words: dict, new_id: int) -> tuple[dict, tuple[int, int]]:
    pair = _smallest(_pair_counts(words, weighted=False))
    return _apply(words, pair, new_id), pair


def _step_tie_first(words: dict, new_id: int) -> tuple[dict, tuple[int, int]]:
    counts = _pair_counts(words)
    pair = max(counts, key=counts.get)  # the first pair counted among the most frequent
    return _apply(words, pair, new_id), pair


def _step_tie_largest(words: dict, new_id: int) -> tuple[dict, tuple[int, int]]:
    counts = _pair_counts(words)
    pair = max(counts, key=lambda p: (counts[p], p))
    return _apply(words, pair, new_id), pair


def _step_words_unchanged(words: dict, new_id: int) -> tuple[dict, tuple[int, int]]:
    return dict(words), _smallest(_pair_counts(words))


def _step_frequency_lost(words: dict, new_id: int) -> tuple[dict, tuple[int, int]]:
    pair = _smallest(_pair_counts(words))
    return _apply(words, pair, new_id, keep_freq=False), pair


def _bpe_step_cases() -> list[Case]:
    return [
        Case("frequent word", "頻出の単語", ({(5, 6): 10, (1, 2): 1, (1, 2, 9): 1}, 256)),
        Case("a three-way tie", "3 つの同点", ({(7, 8): 3, (3, 4): 3, (9, 1): 3}, 256)),
        Case("a repeated pair", "繰り返すペア", ({(1, 1, 1, 1): 2, (1, 2): 3}, 300)),
        Case(
            "'he' in three words", "3 つの単語の 'he'", ({(104, 101, 108): 2, (104, 101): 5, (116, 104, 101): 1}, 256)
        ),
    ]


BPE_STEP = Piece(
    title="bpe_step",
    reference=bpe_merge_step,
    cases=_bpe_step_cases,
    run=_run_bpe_step,
    mistakes=(
        Mistake(
            "unweighted",
            "each word's pairs count once; a word that occurs n times has its pairs n times: add freq, not 1",
            "各単語のペアを 1 回ずつしか数えていません。n 回出てくる単語のペアは n 回分です。1 ではなく freq を"
            "足してください",
            variant=_step_unweighted,
        ),
        Mistake(
            "tie_first",
            "on a tie it takes the pair counted first; take the smallest pair of ids: min(counts, key=lambda p: "
            "(-counts[p], p))",
            "同点のとき、最初に数えたペアを選んでいます。id の小さいペアを選んでください: min(counts, key=lambda p: "
            "(-counts[p], p))",
            variant=_step_tie_first,
        ),
        Mistake(
            "tie_largest",
            "on a tie it takes the largest pair of ids; the rule here (and in llmlab) is the smallest: compare the "
            "first ids, then the second",
            "同点のとき、id の大きいペアを選んでいます。ここ（と llmlab）の決まりは小さいほうです。1 つ目の id、"
            "次に 2 つ目の id で比べてください",
            variant=_step_tie_largest,
        ),
        Mistake(
            "words_unchanged",
            "the right pair is found but the words come back unmerged: apply merge(ids, pair, new_id) to every word "
            "and return the new words",
            "正しいペアは見つかっていますが、単語が置き換えられていません。すべての単語に merge(ids, pair, new_id) "
            "を適用して、新しい単語を返してください",
            variant=_step_words_unchanged,
        ),
        Mistake(
            "frequency_lost",
            "the merged words lost their frequencies: new_words[merge(ids, pair, new_id)] += freq, not 1",
            "置き換えた単語の出現回数が失われています。1 ではなく new_words[merge(ids, pair, new_id)] += freq "
            "としてください",
            variant=_step_frequency_lost,
        ),
    ),
)


def bpe_step(fn: Any, **options: bool) -> Result:
    """Check ``bpe_step(words, new_id) -> (new_words, pair)``: count the adjacent pairs of ``words`` (byte tuples
    -> frequency), each weighted by its word's frequency; take the most frequent pair (on a tie the smallest ids);
    return the words with that pair merged into ``new_id`` everywhere, and the pair."""
    return run_check(BPE_STEP, fn, **options)


# --- bpe_encode(text, merges) -----------------------------------------------------------------------------------

# Merge k makes id 256 + k. (101, 32), "e" + " ", can only meet across a pre-token boundary; (98, 99) before
# (97, 98) tells the earliest-learned merge from the leftmost one in "abc".
_MERGES = [(98, 99), (97, 98), (101, 32), (116, 104), (259, 101), (32, 260), (99, 100)]


def _encode_words(
    text: str,
    merges: list,
    words: list[str] | None = None,
    as_bytes: bool = True,
    leftmost: bool = False,
    once: bool = False,
) -> list[int]:
    rank = {tuple(pair): 256 + k for k, pair in enumerate(merges)}
    out: list[int] = []
    for word in words if words is not None else pretokenize(text, GPT2_SPLIT_PATTERN):
        ids = list(word.encode("utf-8")) if as_bytes else [ord(ch) for ch in word]
        while len(ids) >= 2:
            present = [p for p in zip(ids, ids[1:]) if p in rank]
            if not present:
                break
            pair = present[0] if leftmost else min(present, key=rank.__getitem__)
            ids = merge_pair(ids, pair, rank[pair])
            if once:
                break
        out.extend(ids)
    return out


def _encode_cases() -> list[Case]:
    return [
        Case("'abc'", "'abc'", ("abc", _MERGES)),
        Case("'the cat the end'", "'the cat the end'", ("the cat the end", _MERGES)),
        Case("'Café ☕ abcd'", "'Café ☕ abcd'", ("Café ☕ abcd", _MERGES)),
        Case("empty text", "空のテキスト", ("", _MERGES)),
        Case("no merges", "マージなし", ("the cat", [])),
    ]


BPE_ENCODE = Piece(
    title="bpe_encode",
    reference=encode_from_scratch,
    cases=_encode_cases,
    run=lambda fn, case: _as_ids(fn(*copy.deepcopy(case.args))),
    mistakes=(
        Mistake(
            "no_pretokenize",
            "merges cross word boundaries: split the text with regex.findall(GPT2_SPLIT_PATTERN, text) first and "
            "merge inside each piece, as training did",
            "マージが単語の境界をまたいでいます。まず regex.findall(GPT2_SPLIT_PATTERN, text) でテキストを分け、"
            "学習のときと同じく各ピースの中だけでマージしてください",
            variant=lambda text, merges: _encode_words(text, merges, words=[text] if text else []),
        ),
        Mistake(
            "leftmost",
            "it merges the leftmost pair that has a merge; merge the pair learned earliest instead (the smallest "
            "rank), whatever its place in the word",
            "マージのある最も左のペアを置き換えています。単語のどこにあっても、最も早く学習したペア（rank が最小）"
            "を置き換えてください",
            variant=lambda text, merges: _encode_words(text, merges, leftmost=True),
        ),
        Mistake(
            "characters_not_bytes",
            "it starts from characters (ord), not UTF-8 bytes: use list(word.encode('utf-8')), so 'é' is two ids "
            "(195, 169)",
            "文字（ord）から始めています。UTF-8 のバイトから始めてください: list(word.encode('utf-8'))。'é' は "
            "2 つの id（195, 169）になります",
            variant=lambda text, merges: _encode_words(text, merges, as_bytes=False),
        ),
        Mistake(
            "one_merge_per_word",
            "it stops after one merge per word; repeat until no adjacent pair has a merge (a while loop)",
            "単語ごとに 1 回マージしたところで止まっています。隣り合うペアにマージがなくなるまで（while ループで）"
            "繰り返してください",
            variant=lambda text, merges: _encode_words(text, merges, once=True),
        ),
    ),
)


def bpe_encode(fn: Any, **options: bool) -> Result:
    """Check ``bpe_encode(text, merges) -> list[int]``: split ``text`` into GPT-2 pre-tokens, start each from its
    UTF-8 bytes, and repeatedly apply the earliest-learned merge present (merge k makes id 256 + k)."""
    return run_check(BPE_ENCODE, fn, **options)


# --- bigram_table(text, stoi) --------------------------------------------------------------------------------


def _table(
    text: str,
    stoi: dict[str, int],
    transpose: bool = False,
    dim: int = 1,
    smooth: bool = True,
    numerator_only: bool = False,
) -> torch.Tensor:
    V = len(stoi)
    counts = torch.zeros(V, V)
    # Count pairs first, then one write per distinct pair: the practice edition's fallback runs this on the
    # whole corpus, where a tensor write per character would take seconds.
    for (a, b), n in Counter(zip(text, text[1:])).items():
        counts[stoi[a], stoi[b]] += n
    if transpose:
        counts = counts.T
    if numerator_only:
        return (counts + 1) / counts.sum(dim=1, keepdim=True)
    c = counts + 1 if smooth else counts
    return c / c.sum(dim=dim, keepdim=True)


def _reference_table(text: str, stoi: dict[str, int]) -> torch.Tensor:
    return _table(text, stoi)


def _table_cases() -> list[Case]:
    abcd = {"a": 0, "b": 1, "c": 2, "d": 3}
    return [
        Case("'abcab'", "'abcab'", ("abcab", abcd)),
        Case("'aaab'", "'aaab'", ("aaab", {"a": 0, "b": 1})),
        Case("'ba'", "'ba'", ("ba", {"a": 0, "b": 1, "c": 2})),
        Case("one character", "1 文字", ("x", {"x": 0})),
    ]


BIGRAM_TABLE = Piece(
    title="bigram_table",
    reference=_reference_table,
    cases=_table_cases,
    check_dtype=False,  # float32 or float64 are both a table of probabilities
    mistakes=(
        Mistake(
            "transposed",
            "the table is transposed: row = the current character, column = the next one (counts[stoi[a], stoi[b]] "
            "for the pair a, b)",
            "表が転置しています。行が今の文字、列が次の文字です（ペア a, b なら counts[stoi[a], stoi[b]]）",
            variant=lambda text, stoi: _table(text, stoi, transpose=True),
        ),
        Mistake(
            "columns_sum_to_one",
            "the columns sum to 1; each row must (the next character's distribution): .sum(dim=1, keepdim=True)",
            "列の和が 1 になっています。各行の和が 1 になるように（次の文字の分布）: .sum(dim=1, keepdim=True)",
            variant=lambda text, stoi: _table(text, stoi, dim=0),
        ),
        Mistake(
            "no_smoothing",
            "no add-one smoothing: unseen pairs get probability 0 and unseen characters a row of NaN; normalise "
            "counts + 1",
            "1 を足す平滑化がありません。見たことのないペアの確率が 0 に、出てこない文字の行が NaN になります。"
            "counts + 1 を正規化してください",
            variant=lambda text, stoi: _table(text, stoi, smooth=False),
        ),
        Mistake(
            "smoothing_numerator_only",
            "the + 1 is in the numerator only, so rows do not sum to 1: divide counts + 1 by its own row sums",
            "+ 1 が分子にしかないため、行の和が 1 になりません。counts + 1 をその行の和で割ってください",
            variant=lambda text, stoi: _table(text, stoi, numerator_only=True),
        ),
    ),
)


def bigram_table(fn: Any, **options: bool) -> Result:
    """Check ``bigram_table(text, stoi) -> (V, V) tensor``: count each pair of neighbouring characters (row = the
    current character, column = the next), add one to every count, and divide each row by its sum."""
    return run_check(BIGRAM_TABLE, fn, **options)


# --- bigram_loss(W, xs, ys) ---------------------------------------------------------------------------------


def _reference_bigram_loss(W: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(W[xs], ys)


def _bigram_loss_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    W = torch.randn(5, 5, generator=g)
    xs, ys = torch.randint(0, 5, (7,), generator=g), torch.randint(0, 5, (7,), generator=g)
    W3 = torch.randn(3, 3, generator=g)
    big = torch.randn(4, 4, generator=g) * 60
    return [
        Case("V = 5, 7 pairs", "V = 5、ペア 7 個", (W, xs, ys)),
        Case("one pair", "ペア 1 個", (W3, torch.tensor([2]), torch.tensor([0]))),
        Case("large logits", "大きなロジット", (big, torch.tensor([0, 1, 2, 3]), torch.tensor([3, 3, 0, 1]))),
    ]


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _as_number(out: Any) -> Any:
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        return float(out.detach().reshape(()))
    return out


BIGRAM_LOSS = Piece(
    title="bigram_loss",
    reference=_reference_bigram_loss,
    cases=_bigram_loss_cases,
    run=lambda fn, case: _as_number(fn(*[a.clone() for a in case.args])),
    mistakes=(
        Mistake(
            "overflow",
            "it overflows for large logits (exp(100) is inf in float32): subtract each row's max before exp, or use "
            "F.log_softmax / F.cross_entropy, which do",
            "大きなロジットでオーバーフローしています（float32 では exp(100) が inf）。exp の前に各行の最大値を"
            "引くか、それをしてくれる F.log_softmax / F.cross_entropy を使ってください",
            probe=lambda seen: _finite(seen[0]) and not _finite(seen[2]),
        ),
        Mistake(
            "logits_as_log_probs",
            "the logits are used as log-probabilities: a row of W is only a score; take log_softmax over the row "
            "first (F.cross_entropy(W[xs], ys) does)",
            "ロジットを対数確率として使っています。W の行はただのスコアです。先に行ごとに log_softmax を取って"
            "ください（F.cross_entropy(W[xs], ys) がそうします）",
            variant=lambda W, xs, ys: -W[xs, ys].mean(),
        ),
        Mistake(
            "softmax_over_batch",
            "the softmax runs over the batch (dim=0); each row's logits are one distribution over the next "
            "character: dim=-1",
            "softmax をバッチの向き（dim=0）に取っています。各行のロジットが次の文字の 1 つの分布です: dim=-1",
            variant=lambda W, xs, ys: -F.log_softmax(W[xs], dim=0)[torch.arange(len(ys)), ys].mean(),
        ),
        Mistake(
            "sum_not_mean",
            "it sums over the pairs; the loss is the mean (so its size does not depend on how many pairs there are)",
            "ペアについて和を取っています。損失は平均です（ペアの数によって大きさが変わらないように）",
            variant=lambda W, xs, ys: F.cross_entropy(W[xs], ys, reduction="sum"),
        ),
        Mistake(
            "sign",
            "the sign is flipped: the loss is the mean of -log p (positive, lower is better)",
            "符号が逆です。損失は -log p の平均です（正の値で、小さいほど良い）",
            variant=lambda W, xs, ys: -F.cross_entropy(W[xs], ys),
        ),
        Mistake(
            "swapped",
            "inputs and targets are swapped: the logits come from the current characters W[xs], the targets are ys",
            "入力とターゲットが逆です。ロジットは今の文字の行 W[xs]、ターゲットは ys です",
            variant=lambda W, xs, ys: F.cross_entropy(W[ys], xs),
        ),
    ),
)


def bigram_loss(fn: Any, **options: bool) -> Result:
    """Check ``bigram_loss(W, xs, ys) -> scalar``: row ``W[i]`` holds the logits of the character after character
    ``i``; the loss is the mean cross-entropy of ``W[xs]`` against ``ys`` (a 0-d tensor or a float)."""
    return run_check(BIGRAM_LOSS, fn, **options)
