"""Checks for the deep dive 04b (optimisation): one AdamW step by hand, and gradient accumulation."""

from __future__ import annotations

from typing import Any

import torch

from llmlab.check.core import Case, Mistake, Piece, Result, run_check
from llmlab.config import ModelConfig
from llmlab.model import GPT

__all__ = ["adamw_step", "accumulate_gradients"]


# --- adamw_step(w, g, m, v, t, lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1) -> (w, m, v) -------------------


def _adamw(
    w: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    t: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.99),
    eps: float = 1e-8,
    weight_decay: float = 0.1,
    *,
    way: str = "right",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b1, b2 = betas
    if way == "l2":
        g = g + weight_decay * w  # Adam with an L2 term: the decay goes through the moments
    elif way == "decay_without_lr":
        w = w * (1 - weight_decay)
    elif way != "decay_after":
        w = w * (1 - lr * weight_decay)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    if way == "no_correction":
        m_hat, v_hat = m, v
    else:
        n = t + 1 if way == "t_plus_1" else t
        m_hat, v_hat = m / (1 - b1**n), v / (1 - b2**n)
    step = m_hat / ((v_hat + eps).sqrt() if way == "eps_inside" else v_hat.sqrt() + eps)
    w = w - lr * step
    if way == "decay_after":
        w = w * (1 - lr * weight_decay)
    return w, m, v


def _run_adamw(fn: Any, case: Case) -> list[Any]:
    w0, grads, lr, betas, eps, weight_decay = case.args
    w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    seen = []
    for t, g in enumerate(grads, start=1):
        out = fn(w, g.clone(), m, v, t, lr, betas=betas, eps=eps, weight_decay=weight_decay)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            return [out]
        w, m, v = out
        seen.append([w.detach().clone(), m.detach().clone(), v.detach().clone()])
    return seen


def _adamw_cases() -> list[Case]:
    def case(
        label: str,
        label_ja: str,
        shape: tuple[int, ...],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        seed: int,
    ) -> Case:
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(shape, generator=gen)
        grads = [torch.randn(shape, generator=gen) for _ in range(3)]
        return Case(label, label_ja, (w, grads, lr, betas, eps, weight_decay))

    return [
        case("(4, 3) weights, 3 steps", "(4, 3) の重み、3 ステップ", (4, 3), 1e-2, (0.9, 0.99), 1e-8, 0.1, 1),
        case("lr=0.1, weight_decay=0.5", "lr=0.1、weight_decay=0.5", (5,), 0.1, (0.8, 0.9), 1e-8, 0.5, 2),
        case("eps=0.1", "eps=0.1", (2, 2), 1e-2, (0.9, 0.99), 0.1, 0.1, 3),
    ]


def _adamw_variant(way: str) -> Any:
    def step(
        w: Any,
        g: Any,
        m: Any,
        v: Any,
        t: int,
        lr: float,
        betas: Any = (0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
    ) -> Any:
        return _adamw(w, g, m, v, t, lr, betas, eps, weight_decay, way=way)

    return step


ADAMW_STEP = Piece(
    title="adamw_step",
    reference=_adamw,
    cases=_adamw_cases,
    run=_run_adamw,
    atol=1e-6,
    mistakes=(
        Mistake(
            "decay_after_update",
            "the weight decay is applied after the Adam update; AdamW shrinks the old weights first: w = w * (1 - lr "
            "* weight_decay), then w - lr * m_hat / (√v_hat + eps)",
            "重み減衰を Adam の更新の後にかけています。AdamW は先に古い重みを縮めます: w = w * (1 - lr * "
            "weight_decay)、その後 w - lr * m_hat / (√v_hat + eps)",
            variant=_adamw_variant("decay_after"),
        ),
        Mistake(
            "l2_in_gradient",
            "the decay is added to the gradient (Adam with L2), so it passes through m and v; AdamW's decay is "
            "decoupled: w * (1 - lr * weight_decay), the gradient untouched",
            "減衰を勾配に足しています（L2 つきの Adam）。これだと m と v を通ってしまいます。AdamW の減衰は切り離して"
            "います: w * (1 - lr * weight_decay)、勾配はそのまま",
            variant=_adamw_variant("l2"),
        ),
        Mistake(
            "decay_without_lr",
            "the decay ignores the learning rate: w * (1 - lr * weight_decay), not w * (1 - weight_decay)",
            "減衰に学習率がかかっていません。w * (1 - weight_decay) ではなく w * (1 - lr * weight_decay) です",
            variant=_adamw_variant("decay_without_lr"),
        ),
        Mistake(
            "no_bias_correction",
            "the bias correction is missing: m_hat = m / (1 - β1^t), v_hat = v / (1 - β2^t) (the moments start at "
            "0, so early steps would be too small)",
            "バイアス補正がありません: m_hat = m / (1 - β1^t)、v_hat = v / (1 - β2^t)（モーメントは 0 から始まる"
            "ので、補正しないと最初のステップが小さすぎます）",
            variant=_adamw_variant("no_correction"),
        ),
        Mistake(
            "bias_correction_t_plus_1",
            "the bias correction uses t + 1; t counts from 1 at the first step: 1 - β1**t",
            "バイアス補正に t + 1 を使っています。t は最初のステップで 1 です: 1 - β1**t",
            variant=_adamw_variant("t_plus_1"),
        ),
        Mistake(
            "eps_inside_sqrt",
            "eps is inside the square root; Adam adds it to the root: v_hat.sqrt() + eps",
            "eps が平方根の中にあります。Adam は平方根に足します: v_hat.sqrt() + eps",
            variant=_adamw_variant("eps_inside"),
        ),
    ),
)


def adamw_step(fn: Any, **options: bool) -> Result:
    """Check ``adamw_step(w, g, m, v, t, lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1) -> (w, m, v)``:
    torch.optim.AdamW's update for step ``t`` (1, 2, 3, ...): decoupled decay, both moments, bias correction.
    The check runs three steps and compares the weights and both moments after each."""
    return run_check(ADAMW_STEP, fn, **options)


# --- accumulate_gradients(model, x, y, k) ------------------------------------------------------------------------


def _accumulate(model: GPT, x: torch.Tensor, y: torch.Tensor, k: int, way: str = "right") -> None:
    if way != "stale":
        model.zero_grad(set_to_none=True)
    chunks = list(zip(x.chunk(k, dim=1), y.chunk(k, dim=1))) if way == "time" else list(zip(x.chunk(k), y.chunk(k)))
    for xs, ys in chunks[:1] if way == "first" else chunks:
        if way == "zero_each":
            model.zero_grad(set_to_none=True)
        loss = model(xs, ys)[1]
        scale = {"not_divided": 1, "twice": k * k}.get(way, k)
        (loss / scale).backward()


def _run_accumulate(fn: Any, case: Case) -> torch.Tensor:
    B, T, k, seed = case.args
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=16, block_size=8, embedding_size=16, num_heads=2, depth=1))
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randint(0, 16, (B, T), generator=g), torch.randint(0, 16, (B, T), generator=g)
    for p in model.parameters():  # a previous step's gradients, which must not count
        p.grad = torch.ones_like(p)
    fn(model, x, y, k)
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])


def _accumulate_variant(way: str) -> Any:
    return lambda model, x, y, k: _accumulate(model, x, y, k, way)


ACCUMULATE = Piece(
    title="accumulate_gradients",
    reference=_accumulate,
    cases=lambda: [
        Case("B=4, T=6, k=2", "B=4、T=6、k=2", (4, 6, 2, 1)),
        Case("B=4, T=4, k=4", "B=4、T=4、k=4", (4, 4, 4, 2)),
        Case("k = 1", "k = 1", (2, 5, 1, 3)),
    ],
    run=_run_accumulate,
    atol=1e-6,
    mistakes=(
        Mistake(
            "not_divided",
            "each micro-batch's loss must be divided by k: .grad adds the k gradients up, and the big batch's "
            "loss is their mean",
            "各マイクロバッチの損失を k で割ってください。.grad は k 個の勾配を足し合わせますが、大きなバッチの損失"
            "はそれらの平均です",
            variant=_accumulate_variant("not_divided"),
        ),
        Mistake(
            "divided_twice",
            "the gradient is divided by k twice; divide each loss by k once, and nothing afterwards",
            "勾配を k で 2 回割っています。各損失を k で 1 回だけ割り、その後は何もしないでください",
            variant=_accumulate_variant("twice"),
        ),
        Mistake(
            "zero_grad_each",
            "zero_grad inside the loop throws away the earlier micro-batches: zero once, before the loop",
            "ループの中の zero_grad がそれまでのマイクロバッチを捨てています。ゼロにするのはループの前の 1 回だけです",
            variant=_accumulate_variant("zero_each"),
        ),
        Mistake(
            "stale_gradients",
            "the gradients left from before were added to: call model.zero_grad(set_to_none=True) before the loop",
            "前から残っていた勾配に足し込んでいます。ループの前に model.zero_grad(set_to_none=True) を呼んでください",
            variant=_accumulate_variant("stale"),
        ),
        Mistake(
            "split_along_time",
            "the batch is split along time (dim=1); split the sequences: x.chunk(k) (dim=0), each micro-batch "
            "B / k whole sequences",
            "バッチを時間の向き（dim=1）に分けています。系列の向きに分けてください: x.chunk(k)（dim=0）。各マイクロ"
            "バッチは B / k 本の系列です",
            variant=_accumulate_variant("time"),
        ),
        Mistake(
            "one_micro_batch",
            "only the first micro-batch is used: loop over all k of zip(x.chunk(k), y.chunk(k))",
            "最初のマイクロバッチしか使っていません。zip(x.chunk(k), y.chunk(k)) の k 個すべてをループしてください",
            variant=_accumulate_variant("first"),
        ),
    ),
)


def accumulate_gradients(fn: Any, **options: bool) -> Result:
    """Check ``accumulate_gradients(model, x, y, k)``: zero the gradients, then for each of the ``k`` micro-batches
    ``x.chunk(k)``, ``y.chunk(k)`` backward ``loss / k``; afterwards ``.grad`` must hold the gradient of the whole
    batch's loss (the check leaves old gradients in ``.grad`` first)."""
    return run_check(ACCUMULATE, fn, **options)
