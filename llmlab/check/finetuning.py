"""Checks for notebook 08 (fine-tuning): the batch of templated examples with its loss mask."""

from __future__ import annotations

import copy
from typing import Any

import torch

from llmlab.check.core import Case, Mistake, Piece, Result, run_check
from llmlab.sft import collate as _llmlab_collate

__all__ = ["collate"]

Rendered = list[tuple[list[int], list[bool]]]


def _collate(rendered: Rendered, pad_id: int, way: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(ids) for ids, _ in rendered) - 1
    xs, ys = [], []
    for ids, mask in rendered:
        pad = T - len(ids) + 1
        shown = mask[:-1] if way == "mask_not_shifted" else mask[1:]
        if way == "no_mask":
            shown = [True] * len(shown)
        if way == "inverted":
            shown = [not m for m in shown]
        x = ids[:-1]
        y = [t if m else -1 for t, m in zip(ids[1:], shown)]
        y_pad = [pad_id if way == "pad_targets" else -1] * pad
        if way == "left_pad":
            xs.append([pad_id] * pad + x)
            ys.append(y_pad + y)
        else:
            xs.append(x + [pad_id] * pad)
            ys.append(y + y_pad)
    return torch.tensor(xs), torch.tensor(ys)


def _run_collate(fn: Any, case: Case) -> Any:
    rendered, pad_id = copy.deepcopy(case.args)
    out = fn(rendered, pad_id)
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return [torch.as_tensor(t) for t in out]
    return out


def _collate_cases() -> list[Case]:
    F_, T_ = False, True
    three = [
        ([1, 2, 3, 4, 5], [F_, F_, T_, T_, T_]),
        ([6, 7, 8], [F_, T_, T_]),
        ([9, 10, 11, 12], [F_, F_, F_, T_]),
    ]
    return [
        Case("three examples, pad 0", "例 3 個、パディング 0", (three, 0)),
        Case("one example", "例 1 個", ([([4, 5, 6, 7], [F_, F_, T_, T_])], 99)),
        Case(
            "equal lengths, pad 50",
            "同じ長さ、パディング 50",
            ([([1, 2, 3], [F_, T_, T_]), ([4, 5, 6], [F_, F_, T_])], 50),
        ),
    ]


def _variant(way: str) -> Any:
    return lambda rendered, pad_id: _collate(rendered, pad_id, way)


COLLATE = Piece(
    title="collate",
    reference=lambda rendered, pad_id: list(_llmlab_collate(rendered, pad_id)),
    cases=_collate_cases,
    run=_run_collate,
    mistakes=(
        Mistake(
            "mask_not_shifted",
            "the mask is not shifted with the targets: y[t] is ids[t + 1], so whether it is learned is mask[t + 1] "
            "(zip(ids[1:], mask[1:]))",
            "マスクがターゲットと一緒にずれていません。y[t] は ids[t + 1] なので、学習するかどうかは mask[t + 1] "
            "です（zip(ids[1:], mask[1:])）",
            variant=_variant("mask_not_shifted"),
        ),
        Mistake(
            "pads_targets",
            "the padding's targets are pad_id, so the model learns to predict padding: pad y with -1 (ignored by "
            "the loss)",
            "パディングのターゲットが pad_id になっているため、モデルがパディングを予測するように学習します。y は "
            "-1（損失が無視する値）でパディングしてください",
            variant=_variant("pad_targets"),
        ),
        Mistake(
            "no_mask",
            "every next token is a target, the prompt's too: -1 where the mask says the token is not learned",
            "プロンプトも含めて、すべての次のトークンがターゲットになっています。マスクが学習しないとする位置は -1 "
            "にしてください",
            variant=_variant("no_mask"),
        ),
        Mistake(
            "mask_inverted",
            "the mask is inverted: the reply (mask True) is the target, the prompt (False) becomes -1",
            "マスクが逆です。ターゲットは返答（mask が True）で、プロンプト（False）が -1 になります",
            variant=_variant("inverted"),
        ),
        Mistake(
            "left_padding",
            "the padding is on the left; pad on the right, after each sequence, so every sequence starts at position 0",
            "パディングが左にあります。各系列の後ろ（右）にパディングして、どの系列も位置 0 から始まるように"
            "してください",
            variant=_variant("left_pad"),
        ),
    ),
)


def collate(fn: Any, **options: bool) -> Result:
    """Check ``collate(rendered, pad_id) -> (x, y)``: ``rendered`` is a list of (ids, mask) from the chat
    template; ``x`` holds ``ids[:-1]``, ``y`` holds ``ids[1:]`` with -1 wherever the next token is not learned
    (``mask[1:]``), both right-padded (x with ``pad_id``, y with -1) to the longest sequence minus one."""
    return run_check(COLLATE, fn, **options)
