"""Checks for notebook 02 (attention): the attention weights, one head, heads side by side, and all heads in
one batched call."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.check.core import Case, Misfit, Mistake, Piece, Result, run_check

__all__ = ["attention_weights", "head", "multi_head", "multi_head_attention"]


# --- attention_weights(q, k, causal=True) -----------------------------------------------------------------------


def _weights(
    q: torch.Tensor,
    k: torch.Tensor,
    causal: bool = True,
    *,
    scale: str = "sqrt",
    diagonal: int = 0,
    upper: bool = False,
    dim: int = -1,
    when: str = "before",
    fill: float = float("-inf"),
    always: bool = False,
) -> torch.Tensor:
    """The attention weights, and (through the keywords) the wrong versions learners write."""
    T, hs = q.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1)
    scores = scores / {"sqrt": math.sqrt(hs), "none": 1.0, "hs": hs}[scale]
    ones = torch.ones(T, T, dtype=torch.bool, device=q.device)
    allowed = ones.triu(-diagonal) if upper else ones.tril(diagonal)
    masked = causal or always
    if masked and when == "before":
        scores = scores.masked_fill(~allowed, fill)
    weights = F.softmax(scores, dim=dim)
    if masked and when == "after":
        weights = weights.masked_fill(~allowed, 0.0)
    return weights


def _reference_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    return _weights(q, k, causal)


def _qk(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


def _weights_cases() -> list[Case]:
    return [
        Case("B=2, nh=2, T=5, hs=4", "B=2、nh=2、T=5、hs=4", _qk((2, 2, 5, 4), 1)),
        Case("batch of one", "バッチ 1 個", _qk((1, 1, 4, 8), 2)),
        Case("T = 1", "T = 1", _qk((1, 2, 1, 4), 3)),
        Case("ties (q = k = 0)", "同点（q = k = 0）", (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))),
        Case("causal=False", "causal=False", _qk((2, 1, 5, 4), 4), {"causal": False}),
        Case("float64", "float64", _qk((1, 2, 3, 4), 5, torch.float64)),
    ]


ATTENTION_WEIGHTS = Piece(
    title="attention_weights",
    reference=_reference_weights,
    cases=_weights_cases,
    mistakes=(
        Mistake(
            "softmax_axis",
            "the softmax runs down the columns; each row (what position t takes from every position) must sum to "
            "1: F.softmax(scores, dim=-1)",
            "softmax を列の向きに取っています。各行（位置 t が各位置から受け取る量）の和が 1 になるように: "
            "F.softmax(scores, dim=-1)",
            variant=lambda q, k, causal=True: _weights(q, k, causal, dim=-2),
        ),
        Mistake(
            "no_scale",
            "the scores are not scaled: divide q @ kᵀ by √hs (math.sqrt(q.size(-1))), or the softmax saturates as "
            "the head size grows",
            "スコアをスケーリングしていません。q @ kᵀ を √hs（math.sqrt(q.size(-1))）で割ってください。そうしないと"
            "ヘッドが大きくなるほど softmax が飽和します",
            variant=lambda q, k, causal=True: _weights(q, k, causal, scale="none"),
        ),
        Mistake(
            "scale_by_hs",
            "the scores are divided by hs; divide by its square root, √hs: that keeps their variance at 1",
            "スコアを hs で割っています。その平方根 √hs で割ってください。そうすると分散が 1 に保たれます",
            variant=lambda q, k, causal=True: _weights(q, k, causal, scale="hs"),
        ),
        Mistake(
            "sees_next",
            "the mask lets position t see t + 1: torch.tril(torch.ones(T, T)) keeps the diagonal and everything "
            "below it, nothing above",
            "マスクで位置 t から t + 1 が見えています。torch.tril(torch.ones(T, T)) は対角とその下だけを残し、"
            "上は残しません",
            variant=lambda q, k, causal=True: _weights(q, k, causal, diagonal=1),
        ),
        Mistake(
            "hides_itself",
            "the mask hides position t from itself (row 0 is all -inf, hence NaN): keep the diagonal, tril with "
            "diagonal=0",
            "マスクで位置 t が自分自身を見られません（0 行目がすべて -inf になり NaN）。対角は残してください"
            "（tril の diagonal=0）",
            variant=lambda q, k, causal=True: _weights(q, k, causal, diagonal=-1),
        ),
        Mistake(
            "masks_the_past",
            "the mask hides the past and shows the future (triu); a position may look at itself and before: tril",
            "マスクが過去を隠して未来を見せています（triu）。見てよいのは自分自身とそれより前です: tril",
            variant=lambda q, k, causal=True: _weights(q, k, causal, upper=True),
        ),
        Mistake(
            "mask_after_softmax",
            "the mask is applied after the softmax, so the rows no longer sum to 1: fill the scores with -inf "
            "first, then take the softmax",
            "softmax の後でマスクしているため、行の和が 1 になりません。先にスコアを -inf で埋めてから softmax を"
            "取ってください",
            variant=lambda q, k, causal=True: _weights(q, k, causal, when="after"),
        ),
        Mistake(
            "mask_fills_zero",
            "the future scores are set to 0, which still gets weight exp(0) > 0; fill them with float('-inf')",
            "未来のスコアを 0 にしていますが、exp(0) > 0 の重みが残ります。float('-inf') で埋めてください",
            variant=lambda q, k, causal=True: _weights(q, k, causal, fill=0.0),
        ),
        Mistake(
            "causal_ignored",
            "causal=True changes nothing: with causal, fill the scores above the diagonal with -inf",
            "causal=True でも何も変わっていません。causal のときは対角より上のスコアを -inf で埋めてください",
            variant=lambda q, k, causal=True: _weights(q, k, False),
        ),
        Mistake(
            "always_masked",
            "the mask is applied even with causal=False; mask only when causal is true",
            "causal=False でもマスクしています。マスクは causal が真のときだけです",
            variant=lambda q, k, causal=True: _weights(q, k, causal, always=True),
        ),
    ),
)


def attention_weights(fn: Any, **options: bool) -> Result:
    """Check ``attention_weights(q, k, causal=True) -> (B, nh, T, T)``: softmax over each row of q @ kᵀ / √hs,
    with the scores above the diagonal set to -inf when ``causal``; the result keeps q's dtype."""
    return run_check(ATTENTION_WEIGHTS, fn, **options)


# --- class Head(C, hs): query, key, value -------------------------------------------------------------------------


class _Head(nn.Module):
    """The reference head; the wrong heads below change only what forward computes."""

    def __init__(self, C: int, hs: int) -> None:
        super().__init__()
        self.query = nn.Linear(C, hs, bias=False)
        self.key = nn.Linear(C, hs, bias=False)
        self.value = nn.Linear(C, hs, bias=False)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.query(x), self.key(x), self.value(x)

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        q, k, v = self.qkv(x)
        return _weights(q, k, causal) @ v


class _HeadScaleByC(_Head):
    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        q, k, v = self.qkv(x)
        return _weights(q * math.sqrt(q.size(-1)) / math.sqrt(x.size(-1)), k, causal) @ v


class _HeadNoMask(_Head):
    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        q, k, v = self.qkv(x)
        return _weights(q, k, False) @ v


class _HeadKeysFirst(_Head):
    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        q, k, v = self.qkv(x)
        return _weights(k, q, causal) @ v


class _HeadWeightsTimesX(_Head):
    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        q, k, _ = self.qkv(x)
        return _weights(q, k, causal) @ x


def _linears(module: Any, names: tuple[str, ...]) -> list[nn.Linear] | None:
    found = [getattr(module, n, None) for n in names]
    return found if all(isinstance(f, nn.Linear) for f in found) else None  # type: ignore[return-value]


def _load(linear: nn.Linear, weight: torch.Tensor) -> None:
    with torch.no_grad():
        linear.weight.copy_(weight)
        if linear.bias is not None:  # the notebook's heads have none; a learner's bias=True is set to 0, not judged
            linear.bias.zero_()


def _run_head(cls: Any, case: Case) -> torch.Tensor:
    C, hs, x, causal, weights = case.args
    torch.manual_seed(0)
    head = cls(C, hs)
    layers = _linears(head, ("query", "key", "value"))
    if layers is None:
        raise Misfit("layers")
    if any(tuple(layer.weight.shape) != (hs, C) for layer in layers):
        raise Misfit("layer_shape")
    for layer, w in zip(layers, weights):
        _load(layer, w)
    with torch.no_grad():
        return head(x.clone()) if causal else head(x.clone(), causal=False)


def _head_cases() -> list[Case]:
    def case(label: str, label_ja: str, C: int, hs: int, B: int, T: int, causal: bool, seed: int) -> Case:
        g = torch.Generator().manual_seed(seed)
        weights = [torch.randn(hs, C, generator=g) / math.sqrt(C) for _ in range(3)]
        return Case(label, label_ja, (C, hs, torch.randn(B, T, C, generator=g), causal, weights))

    return [
        case("C=16, hs=8, B=2, T=6", "C=16、hs=8、B=2、T=6", 16, 8, 2, 6, True, 1),
        case("T = 1", "T = 1", 12, 4, 1, 1, True, 2),
        case("C=6, hs=3, B=1, T=5", "C=6、hs=3、B=1、T=5", 6, 3, 1, 5, True, 3),
        case("causal=False", "causal=False", 8, 4, 2, 4, False, 4),
    ]


HEAD = Piece(
    title="Head",
    reference=_Head,
    cases=_head_cases,
    run=_run_head,
    mistakes=(
        Mistake(
            "layers",
            "the head needs three layers named query, key and value: nn.Linear(C, hs, bias=False) each",
            "ヘッドには query、key、value という名前の 3 つの層が必要です。それぞれ nn.Linear(C, hs, bias=False)",
        ),
        Mistake(
            "layer_shape",
            "query, key and value each map the C channels of x to hs channels: nn.Linear(C, hs), in that order",
            "query、key、value はどれも x の C チャネルを hs チャネルに写します: この順で nn.Linear(C, hs)",
        ),
        Mistake(
            "scale_by_C",
            "the scores are divided by √C, the embedding size; a head's scores are divided by √hs, its own size",
            "スコアを埋め込みの大きさ C の平方根 √C で割っています。ヘッドのスコアはヘッド自身の大きさ hs の平方根"
            " √hs で割ります",
            variant=_HeadScaleByC,
        ),
        Mistake(
            "no_mask",
            "the head looks ahead: pass causal on to the attention, so position t sees only positions <= t",
            "ヘッドが先を見ています。causal をアテンションに渡して、位置 t からは t 以下の位置だけが見えるように"
            "してください",
            variant=_HeadNoMask,
        ),
        Mistake(
            "keys_and_queries_swapped",
            "queries and keys are swapped: the scores are q @ kᵀ, row t the query of position t",
            "クエリとキーが逆です。スコアは q @ kᵀ で、t 行目が位置 t のクエリです",
            variant=_HeadKeysFirst,
        ),
        Mistake(
            "weights_times_x",
            "the weights multiply x; they average the values: weights @ self.value(x)",
            "重みを x に掛けています。重みで平均するのは値（value）です: weights @ self.value(x)",
            variant=_HeadWeightsTimesX,
        ),
    ),
)


def head(cls: Any, **options: bool) -> Result:
    """Check ``class Head(nn.Module)``: ``Head(C, hs)`` has ``query``, ``key``, ``value`` = ``nn.Linear(C, hs,
    bias=False)``; ``forward(x, causal=True)`` maps (B, T, C) to (B, T, hs) by causal attention. The check loads
    its own weights into the three layers."""
    return run_check(HEAD, cls, **options)


# --- class MultiHead(C, num_heads): heads, proj ----------------------------------------------------------------


class _MultiHead(nn.Module):
    def __init__(self, C: int, num_heads: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(_Head(C, C // num_heads) for _ in range(num_heads))
        self.proj = nn.Linear(C, C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([h(x) for h in self.heads], dim=-1))


class _MultiHeadNoProj(_MultiHead):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([h(x) for h in self.heads], dim=-1)


def _run_multi_head(cls: Any, case: Case) -> torch.Tensor:
    C, nh, x, c_attn, c_proj = case.args
    hs = C // nh
    torch.manual_seed(0)
    module = cls(C, nh)
    heads = getattr(module, "heads", None)
    if not isinstance(heads, nn.ModuleList) or len(heads) != nh:
        raise Misfit("heads")
    if len({id(h) for h in heads}) != nh:
        raise Misfit("same_head")
    layers = [_linears(h, ("query", "key", "value")) for h in heads]
    if any(ls is None or any(tuple(lin.weight.shape) != (hs, C) for lin in ls) for ls in layers):
        raise Misfit("head_size")
    proj = getattr(module, "proj", None)
    if not isinstance(proj, nn.Linear):
        raise Misfit("no_proj")
    all_q, all_k, all_v = c_attn.split(C, dim=0)  # (C, C) each: head h owns rows h*hs .. (h+1)*hs
    for h, (q, k, v) in enumerate(layers):  # type: ignore[misc]
        rows = slice(h * hs, (h + 1) * hs)
        _load(q, all_q[rows])
        _load(k, all_k[rows])
        _load(v, all_v[rows])
    _load(proj, c_proj)
    with torch.no_grad():
        return module(x.clone())


def _multi_head_cases() -> list[Case]:
    def case(label: str, label_ja: str, C: int, nh: int, B: int, T: int, seed: int) -> Case:
        g = torch.Generator().manual_seed(seed)
        c_attn = torch.randn(3 * C, C, generator=g) / math.sqrt(C)
        c_proj = torch.randn(C, C, generator=g) / math.sqrt(C)
        return Case(label, label_ja, (C, nh, torch.randn(B, T, C, generator=g), c_attn, c_proj))

    return [
        case("C=8, 2 heads, B=2, T=5", "C=8、ヘッド 2 個、B=2、T=5", 8, 2, 2, 5, 1),
        case("C=12, 3 heads, T = 1", "C=12、ヘッド 3 個、T = 1", 12, 3, 1, 1, 2),
        case("C=8, 4 heads, B=1, T=6", "C=8、ヘッド 4 個、B=1、T=6", 8, 4, 1, 6, 3),
    ]


MULTI_HEAD = Piece(
    title="MultiHead",
    reference=_MultiHead,
    cases=_multi_head_cases,
    run=_run_multi_head,
    mistakes=(
        Mistake(
            "heads",
            "MultiHead needs its heads in an nn.ModuleList named heads, num_heads of them (a plain list hides "
            "their weights from the optimizer)",
            "MultiHead には heads という名前の nn.ModuleList に num_heads 個のヘッドが必要です（ふつうのリストだと"
            "重みがオプティマイザから見えません）",
        ),
        Mistake(
            "same_head",
            "every entry of heads is the same Head ([Head(...)] * n repeats one module): build a new Head for each",
            "heads のどの要素も同じ Head です（[Head(...)] * n は 1 つのモジュールを繰り返すだけ）。ヘッドごとに"
            "新しい Head を作ってください",
        ),
        Mistake(
            "head_size",
            "each head must work on C // num_heads channels: Head(C, C // num_heads), so the heads side by side "
            "give C channels again",
            "各ヘッドは C // num_heads チャネルを受け持ちます: Head(C, C // num_heads)。ヘッドを横に並べるとまた C "
            "チャネルになります",
        ),
        Mistake(
            "concat_dim",
            "the heads' outputs must be joined side by side along the channels, torch.cat([...], dim=-1), into C "
            "channels before the projection",
            "ヘッドの出力は、射影の前にチャネルの向きに横に並べて torch.cat([...], dim=-1) で C チャネルにしてください",
            raises=r"mat1 and mat2 shapes cannot be multiplied|size mismatch",
        ),
        Mistake(
            "no_proj",
            "the output projection is missing: self.proj = nn.Linear(C, C, bias=False), applied to the joined heads",
            "出力の射影がありません: self.proj = nn.Linear(C, C, bias=False) を、並べたヘッドの出力に適用してください",
            variant=_MultiHeadNoProj,
        ),
    ),
)


def multi_head(cls: Any, **options: bool) -> Result:
    """Check ``class MultiHead(nn.Module)``: ``MultiHead(C, num_heads)`` holds ``heads``, an ``nn.ModuleList`` of
    ``num_heads`` ``Head(C, C // num_heads)``, and ``proj = nn.Linear(C, C, bias=False)``; ``forward(x)`` joins the
    heads' outputs along the channels and projects them. It must equal llmlab's CausalSelfAttention."""
    return run_check(MULTI_HEAD, cls, **options)


# --- multi_head_attention(x, c_attn, c_proj, num_heads) ----------------------------------------------------------


def _mha(
    x: torch.Tensor,
    c_attn: nn.Linear,
    c_proj: nn.Linear,
    num_heads: int,
    *,
    split: str = "view_transpose",
    merge: str = "transpose",
    order: str = "qkv",
    project: bool = True,
) -> torch.Tensor:
    B, T, C = x.shape
    hs = C // num_heads
    a, b, c = c_attn(x).split(C, dim=-1)
    q, k, v = (a, b, c) if order == "qkv" else (b, a, c)
    if split == "view_transpose":
        q, k, v = (t.view(B, T, num_heads, hs).transpose(1, 2) for t in (q, k, v))
    elif split == "view_only":
        q, k, v = (t.reshape(B, num_heads, T, hs) for t in (q, k, v))
    else:  # "no_transpose": (B, T, nh, hs), attention over the heads
        q, k, v = (t.view(B, T, num_heads, hs) for t in (q, k, v))
    y = _weights(q, k, True) @ v
    y = y.transpose(1, 2).reshape(B, T, C) if merge == "transpose" else y.reshape(B, T, C)
    return c_proj(y) if project else y


def _reference_mha(x: torch.Tensor, c_attn: nn.Linear, c_proj: nn.Linear, num_heads: int) -> torch.Tensor:
    return _mha(x, c_attn, c_proj, num_heads)


def _run_mha(fn: Any, case: Case) -> torch.Tensor:
    x, nh, w_attn, b_attn, w_proj, b_proj = case.args
    C = x.size(-1)
    c_attn, c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
    with torch.no_grad():
        c_attn.weight.copy_(w_attn), c_attn.bias.copy_(b_attn), c_proj.weight.copy_(w_proj), c_proj.bias.copy_(b_proj)
        return fn(x.clone(), c_attn, c_proj, nh)


def _mha_cases() -> list[Case]:
    def case(label: str, label_ja: str, B: int, T: int, C: int, nh: int, seed: int) -> Case:
        g = torch.Generator().manual_seed(seed)
        weights = (
            torch.randn(3 * C, C, generator=g) / math.sqrt(C),
            torch.randn(3 * C, generator=g) * 0.1,
            torch.randn(C, C, generator=g) / math.sqrt(C),
            torch.randn(C, generator=g) * 0.1,
        )
        return Case(label, label_ja, (torch.randn(B, T, C, generator=g), nh, *weights))

    return [
        case("B=2, T=5, C=8, 2 heads", "B=2、T=5、C=8、ヘッド 2 個", 2, 5, 8, 2, 1),
        case("T = 1, C=12, 3 heads", "T = 1、C=12、ヘッド 3 個", 1, 1, 12, 3, 2),
        case("B=1, T=6, C=8, 4 heads", "B=1、T=6、C=8、ヘッド 4 個", 1, 6, 8, 4, 3),
    ]


MULTI_HEAD_ATTENTION = Piece(
    title="multi_head_attention",
    reference=_reference_mha,
    cases=_mha_cases,
    run=_run_mha,
    mistakes=(
        Mistake(
            "view_without_transpose",
            "q.view(B, num_heads, T, hs) mixes positions and channels: view as (B, T, num_heads, hs), then "
            ".transpose(1, 2)",
            "q.view(B, num_heads, T, hs) では位置とチャネルが混ざります。(B, T, num_heads, hs) に view してから "
            ".transpose(1, 2) してください",
            variant=lambda x, a, p, nh: _mha(x, a, p, nh, split="view_only"),
        ),
        Mistake(
            "heads_not_moved",
            "after .view(B, T, num_heads, hs) the heads sit in dim 2, so attention runs across heads instead of "
            "positions: .transpose(1, 2) to (B, num_heads, T, hs)",
            ".view(B, T, num_heads, hs) の後はヘッドが 2 番目の次元にあるので、位置ではなくヘッドの間でアテンション"
            "しています。.transpose(1, 2) で (B, num_heads, T, hs) にしてください",
            variant=(
                lambda x, a, p, nh: _mha(x, a, p, nh, split="no_transpose", merge="reshape"),
                lambda x, a, p, nh: _mha(x, a, p, nh, split="no_transpose", merge="transpose"),
            ),
        ),
        Mistake(
            "merge_without_transpose",
            "the heads are put back without moving them: y.transpose(1, 2) to (B, T, num_heads, hs) before "
            ".reshape(B, T, C)",
            "ヘッドを元の位置に戻さずに並べています。.reshape(B, T, C) の前に y.transpose(1, 2) で "
            "(B, T, num_heads, hs) にしてください",
            variant=lambda x, a, p, nh: _mha(x, a, p, nh, merge="reshape"),
        ),
        Mistake(
            "split_order",
            "c_attn(x).split(C, dim=-1) gives queries, keys, values in that order: q, k, v = ...",
            "c_attn(x).split(C, dim=-1) はクエリ、キー、値の順に返します: q, k, v = ...",
            variant=lambda x, a, p, nh: _mha(x, a, p, nh, order="kqv"),
        ),
        Mistake(
            "no_proj",
            "the output projection is missing: return c_proj(y)",
            "出力の射影がありません: c_proj(y) を返してください",
            variant=lambda x, a, p, nh: _mha(x, a, p, nh, project=False),
        ),
    ),
)


def multi_head_attention(fn: Any, **options: bool) -> Result:
    """Check ``multi_head_attention(x, c_attn, c_proj, num_heads) -> (B, T, C)``: q, k, v from one ``c_attn``
    (C -> 3C), split into heads (B, nh, T, hs), causal attention, heads joined back, ``c_proj``."""
    return run_check(MULTI_HEAD_ATTENTION, fn, **options)
