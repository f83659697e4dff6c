"""Checks for notebook 03 (the GPT block): LayerNorm, the MLP, the pre-LN block, and the GPT's forward pass."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F

from llmlab.check.core import Case, Mistake, Piece, Result, run_check
from llmlab.config import ModelConfig
from llmlab.model import GPT, Block

__all__ = ["layer_norm", "mlp", "block", "gpt_forward"]


def tiny_gpt(seed: int = 0, **changes: Any) -> GPT:
    """A tiny GPT in eval mode with every weight drawn larger than at init (norm gains around 1, biases not 0),
    so that each wrong wiring changes the output clearly."""
    shape = dict(vocab_size=20, block_size=8, embedding_size=8, num_heads=2, depth=2, dropout=0.0) | changes
    torch.manual_seed(seed)
    model = GPT(ModelConfig(**shape)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.normal_(1.0, 0.2)
            elif p.dim() == 1:
                p.normal_(0.0, 0.2)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p.size(-1)))
    return model


# --- layer_norm(x, weight, bias, eps=1e-5) ---------------------------------------------------------------------


def _ln(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    *,
    unbiased: bool = False,
    eps_inside: bool = True,
    dim: int | None = -1,
    center: bool = True,
    std: bool = False,
) -> torch.Tensor:
    dims = tuple(range(x.dim())) if dim is None else dim
    full_mean = x.mean(dim=dims, keepdim=True)
    count = x.numel() // full_mean.numel()  # how many numbers each mean is taken over
    mean = full_mean if center else torch.zeros_like(full_mean)
    if std:
        return (x - mean) / (x.std(dim=dims, keepdim=True) + eps) * weight + bias
    var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / (count - (1 if unbiased else 0))
    scale = torch.sqrt(var + eps) if eps_inside else torch.sqrt(var) + eps
    return (x - mean) / scale * weight + bias


def _reference_ln(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return F.layer_norm(x, (x.size(-1),), weight, bias, eps)


def _ln_cases() -> list[Case]:
    def case(
        label: str,
        label_ja: str,
        shape: tuple[int, ...],
        spread: float,
        seed: int,
        dtype: torch.dtype = torch.float32,
        **kwargs: Any,
    ) -> Case:
        g = torch.Generator().manual_seed(seed)
        C = shape[-1]
        x = 3 * spread + spread * torch.randn(shape, generator=g, dtype=dtype)
        w = 1 + 0.3 * torch.randn(C, generator=g, dtype=dtype)
        b = 0.5 * torch.randn(C, generator=g, dtype=dtype)
        return Case(label, label_ja, (x, w, b), kwargs)

    return [
        case("(2, 3, 4) inputs", "(2, 3, 4) の入力", (2, 3, 4), 5.0, 1),
        case("a small spread (1e-3)", "小さなばらつき（1e-3）", (1, 2, 6), 1e-3, 2),
        case("(3, 5) inputs", "(3, 5) の入力", (3, 5), 2.0, 3),
        case("eps=0.1", "eps=0.1", (2, 4), 0.5, 4, eps=0.1),
        case("float64", "float64", (2, 2, 4), 1.0, 5, torch.float64),
    ]


LAYER_NORM = Piece(
    title="layer_norm",
    reference=_reference_ln,
    cases=_ln_cases,
    mistakes=(
        Mistake(
            "unbiased_variance",
            "the variance divides by C - 1 (torch's default, unbiased=True); LayerNorm divides by C: "
            "x.var(dim=-1, keepdim=True, unbiased=False)",
            "分散を C - 1 で割っています（torch の既定 unbiased=True）。LayerNorm は C で割ります: "
            "x.var(dim=-1, keepdim=True, unbiased=False)",
            variant=lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, unbiased=True),
        ),
        Mistake(
            "std_plus_eps",
            "x.std() is unbiased (C - 1) and puts eps outside the root: use (x - mean) / torch.sqrt(var + eps) "
            "with var = x.var(dim=-1, keepdim=True, unbiased=False)",
            "x.std() は不偏（C - 1）で、eps が平方根の外に出ます。var = x.var(dim=-1, keepdim=True, unbiased=False) "
            "として (x - mean) / torch.sqrt(var + eps) を使ってください",
            variant=lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, std=True),
        ),
        Mistake(
            "eps_outside_sqrt",
            "eps is added outside the square root; it goes inside: torch.sqrt(var + eps)",
            "eps を平方根の外で足しています。中に入れてください: torch.sqrt(var + eps)",
            variant=lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, eps_inside=False),
        ),
        Mistake(
            "no_eps",
            "eps is missing: a vector with (almost) no spread divides by (almost) 0; use torch.sqrt(var + eps)",
            "eps がありません。ばらつきが（ほぼ）ない vector では（ほぼ）0 で割ることになります。"
            "torch.sqrt(var + eps) を使ってください",
            variant=lambda x, w, b, eps=1e-5: _ln(x, w, b, 0.0),
        ),
        Mistake(
            "eps_ignored",
            "the eps argument is ignored (a fixed 1e-5 is used); use the eps you are given",
            "引数 eps を使っていません（1e-5 に固定）。渡された eps を使ってください",
            variant=lambda x, w, b, eps=1e-5: _ln(x, w, b, 1e-5),
        ),
        Mistake(
            "wrong_dim",
            "the mean and variance are taken over the wrong dimension: each vector's own C channels, dim=-1 with "
            "keepdim=True",
            "平均と分散を取る次元が違います。各ベクトル自身の C チャネル、dim=-1（keepdim=True）で取ってください",
            variant=(
                lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, dim=0),
                lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, dim=1),
                lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, dim=None),
            ),
        ),
        Mistake(
            "not_centred",
            "the mean is not subtracted: (x - mean) / torch.sqrt(var + eps) (without it this is RMSNorm, notebook 07)",
            "平均を引いていません: (x - mean) / torch.sqrt(var + eps)（引かないと RMSNorm になります。07 を参照）",
            variant=lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, center=False),
        ),
        Mistake(
            "weight_and_bias_swapped",
            "weight and bias are swapped: multiply by weight, then add bias",
            "weight と bias が逆です。weight を掛けてから bias を足してください",
            variant=lambda x, w, b, eps=1e-5: _reference_ln(x, b, w, eps),
        ),
    ),
)


def layer_norm(fn: Any, **options: bool) -> Result:
    """Check ``layer_norm(x, weight, bias, eps=1e-5)``: each vector (the last dimension) minus its mean, divided
    by ``sqrt(variance + eps)`` (the variance divides by C), times ``weight``, plus ``bias``."""
    return run_check(LAYER_NORM, fn, **options)


# --- mlp(x, block) -----------------------------------------------------------------------------------------------


def _mlp(x: torch.Tensor, blk: Block, act: str = "tanh", bias: bool = True, after: bool = False) -> torch.Tensor:
    fc, proj = blk.mlp.c_fc, blk.mlp.c_proj
    h = x @ fc.weight.T + (fc.bias if bias else 0)
    activate = {
        "tanh": lambda t: F.gelu(t, approximate="tanh"),
        "exact": F.gelu,
        "relu": F.relu,
        "none": lambda t: t,
    }[act]
    if after:
        return activate(h @ proj.weight.T + (proj.bias if bias else 0))
    return activate(h) @ proj.weight.T + (proj.bias if bias else 0)


def _reference_mlp(x: torch.Tensor, blk: Block) -> torch.Tensor:
    return _mlp(x, blk)


def _run_with_block(fn: Any, case: Case) -> Any:
    x, model = case.args
    with torch.no_grad():
        return fn(x.clone(), model.transformer.h[0])


def _block_cases() -> list[Case]:
    model = tiny_gpt(1)
    g = torch.Generator().manual_seed(2)
    return [
        Case("B=2, T=3", "B=2、T=3", (2.0 * torch.randn(2, 3, 8, generator=g), model)),
        Case("B=1, T=1", "B=1、T=1", (2.0 * torch.randn(1, 1, 8, generator=g), model)),
        Case("B=1, T=8", "B=1、T=8", (2.0 * torch.randn(1, 8, 8, generator=g), model)),
    ]


MLP = Piece(
    title="mlp",
    reference=_reference_mlp,
    cases=_block_cases,
    run=_run_with_block,
    mistakes=(
        Mistake(
            "relu",
            "ReLU is used; GPT-2's MLP uses GELU (tanh form): 0.5 * h * (1 + tanh(√(2/π) * (h + 0.044715 * h³)))",
            "ReLU を使っています。GPT-2 の MLP は GELU（tanh 形）です: "
            "0.5 * h * (1 + tanh(√(2/π) * (h + 0.044715 * h³)))",
            variant=lambda x, blk: _mlp(x, blk, act="relu"),
        ),
        Mistake(
            "gelu_exact",
            "this is the exact (erf) GELU; GPT-2 and llmlab's MLP use the tanh approximation: "
            "F.gelu(h, approximate='tanh')",
            "これは厳密な（erf の）GELU です。GPT-2 と llmlab の MLP は tanh による近似を使います: "
            "F.gelu(h, approximate='tanh')",
            variant=lambda x, blk: _mlp(x, blk, act="exact"),
        ),
        Mistake(
            "no_activation",
            "there is no activation between the two layers, so the MLP is one linear map: GELU on the 4C hidden "
            "channels",
            "2 つの層の間に活性化関数がないため、MLP が 1 つの線形写像になっています。4C の隠れチャネルに GELU を"
            "適用してください",
            variant=lambda x, blk: _mlp(x, blk, act="none"),
        ),
        Mistake(
            "activation_after_projection",
            "the GELU comes after c_proj; it goes between the layers: c_proj(gelu(c_fc(x)))",
            "GELU が c_proj の後にあります。層の間に置いてください: c_proj(gelu(c_fc(x)))",
            variant=lambda x, blk: _mlp(x, blk, after=True),
        ),
        Mistake(
            "no_bias",
            "the biases are missing: x @ W.T + b for both c_fc and c_proj",
            "バイアスがありません。c_fc と c_proj のどちらも x @ W.T + b です",
            variant=lambda x, blk: _mlp(x, blk, bias=False),
        ),
    ),
)


def mlp(fn: Any, **options: bool) -> Result:
    """Check ``mlp(x, block) -> (B, T, C)``: ``block.mlp.c_fc`` (C -> 4C), GELU (tanh form), ``block.mlp.c_proj``
    (4C -> C), written with the layers' weights and biases."""
    return run_check(MLP, fn, **options)


# --- block(x, blk) ------------------------------------------------------------------------------------------------


def _block(x: torch.Tensor, blk: Block, wiring: str = "pre") -> torch.Tensor:
    ln_1, ln_2, attn, mlp_ = blk.ln_1, blk.ln_2, blk.attn, blk.mlp
    if wiring == "post":
        x = ln_1(x + attn(x))
        return ln_2(x + mlp_(x))
    if wiring == "normed_stream":
        x = ln_1(x)
        x = x + attn(x)
        x = ln_2(x)
        return x + mlp_(x)
    if wiring == "no_residual":
        return mlp_(ln_2(attn(ln_1(x))))
    if wiring == "parallel":
        return x + attn(ln_1(x)) + mlp_(ln_2(x))
    if wiring == "norms_swapped":
        x = x + attn(ln_2(x))
        return x + mlp_(ln_1(x))
    x = x + attn(ln_1(x))
    return x + mlp_(ln_2(x))


BLOCK = Piece(
    title="block",
    reference=lambda x, blk: _block(x, blk),
    cases=_block_cases,
    run=_run_with_block,
    mistakes=(
        Mistake(
            "post_ln",
            "the norm comes after the residual addition (post-LN, the 2017 Transformer); GPT-2 normalises the "
            "branch's input: x = x + blk.attn(ln_1(x))",
            "残差を足した後で正規化しています（post-LN、2017 年の Transformer）。GPT-2 は枝への入力を正規化します: "
            "x = x + blk.attn(ln_1(x))",
            variant=lambda x, blk: _block(x, blk, "post"),
        ),
        Mistake(
            "normed_stream",
            "the residual stream itself is normalised (x = ln_1(x), then x + attn(x)); only the branch reads the "
            "normalised copy: x = x + attn(ln_1(x))",
            "残差ストリームそのものを正規化しています（x = ln_1(x) の後に x + attn(x)）。正規化したコピーを読むのは"
            "枝だけです: x = x + attn(ln_1(x))",
            variant=lambda x, blk: _block(x, blk, "normed_stream"),
        ),
        Mistake(
            "no_residual",
            "there is no residual path: add each branch to x (x = x + ...), do not replace x",
            "残差の経路がありません。各枝の出力は x に足してください（x = x + ...）。x を置き換えないでください",
            variant=lambda x, blk: _block(x, blk, "no_residual"),
        ),
        Mistake(
            "parallel",
            "attention and MLP both read the block's input; the MLP reads the stream after attention was added "
            "(two steps, one after the other)",
            "アテンションと MLP の両方がブロックの入力を読んでいます。MLP が読むのはアテンションを足した後の"
            "ストリームです（2 段階を順番に）",
            variant=lambda x, blk: _block(x, blk, "parallel"),
        ),
        Mistake(
            "norms_swapped",
            "ln_1 and ln_2 are swapped: ln_1 before attention, ln_2 before the MLP",
            "ln_1 と ln_2 が逆です。アテンションの前が ln_1、MLP の前が ln_2 です",
            variant=lambda x, blk: _block(x, blk, "norms_swapped"),
        ),
    ),
)


def block(fn: Any, **options: bool) -> Result:
    """Check ``block(x, blk) -> (B, T, C)``: the pre-LN block, ``x = x + blk.attn(ln_1(x))`` then
    ``x = x + mlp(ln_2(x))``, with your ``layer_norm`` and ``mlp`` on ``blk``'s weights."""
    return run_check(BLOCK, fn, **options)


# --- gpt_forward(model, idx) ---------------------------------------------------------------------------------------


def _forward(model: GPT, idx: torch.Tensor, how: str = "right") -> torch.Tensor:
    tr = model.transformer
    T = idx.size(1)
    x = tr.wte.weight[idx]
    if how != "no_positions":
        x = x + tr.wpe.weight[torch.arange(T)]
    for blk in list(tr.h)[: 1 if how == "first_block" else None]:
        x = blk(x)
    if how != "no_final_norm":
        x = tr.ln_f(x)
    logits = x @ tr.wte.weight.T
    if how == "softmax":
        return F.softmax(logits, dim=-1)
    return logits[:, -1] if how == "last_only" else logits


def _reference_forward(model: GPT, idx: torch.Tensor, shapes: list | None = None) -> torch.Tensor:
    """The model's logits; with a ``shapes`` list, also each step's (name, shape) as notebook 03 records them, so
    the practice edition's fallback prints the same table."""
    logits = model(idx)[0]
    if shapes is not None:
        B, T = idx.shape
        C = model.config.embedding_size
        shapes += [
            ("idx", idx.shape),
            ("token embedding", torch.Size([B, T, C])),
            ("position embedding", torch.Size([T, C])),
            ("x = tok + pos", torch.Size([B, T, C])),
        ]
        shapes += [(f"after block {i}", torch.Size([B, T, C])) for i in range(model.config.depth)]
        shapes += [("after ln_f", torch.Size([B, T, C])), ("logits", logits.shape)]
    return logits


def _run_forward(fn: Any, case: Case) -> torch.Tensor:
    idx, model = case.args
    try:  # the notebook's gpt_forward also fills a list of shapes; give one if the learner's takes it
        takes_shapes = len(inspect.signature(fn).parameters) >= 3
    except (TypeError, ValueError):
        takes_shapes = False
    with torch.no_grad():
        return fn(model, idx.clone(), []) if takes_shapes else fn(model, idx.clone())


def _forward_cases() -> list[Case]:
    model = tiny_gpt(3)
    g = torch.Generator().manual_seed(4)
    return [
        Case("B=2, T=5", "B=2、T=5", (torch.randint(0, 20, (2, 5), generator=g), model)),
        Case("B=1, T=1", "B=1、T=1", (torch.randint(0, 20, (1, 1), generator=g), model)),
        Case("T = block_size", "T = block_size", (torch.randint(0, 20, (1, 8), generator=g), model)),
    ]


GPT_FORWARD = Piece(
    title="gpt_forward",
    reference=_reference_forward,
    cases=_forward_cases,
    run=_run_forward,
    atol=1e-4,
    mistakes=(
        Mistake(
            "no_positions",
            "the position embeddings are missing: x = wte.weight[idx] + wpe.weight[torch.arange(T)]",
            "位置埋め込みがありません: x = wte.weight[idx] + wpe.weight[torch.arange(T)]",
            variant=lambda model, idx, shapes=None: _forward(model, idx, "no_positions"),
        ),
        Mistake(
            "no_final_norm",
            "the final LayerNorm is missing: x = ln_f(x) after the last block, before the logits",
            "最後の LayerNorm がありません。最後のブロックの後、ロジットの前に x = ln_f(x) です",
            variant=lambda model, idx, shapes=None: _forward(model, idx, "no_final_norm"),
        ),
        Mistake(
            "first_block_only",
            "only the first block runs: loop over every block in model.transformer.h",
            "最初のブロックしか通していません。model.transformer.h のすべてのブロックをループしてください",
            variant=lambda model, idx, shapes=None: _forward(model, idx, "first_block"),
        ),
        Mistake(
            "softmax_output",
            "it returns probabilities; the forward pass returns logits (the softmax belongs to the loss and the "
            "sampling)",
            "確率を返しています。順伝播が返すのはロジットです（softmax は損失とサンプリングの側で取ります）",
            variant=lambda model, idx, shapes=None: _forward(model, idx, "softmax"),
        ),
        Mistake(
            "last_position_only",
            "it returns only the last position's logits; the forward pass gives every position's: (B, T, V)",
            "最後の位置のロジットだけを返しています。順伝播はすべての位置のロジットを返します: (B, T, V)",
            variant=lambda model, idx, shapes=None: _forward(model, idx, "last_only"),
        ),
    ),
)


def gpt_forward(fn: Any, **options: bool) -> Result:
    """Check ``gpt_forward(model, idx) -> logits (B, T, V)`` (a third parameter, the notebook's list of shapes,
    gets an empty list): token + position embeddings, every block, ``ln_f``, then the tied output layer."""
    return run_check(GPT_FORWARD, fn, **options)
