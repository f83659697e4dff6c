"""Checks for notebook 07 (the modern GPT): rotary positions, RMSNorm, Newton-Schulz (one iteration, and all)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from llmlab.check.core import Case, Mistake, Piece, Result, run_check
from llmlab.model_parts import Rotary
from llmlab.muon import NS_COEFFICIENTS
from llmlab.muon import newton_schulz as _llmlab_newton_schulz

__all__ = ["rope", "rms_norm", "newton_schulz_step", "newton_schulz"]


# --- rope(x, first_position=0, base=10000.0) --------------------------------------------------------------------


def _reference_rope(x: torch.Tensor, first_position: int = 0, base: float = 10000.0) -> torch.Tensor:
    hs, T = x.size(-1), x.size(-2)
    return Rotary(hs, first_position + T, base)(x, past=first_position)


def _rope(x: torch.Tensor, first_position: int = 0, base: float = 10000.0, way: str = "right") -> torch.Tensor:
    *_, T, hs = x.shape
    exponent = torch.arange(0, hs, 2).float() / hs
    if way == "half_exponent":
        exponent = torch.arange(hs // 2).float() / hs
    theta = base**-exponent
    start = {"ignores_first": 0, "from_one": first_position + 1}.get(way, first_position)
    angles = torch.outer(torch.arange(start, start + T).float(), theta)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    if way == "backwards":
        sin = -sin
    if way == "halves":
        x1, x2 = x[..., : hs // 2], x[..., hs // 2 :]
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def _run_rope(fn: Any, case: Case) -> torch.Tensor:
    x, first = case.args
    return fn(x.clone(), first, **case.kwargs)


def _rope_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    return [
        Case("(2, 4, 10, 8) from position 3", "(2, 4, 10, 8)、位置 3 から", (torch.randn(2, 4, 10, 8, generator=g), 3)),
        Case("one position, hs=4", "位置 1 つ、hs=4", (torch.randn(1, 1, 1, 4, generator=g), 0)),
        Case(
            "base=100 from position 7",
            "base=100、位置 7 から",
            (torch.randn(1, 2, 5, 16, generator=g), 7),
            {"base": 100.0},
        ),
    ]


def _rope_variant(way: str) -> Any:
    return lambda x, first_position=0, base=10000.0: _rope(x, first_position, base, way)


ROPE = Piece(
    title="rope",
    reference=_reference_rope,
    cases=_rope_cases,
    run=_run_rope,
    mistakes=(
        Mistake(
            "halves",
            "it pairs channel i with channel i + hs/2 (the 'rotate_half' layout); llmlab rotates neighbouring "
            "channels (0, 1), (2, 3), ...: x[..., 0::2] with x[..., 1::2]",
            "チャネル i を i + hs/2 と組にしています（'rotate_half' の並び）。llmlab は隣り合うチャネル (0, 1)、"
            "(2, 3)、... を回転します: x[..., 0::2] と x[..., 1::2]",
            variant=_rope_variant("halves"),
        ),
        Mistake(
            "ignores_first_position",
            "the positions start at 0 whatever first_position says: torch.arange(first_position, first_position + T)",
            "first_position に関係なく位置が 0 から始まっています: torch.arange(first_position, first_position + T)",
            variant=_rope_variant("ignores_first"),
        ),
        Mistake(
            "positions_from_one",
            "the positions are off by one: the first token is at first_position, not first_position + 1",
            "位置が 1 つずれています。最初のトークンの位置は first_position + 1 ではなく first_position です",
            variant=_rope_variant("from_one"),
        ),
        Mistake(
            "rotates_backwards",
            "it rotates the wrong way: (x1 cos - x2 sin, x1 sin + x2 cos)",
            "回転の向きが逆です: (x1 cos - x2 sin, x1 sin + x2 cos)",
            variant=_rope_variant("backwards"),
        ),
        Mistake(
            "frequency_exponent",
            "the frequencies use arange(hs // 2) / hs; one per pair is base ** (-arange(0, hs, 2) / hs)",
            "周波数に arange(hs // 2) / hs を使っています。ペアごとの周波数は base ** (-arange(0, hs, 2) / hs) です",
            variant=_rope_variant("half_exponent"),
        ),
    ),
)


def rope(fn: Any, **options: bool) -> Result:
    """Check ``rope(x, first_position=0, base=10000.0)`` on (B, nh, T, hs): rotate each pair of channels
    (0, 1), (2, 3), ... of the token at position ``first_position + t`` by ``(first_position + t) * theta_i``,
    ``theta_i = base ** (-2i / hs)``; it must equal llmlab's ``Rotary``."""
    return run_check(ROPE, fn, **options)


# --- rms_norm(x, weight, eps=1e-5) -----------------------------------------------------------------------------------


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5, way: str = "right") -> torch.Tensor:
    dim = 0 if way == "dim0" else -1
    if way == "centred":
        x = x - x.mean(dim=-1, keepdim=True)
    square = x.pow(2).mean(dim=dim, keepdim=True)
    if way == "l2":
        return x / x.norm(dim=-1, keepdim=True) * weight
    scale = {"eps_outside": square.sqrt() + eps, "no_sqrt": square + eps}.get(way, torch.sqrt(square + eps))
    return x / scale * weight


def _rms_cases() -> list[Case]:
    def case(
        label: str, label_ja: str, shape: tuple[int, ...], spread: float, seed: int, dtype: torch.dtype = torch.float32
    ) -> Case:
        g = torch.Generator().manual_seed(seed)
        x = spread * (torch.randn(shape, generator=g, dtype=dtype) + 0.5)
        return Case(label, label_ja, (x, 1 + 0.3 * torch.randn(shape[-1], generator=g, dtype=dtype)))

    return [
        case("(3, 5, 8) inputs", "(3, 5, 8) の入力", (3, 5, 8), 4.0, 1),
        case("a small spread (1e-3)", "小さなばらつき（1e-3）", (2, 6), 1e-3, 2),
        case("(2, 3) inputs", "(2, 3) の入力", (2, 3), 2.0, 3),
        case("float64", "float64", (2, 2, 4), 1.0, 4, torch.float64),
    ]


RMS_NORM = Piece(
    title="rms_norm",
    reference=lambda x, weight, eps=1e-5: F.rms_norm(x, (x.size(-1),), weight, eps),
    cases=_rms_cases,
    mistakes=(
        Mistake(
            "centred",
            "the mean is subtracted (that is LayerNorm); RMSNorm only divides by the root mean square: "
            "x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)",
            "平均を引いています（それは LayerNorm です）。RMSNorm は二乗平均平方根で割るだけです: "
            "x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)",
            variant=lambda x, weight, eps=1e-5: _rms(x, weight, eps, "centred"),
        ),
        Mistake(
            "eps_outside_sqrt",
            "eps is added outside the square root; it goes inside: torch.sqrt(mean square + eps)",
            "eps を平方根の外で足しています。中に入れてください: torch.sqrt(二乗平均 + eps)",
            variant=lambda x, weight, eps=1e-5: _rms(x, weight, eps, "eps_outside"),
        ),
        Mistake(
            "no_sqrt",
            "it divides by the mean square; divide by its square root, the RMS",
            "二乗平均で割っています。その平方根（RMS）で割ってください",
            variant=lambda x, weight, eps=1e-5: _rms(x, weight, eps, "no_sqrt"),
        ),
        Mistake(
            "l2_norm",
            "x / x.norm() makes the length 1, which is √C times too small; the RMS uses the mean of the squares: "
            "x.pow(2).mean(dim=-1, keepdim=True)",
            "x / x.norm() は長さを 1 にしますが、それでは √C 倍小さすぎます。RMS は二乗の平均を使います: "
            "x.pow(2).mean(dim=-1, keepdim=True)",
            variant=lambda x, weight, eps=1e-5: _rms(x, weight, eps, "l2"),
        ),
        Mistake(
            "wrong_dim",
            "the mean square is taken over the wrong dimension: each vector's channels, dim=-1 with keepdim=True",
            "二乗平均を取る次元が違います。各ベクトルのチャネル、dim=-1（keepdim=True）で取ってください",
            variant=lambda x, weight, eps=1e-5: _rms(x, weight, eps, "dim0"),
        ),
    ),
)


def rms_norm(fn: Any, **options: bool) -> Result:
    """Check ``rms_norm(x, weight, eps=1e-5)``: ``x / sqrt(mean(x², last dim) + eps) * weight``, no mean removed
    and no bias; it must equal ``F.rms_norm``."""
    return run_check(RMS_NORM, fn, **options)


# --- newton_schulz_step(x, a, b, c) ------------------------------------------------------------------------------


def _ns_step(x: torch.Tensor, a: float, b: float, c: float, way: str = "right") -> torch.Tensor:
    gram = x @ x.T
    square = gram * gram if way == "elementwise" else gram if way == "gram_once" else gram @ gram
    if way == "swapped":
        a, c = c, a
    poly = b * gram + c * square
    return poly @ x if way == "no_linear" else a * x + poly @ x


def _ns_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)

    def unit(*shape: int) -> torch.Tensor:
        x = torch.randn(*shape, generator=g)
        return x / x.norm()

    return [
        Case("a wide (4, 8) matrix", "横長の (4, 8) 行列", (unit(4, 8), *NS_COEFFICIENTS)),
        Case("a square (5, 5) matrix", "正方の (5, 5) 行列", (unit(5, 5), *NS_COEFFICIENTS)),
        Case("a = 1.5, b = -0.5, c = 0", "a = 1.5、b = -0.5、c = 0", (unit(3, 6), 1.5, -0.5, 0.0)),
    ]


NEWTON_SCHULZ_STEP = Piece(
    title="newton_schulz_step",
    reference=_ns_step,
    cases=_ns_cases,
    mistakes=(
        Mistake(
            "gram_side",
            "for a wide x (fewer rows than columns) the Gram matrix is x @ x.T (rows × rows), and it multiplies x "
            "from the left: (b * A + c * A @ A) @ x",
            "横長の x（行が列より少ない）では、グラム行列は x @ x.T（行 × 行）で、x に左から掛けます: "
            "(b * A + c * A @ A) @ x",
            raises=r"mat1 and mat2 shapes|size mismatch|must match the size",
        ),
        Mistake(
            "elementwise_square",
            "A * A (or A ** 2) squares element by element; the polynomial needs the matrix product A @ A",
            "A * A（や A ** 2）は要素ごとの二乗です。多項式に必要なのは行列積 A @ A です",
            variant=lambda x, a, b, c: _ns_step(x, a, b, c, "elementwise"),
        ),
        Mistake(
            "gram_once",
            "the c term uses A once; it is c * A @ A (A squared): a * x + (b * A + c * A @ A) @ x",
            "c の項で A を 1 回しか使っていません。c * A @ A（A の二乗）です: a * x + (b * A + c * A @ A) @ x",
            variant=lambda x, a, b, c: _ns_step(x, a, b, c, "gram_once"),
        ),
        Mistake(
            "no_linear_term",
            "the a * x term is missing: a * x + (b * A + c * A @ A) @ x",
            "a * x の項がありません: a * x + (b * A + c * A @ A) @ x",
            variant=lambda x, a, b, c: _ns_step(x, a, b, c, "no_linear"),
        ),
        Mistake(
            "coefficients_swapped",
            "a and c are swapped: a multiplies x, c multiplies A @ A @ x",
            "a と c が逆です。a は x に、c は A @ A @ x に掛かります",
            variant=lambda x, a, b, c: _ns_step(x, a, b, c, "swapped"),
        ),
    ),
)


def newton_schulz_step(fn: Any, **options: bool) -> Result:
    """Check ``newton_schulz_step(x, a, b, c)`` for a wide (or square) matrix x: with the Gram matrix
    ``A = x @ x.T``, one iteration ``a * x + (b * A + c * A @ A) @ x``."""
    return run_check(NEWTON_SCHULZ_STEP, fn, **options)


# --- newton_schulz(g, steps=5) ----------------------------------------------------------------------------------


def _ns(g: torch.Tensor, steps: int = 5, way: str = "right") -> torch.Tensor:
    a, b, c = NS_COEFFICIENTS
    tall = g.size(0) > g.size(1)
    x = g.T if tall else g
    if way != "no_normalise":
        x = x / x.norm()
    for _ in range(steps + {"extra": 1, "short": -1}.get(way, 0)):
        x = _ns_step(x, a, b, c)
    return x.T if tall and way != "not_back" else x


def _run_ns(fn: Any, case: Case) -> torch.Tensor:
    (g,) = case.args
    return fn(g.clone(), **case.kwargs)


def _ns_full_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(6)
    spread = torch.diag(torch.logspace(-1, 0, 4))
    return [
        Case("a tall (12, 4) matrix", "縦長の (12, 4) 行列", (torch.randn(12, 4, generator=gen) @ spread,)),
        Case("a wide (3, 7) matrix", "横長の (3, 7) 行列", (torch.randn(3, 7, generator=gen),)),
        Case("steps=2", "steps=2", (torch.randn(5, 5, generator=gen),), {"steps": 2}),
    ]


NEWTON_SCHULZ = Piece(
    title="newton_schulz",
    reference=lambda g, steps=5: _llmlab_newton_schulz(g, steps),
    cases=_ns_full_cases,
    run=_run_ns,
    mistakes=(
        Mistake(
            "no_normalise",
            "the iteration blows up: divide by the norm first (x = x / x.norm()), so every singular value is at "
            "most 1, where the iteration converges",
            "反復が発散しています。先にノルムで割ってください（x = x / x.norm()）。そうするとすべての特異値が 1 以下"
            "になり、反復が収束する範囲に入ります",
            probe=lambda seen: any(isinstance(o, torch.Tensor) and not bool(o.isfinite().all()) for o in seen),
            variant=lambda g, steps=5: _ns(g, steps, "no_normalise"),
        ),
        Mistake(
            "not_transposed_back",
            "a tall matrix is transposed to work on, but not transposed back: return x.T for it, the shape of g",
            "縦長の行列を転置して計算していますが、元に戻していません。その場合は x.T を返して g と同じ形にして"
            "ください",
            variant=lambda g, steps=5: _ns(g, steps, "not_back"),
        ),
        Mistake(
            "steps_off_by_one",
            "the iteration runs one step too many or too few: for _ in range(steps)",
            "反復の回数が 1 回多いか少ないです: for _ in range(steps)",
            variant=(lambda g, steps=5: _ns(g, steps, "extra"), lambda g, steps=5: _ns(g, steps, "short")),
        ),
    ),
)


def newton_schulz(fn: Any, **options: bool) -> Result:
    """Check ``newton_schulz(g, steps=5)``: work on the wide orientation (transpose a tall g, and back at the
    end), divide by the norm, then ``steps`` iterations with Muon's coefficients (3.4445, -4.775, 2.0315); it must
    equal ``llmlab.muon.newton_schulz``."""
    return run_check(NEWTON_SCHULZ, fn, **options)
