"""Checks for notebook 04 (the training loop): batches, the learning-rate schedule, the evaluation, one step."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from llmlab.check.core import Case, Mistake, Piece, Result, run_check
from llmlab.config import ModelConfig, TrainConfig
from llmlab.model import GPT
from llmlab.schedule import lr_at

__all__ = ["get_batch", "lr_schedule", "estimate_loss", "train_step"]


# --- get_batch(data, block_size, batch_size, rng) -----------------------------------------------------------------
# Any random windows are right, so the check looks at properties, not at values: the data is 0, 1, 2, ... so that
# a row is a window of the data exactly when it counts up by one.

_OVERRUN = r"same shape|equal size|could not broadcast|expected sequence of length|out of (bounds|range)"


def _reference_get_batch(
    data: np.ndarray, block_size: int, batch_size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    x = np.stack([data[s : s + block_size] for s in starts]).astype(np.int64)
    y = np.stack([data[s + 1 : s + 1 + block_size] for s in starts]).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def _ids(t: Any) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t.to(torch.int64)
    return torch.from_numpy(np.asarray(t).astype(np.int64))


def _run_get_batch(fn: Any, case: Case) -> Any:
    n, T, B, seed, draws = case.args
    data = np.arange(n, dtype=np.uint16)  # the dtype of a prepared train.bin
    out = fn(data, T, B, np.random.default_rng(seed))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return out
    again = fn(data, T, B, np.random.default_rng(seed))
    for extra in range(draws):  # many draws: a start too close to the end shows up (as an error)
        fn(data, T, B, np.random.default_rng(1000 + extra))
    x, y = (_ids(t) for t in out)
    batch_first = tuple(x.shape) == (B, T) and tuple(y.shape) == (B, T)
    windows = batch_first and bool((x == x[:, :1] + torch.arange(T)).all()) and int(x.max()) < n
    return {
        "returns tensors": all(isinstance(t, torch.Tensor) for t in out),
        "dtype int64": all(isinstance(t, torch.Tensor) and t.dtype == torch.int64 for t in out),
        "shape (batch_size, block_size)": batch_first,
        "shape (block_size, batch_size)": T != B and tuple(x.shape) == (T, B),
        "x rows are windows of the data": windows,
        "y is x shifted by one": batch_first and bool((y == x + 1).all()),
        "same seed, same batch": all(torch.equal(_ids(a), _ids(b)) for a, b in zip(out, again)),
        # judged only where B random starts all alike would be a one-in-millions chance: many places to start from
        "rows start at different places": B == 1 or n - T < 100 or (batch_first and len(set(x[:, 0].tolist())) > 1),
    }


def _batch_cases() -> list[Case]:
    return [
        Case("1,000 tokens, T=8, B=4", "トークン 1,000 個、T=8、B=4", (1000, 8, 4, 0, 0)),
        Case("11 tokens, T=8, B=8, 40 draws", "トークン 11 個、T=8、B=8、40 回", (11, 8, 8, 1, 40)),
        Case("T = 1, B = 1", "T = 1、B = 1", (50, 1, 1, 2, 0)),
    ]


def _failing(prop: str) -> Any:
    return lambda seen: any(isinstance(o, dict) and o.get(prop) is False for o in seen)


GET_BATCH = Piece(
    title="get_batch",
    reference=_reference_get_batch,
    cases=_batch_cases,
    run=_run_get_batch,
    mistakes=(
        Mistake(
            "overrun",
            "a start too close to the end: y's window ran past the data. Starts go from 0 to len(data) - "
            "block_size - 1: rng.integers(0, len(data) - block_size, ...) (the upper end is left out)",
            "開始位置が末尾に近すぎて、y の窓がデータの外にはみ出しました。開始位置は 0 から len(data) - "
            "block_size - 1 まで: rng.integers(0, len(data) - block_size, ...)（上端は含まれません）",
            raises=_OVERRUN,
        ),
        Mistake(
            "not_tensors",
            "it returns NumPy arrays; return torch tensors: torch.from_numpy(x), torch.from_numpy(y)",
            "NumPy の配列を返しています。torch のテンソルを返してください: torch.from_numpy(x), torch.from_numpy(y)",
            probe=_failing("returns tensors"),
        ),
        Mistake(
            "dtype",
            "the ids keep the file's dtype (uint16); convert to int64 (.astype(np.int64)): embeddings and "
            "cross_entropy want int64 ids",
            "id がファイルの dtype（uint16）のままです。int64 に変換してください（.astype(np.int64)）。埋め込みと "
            "cross_entropy は int64 の id を必要とします",
            probe=_failing("dtype int64"),
        ),
        Mistake(
            "time_first",
            "x has shape (block_size, batch_size); stack the windows as rows: np.stack(windows) (axis 0), "
            "so x is (batch_size, block_size)",
            "x の形が (block_size, batch_size) です。窓を行として積んでください: np.stack(windows)（axis 0）。"
            "x は (batch_size, block_size) になります",
            probe=lambda seen: any(isinstance(o, dict) and o["shape (block_size, batch_size)"] for o in seen),
        ),
        Mistake(
            "y_not_shifted",
            "y is not the next tokens: y = data[s + 1 : s + 1 + block_size], the same window moved one token right",
            "y が次のトークンになっていません: y = data[s + 1 : s + 1 + block_size]。同じ窓を右に 1 トークン"
            "ずらしたものです",
            probe=_failing("y is x shifted by one"),
        ),
        Mistake(
            "ignores_rng",
            "the same rng seed gives different batches: draw the starts from the rng you are given (rng.integers), "
            "not from np.random or torch",
            "同じシードの rng で違うバッチになります。開始位置は np.random や torch ではなく、渡された rng から"
            "（rng.integers で）引いてください",
            probe=_failing("same seed, same batch"),
        ),
        Mistake(
            "one_start",
            "every row starts at the same place: draw batch_size starts, one per row",
            "どの行も同じ位置から始まっています。開始位置を batch_size 個、行ごとに 1 つ引いてください",
            probe=_failing("rows start at different places"),
        ),
    ),
)


def get_batch(fn: Any, **options: bool) -> Result:
    """Check ``get_batch(data, block_size, batch_size, rng) -> (x, y)``: ``batch_size`` random windows of
    ``block_size`` tokens of ``data`` (a NumPy array, e.g. a memmap of uint16), their starts drawn with the NumPy
    ``rng``; ``y`` the same windows one token later; both int64 tensors of shape (batch_size, block_size).
    Any random starts pass, as long as the same rng seed gives the same batch."""
    return run_check(GET_BATCH, fn, **options)


# --- lr_schedule(step, max_lr, min_lr, warmup, max_iters) -----------------------------------------------------------


def _reference_lr(step: int, max_lr: float, min_lr: float, warmup: int, max_iters: int) -> float:
    return lr_at(step, TrainConfig(max_lr=max_lr, min_lr=min_lr, warmup_iters=warmup, max_iters=max_iters))


def _lr(step: int, max_lr: float, min_lr: float, warmup: int, max_iters: int, way: str) -> float:
    if step < warmup:
        if way == "warmup_from_zero":
            return max_lr * step / warmup
        if way == "warmup_reaches_max_early":
            return max_lr * (step + 1) / warmup
        return max_lr * (step + 1) / (warmup + 1)
    if way == "cosine_ignores_warmup":
        progress = min(step / max_iters, 1.0)
    else:
        progress = (step - warmup) / max(1, max_iters - warmup)
        progress = progress if way == "no_clamp" else min(progress, 1.0)
    if way == "linear":
        return max_lr - progress * (max_lr - min_lr)
    if way == "no_half":
        return min_lr + math.cos(math.pi * progress) * (max_lr - min_lr)
    low = 0.0 if way == "to_zero" else min_lr
    return low + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - low)


def _run_lr(fn: Any, case: Case) -> list[Any]:
    max_lr, min_lr, warmup, max_iters = case.args
    return [fn(step, max_lr, min_lr, warmup, max_iters) for step in range(max_iters + 4)]


def _lr_variant(way: str) -> Any:
    return lambda step, max_lr, min_lr, warmup, max_iters: _lr(step, max_lr, min_lr, warmup, max_iters, way)


LR_SCHEDULE = Piece(
    title="lr_schedule",
    reference=_reference_lr,
    cases=lambda: [
        Case("warm-up 10 of 50 steps", "50 ステップ中ウォームアップ 10", (6e-4, 6e-5, 10, 50)),
        Case("no warm-up", "ウォームアップなし", (1e-3, 1e-4, 0, 20)),
        Case("min_lr = 0, warm-up 3 of 12", "min_lr = 0、12 ステップ中ウォームアップ 3", (1.0, 0.0, 3, 12)),
    ],
    run=_run_lr,
    atol=1e-12,
    rtol=1e-7,
    mistakes=(
        Mistake(
            "warmup_from_zero",
            "the warm-up starts at 0 (max_lr * step / warmup: step 0 would not train); llmlab's warm-up is "
            "max_lr * (step + 1) / (warmup + 1)",
            "ウォームアップが 0 から始まっています（max_lr * step / warmup だとステップ 0 で学習しません）。llmlab "
            "のウォームアップは max_lr * (step + 1) / (warmup + 1) です",
            variant=_lr_variant("warmup_from_zero"),
        ),
        Mistake(
            "warmup_reaches_max_early",
            "the warm-up reaches max_lr one step early (step + 1) / warmup; llmlab's is (step + 1) / (warmup + 1), "
            "so max_lr comes at step warmup",
            "ウォームアップが 1 ステップ早く max_lr に達しています（(step + 1) / warmup）。llmlab は "
            "(step + 1) / (warmup + 1) で、max_lr になるのはステップ warmup です",
            variant=_lr_variant("warmup_reaches_max_early"),
        ),
        Mistake(
            "cosine_ignores_warmup",
            "the cosine counts from step 0; it starts after the warm-up: progress = (step - warmup) / "
            "(max_iters - warmup)",
            "コサインをステップ 0 から数えています。コサインはウォームアップの後から始まります: progress = "
            "(step - warmup) / (max_iters - warmup)",
            variant=_lr_variant("cosine_ignores_warmup"),
        ),
        Mistake(
            "decays_to_zero",
            "the cosine ends at 0; it ends at min_lr: min_lr + 0.5 * (1 + cos(π · progress)) * (max_lr - min_lr)",
            "コサインが 0 で終わっています。終わりは min_lr です: min_lr + 0.5 * (1 + cos(π · progress)) * "
            "(max_lr - min_lr)",
            variant=_lr_variant("to_zero"),
        ),
        Mistake(
            "no_clamp",
            "after max_iters the rate climbs back up: cap progress at 1 (min(progress, 1.0)), so it stays at min_lr",
            "max_iters を過ぎると学習率がまた上がっています。progress を 1 で止めて（min(progress, 1.0)）min_lr に"
            "とどめてください",
            variant=_lr_variant("no_clamp"),
        ),
        Mistake(
            "no_half",
            "the cosine misses its 0.5 * (1 + ...): cos runs from 1 to -1, so 0.5 * (1 + cos(π · progress)) runs "
            "from 1 to 0",
            "コサインの 0.5 * (1 + ...) が抜けています。cos は 1 から -1 まで動くので、0.5 * (1 + cos(π · progress)) "
            "で 1 から 0 になります",
            variant=_lr_variant("no_half"),
        ),
        Mistake(
            "linear_decay",
            "the decay is a straight line; it follows a cosine: min_lr + 0.5 * (1 + cos(π · progress)) * "
            "(max_lr - min_lr)",
            "減衰が直線になっています。コサインに沿って下げてください: min_lr + 0.5 * (1 + cos(π · progress)) * "
            "(max_lr - min_lr)",
            variant=_lr_variant("linear"),
        ),
    ),
)


def lr_schedule(fn: Any, **options: bool) -> Result:
    """Check ``lr_schedule(step, max_lr, min_lr, warmup, max_iters) -> float``: llmlab's schedule
    (:func:`llmlab.schedule.lr_at`), a linear warm-up ``max_lr * (step + 1) / (warmup + 1)`` for steps below
    ``warmup``, then a cosine from ``max_lr`` to ``min_lr`` at ``max_iters``, and ``min_lr`` after it."""
    return run_check(LR_SCHEDULE, fn, **options)


# --- estimate_loss(model, batches) ----------------------------------------------------------------------------------


def _model(dropout: float = 0.0, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(vocab_size=16, block_size=8, embedding_size=16, num_heads=2, depth=1, dropout=dropout))


def _batches(count: int, seed: int, B: int = 2, T: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(0, 16, (B, T), generator=g), torch.randint(0, 16, (B, T), generator=g)) for _ in range(count)
    ]


def _number(value: Any) -> Any:
    """A float from a float, an int or a one-number tensor (which a learner may return); anything else as is."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().reshape(()))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _estimate(
    model: GPT, batches: dict, how: str = "right", eval_mode: bool = True, no_grad: bool = True, restore: bool = True
) -> dict[str, float]:
    if eval_mode:
        model.eval()
    with torch.set_grad_enabled(not no_grad):
        losses = {split: [model(x, y)[1] for x, y in pairs] for split, pairs in batches.items()}
        if how == "last":
            means = {s: ls[-1].item() for s, ls in losses.items()}
        elif how == "sum":
            means = {s: torch.stack(ls).sum().item() for s, ls in losses.items()}
        elif how == "mixed":
            every = torch.stack([loss for ls in losses.values() for loss in ls]).mean().item()
            means = {s: every for s in losses}
        else:
            means = {s: torch.stack(ls).mean().item() for s, ls in losses.items()}
    if restore:
        model.train()
    return means


def _run_estimate(fn: Any, case: Case) -> Any:
    counts, seed = case.args
    model = _model(dropout=0.5).train()
    batches = {split: _batches(n, seed + i) for i, (split, n) in enumerate(counts.items())}
    seen: dict[str, list[bool]] = {"training": [], "grad": []}

    def note(module: Any, args: Any) -> None:
        seen["training"].append(module.training)
        seen["grad"].append(torch.is_grad_enabled())

    hook = model.register_forward_pre_hook(note)
    try:
        out = fn(model, batches)
    finally:
        hook.remove()
    if isinstance(out, dict):
        out = {k: _number(v) for k, v in out.items()}
    return {
        "losses": out,
        "eval mode in forward": not any(seen["training"]),
        "no_grad in forward": not any(seen["grad"]),
        "training mode afterwards": model.training,
    }


ESTIMATE_LOSS = Piece(
    title="estimate_loss",
    reference=lambda model, batches: _estimate(model, batches),
    cases=lambda: [
        Case("train 2 batches, val 3", "train 2 バッチ、val 3 バッチ", ({"train": 2, "val": 3}, 1)),
        Case("one batch each", "各 1 バッチ", ({"train": 1, "val": 1}, 7)),
    ],
    run=_run_estimate,
    mistakes=(
        Mistake(
            "dropout_on",
            "the model ran in training mode, so dropout changed the losses: call model.eval() before measuring",
            "モデルが学習モードのまま動いたので、ドロップアウトで損失が変わりました。測る前に model.eval() を"
            "呼んでください",
            probe=lambda seen: not all(o["eval mode in forward"] for o in seen),
        ),
        Mistake(
            "left_in_eval",
            "the model is left in eval mode: call model.train() before returning, or training continues without "
            "dropout",
            "モデルが評価モードのまま残っています。返す前に model.train() を呼んでください。そうしないとドロップ"
            "アウトなしで学習が続きます",
            probe=lambda seen: not all(o["training mode afterwards"] for o in seen),
        ),
        Mistake(
            "grad_on",
            "gradients were recorded while measuring: decorate with @torch.no_grad() (or use `with torch.no_grad():`)",
            "測っている間に勾配を記録しています。@torch.no_grad() を付けてください（または `with torch.no_grad():`）",
            probe=lambda seen: not all(o["no_grad in forward"] for o in seen),
        ),
        Mistake(
            "last_batch_only",
            "each split reports its last batch's loss; average over all its batches",
            "各分割が最後のバッチの損失だけを返しています。すべてのバッチで平均してください",
            variant=lambda model, batches: _estimate(model, batches, "last"),
        ),
        Mistake(
            "sum_not_mean",
            "the batches' losses are summed; take their mean",
            "バッチの損失を合計しています。平均を取ってください",
            variant=lambda model, batches: _estimate(model, batches, "sum"),
        ),
        Mistake(
            "splits_mixed",
            "every split gets the same number, the mean over all batches; average each split's batches separately",
            "どの分割も同じ値（全バッチの平均）になっています。分割ごとに、そのバッチだけで平均してください",
            variant=lambda model, batches: _estimate(model, batches, "mixed"),
        ),
    ),
)


def estimate_loss(fn: Any, **options: bool) -> Result:
    """Check ``estimate_loss(model, batches) -> dict[str, float]``: for each split of ``batches`` (split -> list of
    (x, y)), the mean of ``model(x, y)[1]`` in eval mode without gradients; the model back in training mode after."""
    return run_check(ESTIMATE_LOSS, fn, **options)


# --- train_step(model, optimizer, x, y, lr, grad_clip) -----------------------------------------------------------


def _step(
    model: GPT, optimizer: Any, x: torch.Tensor, y: torch.Tensor, lr: float, grad_clip: float, way: str = "right"
) -> Any:
    if way != "lr_not_set":
        for group in optimizer.param_groups:
            group["lr"] = lr
    _, loss = model(x, y)
    if way == "step_first":
        optimizer.step()
    if way not in ("no_zero_grad", "zero_after_backward"):
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if way == "zero_after_backward":
        optimizer.zero_grad(set_to_none=True)
    if (grad_clip > 0 and way != "no_clip") or way == "always_clip":
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if way != "step_first":
        optimizer.step()
    return loss if way == "tensor" else loss.item()


def _run_step(fn: Any, case: Case) -> dict[str, Any]:
    lrs, grad_clip, seed = case.args
    model = _model(seed=0).train()
    optimizer = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95))
    losses = [fn(model, optimizer, x, y, lr, grad_clip) for (x, y), lr in zip(_batches(len(lrs), seed), lrs)]
    return {
        "returns floats": all(isinstance(v, float) for v in losses),
        "losses": [_number(v) for v in losses],
        "weights": torch.cat([p.detach().flatten() for p in model.parameters()]),
        "lr in the optimizer": [g["lr"] for g in optimizer.param_groups],
    }


def _step_variant(way: str) -> Any:
    return lambda model, optimizer, x, y, lr, grad_clip: _step(model, optimizer, x, y, lr, grad_clip, way)


TRAIN_STEP = Piece(
    title="train_step",
    reference=lambda model, optimizer, x, y, lr, grad_clip: _step(model, optimizer, x, y, lr, grad_clip),
    cases=lambda: [
        Case("3 steps, grad_clip=0.05", "3 ステップ、grad_clip=0.05", ([3e-3, 2e-3, 5e-3], 0.05, 1)),
        Case("2 steps, grad_clip=0", "2 ステップ、grad_clip=0", ([2e-3, 4e-3], 0.0, 2)),
    ],
    run=_run_step,
    atol=1e-6,
    mistakes=(
        Mistake(
            "returns_tensor",
            "it returns the loss tensor; return loss.item(), a float (a kept tensor keeps its whole graph in memory)",
            "損失のテンソルを返しています。float の loss.item() を返してください（テンソルを取っておくと計算グラフ"
            "全体がメモリに残ります）",
            probe=lambda seen: not all(o["returns floats"] for o in seen),
        ),
        Mistake(
            "lr_not_set",
            "the lr argument is never used: set group['lr'] = lr for every group in optimizer.param_groups first",
            "引数 lr が使われていません。まず optimizer.param_groups のすべての group で group['lr'] = lr と"
            "してください",
            variant=_step_variant("lr_not_set"),
        ),
        Mistake(
            "no_zero_grad",
            "gradients add up from step to step: call optimizer.zero_grad(set_to_none=True) before loss.backward()",
            "勾配がステップごとに積み重なっています。loss.backward() の前に optimizer.zero_grad(set_to_none=True) "
            "を呼んでください",
            variant=_step_variant("no_zero_grad"),
        ),
        Mistake(
            "zero_grad_after_backward",
            "zero_grad comes between backward and step, so the step sees no gradient: zero_grad, backward, step",
            "zero_grad が backward と step の間にあるため、step が勾配を見られません。zero_grad、backward、step の"
            "順です",
            variant=_step_variant("zero_after_backward"),
        ),
        Mistake(
            "step_before_backward",
            "optimizer.step() runs before loss.backward(): it uses the previous step's gradients; backward first",
            "optimizer.step() が loss.backward() より前にあり、前のステップの勾配を使っています。backward が先です",
            variant=_step_variant("step_first"),
        ),
        Mistake(
            "no_clip",
            "the gradient is not clipped before the step: torch.nn.utils.clip_grad_norm_(model.parameters(), "
            "grad_clip) between backward and optimizer.step() when grad_clip > 0",
            "step の前に勾配をクリップしていません。grad_clip > 0 のとき、backward と optimizer.step() の間で "
            "torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) を呼んでください",
            variant=_step_variant("no_clip"),
        ),
        Mistake(
            "always_clip",
            "grad_clip=0 means no clipping; clipping to norm 0 wipes out the gradient: clip only if grad_clip > 0",
            "grad_clip=0 はクリップしないという意味です。ノルム 0 にクリップすると勾配が消えます。grad_clip > 0 の"
            "ときだけクリップしてください",
            variant=_step_variant("always_clip"),
        ),
    ),
)


def train_step(fn: Any, **options: bool) -> Result:
    """Check ``train_step(model, optimizer, x, y, lr, grad_clip) -> float``: set the optimizer's lr, forward,
    zero the gradients, backward, clip the gradient norm to ``grad_clip`` when it is > 0, step; return
    ``loss.item()``. The check runs a few steps and compares the weights with the reference's."""
    return run_check(TRAIN_STEP, fn, **options)
