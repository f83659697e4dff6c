"""One rule for "better than" across the course: seeds, a t-based interval, and honest wording.

Two settings trained with several seeds each give two small samples of final losses (lower is better). A
difference means something only when it is larger than what the seeds alone would produce, and with two or
three seeds that takes a wide margin. The rule, used by the panels' tables, ``best_run``, the missions and
notebook 07's ladder:

- ``"better"``: both sides have at least 3 seeds and the 95% Welch t-interval of the difference of the means
  excludes 0;
- ``"suggestive"``: the interval excludes 0 with only 2 seeds on a side, or the seeds' min-max ranges do not
  overlap while the interval still includes 0 — a lead worth re-running with more seeds, not a finding;
- ``"noise"``: the interval includes 0 and the ranges overlap;
- ``"unknown"``: a side has fewer than 2 seeds (no spread to compare with) or a non-finite value.

The t quantile is computed here (regularised incomplete beta and bisection), so Welch's fractional degrees of
freedom need no table and no scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from llmlab.i18n import tr

__all__ = ["VERDICTS", "Comparison", "compare", "mean_interval", "t_quantile"]

VERDICTS = ("better", "suggestive", "noise", "unknown")
MIN_SEEDS_FOR_BETTER = 3  # with 2 seeds a standard deviation is one difference: too thin for "better"


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by Lentz's continued fraction."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only on this side: use the symmetry
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` (possibly fractional) degrees of freedom, ``0.5 <= p < 1``."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"p={p} is not valid: pass a probability in [0.5, 1), e.g. 0.975 for a 95% interval.")
    if not df > 0:
        raise ValueError(f"df={df} is not valid: degrees of freedom must be positive (n - 1 for n seeds).")
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the t-interval for the mean of ``values``; the half-width is nan for one value."""
    n = len(values)
    if n == 0:
        raise ValueError("values is empty: pass each seed's final value.")
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan
    return mean, t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)


@dataclass(frozen=True)
class Comparison:
    """How setting A compares with setting B (lower is better): ``difference = mean_b - mean_a`` (> 0: A lower),
    its ``confidence`` interval ``[low, high]`` (Welch), the seeds per side and the rule's ``verdict``."""

    mean_a: float
    mean_b: float
    difference: float
    low: float
    high: float
    n_a: int
    n_b: int
    confidence: float
    verdict: str

    @property
    def a_is_lower(self) -> bool:
        return self.difference > 0

    def says(self, a: str = "A", b: str = "B") -> str:
        """One sentence for a learner, in their language: which is lower, by how much, and how sure."""
        # The sentence names the lower setting first, so its interval is of (higher - lower) and its seed counts
        # follow the same order: flipped when B is the lower one.
        if self.a_is_lower:
            lower, higher, low, high, n_lower, n_higher = a, b, self.low, self.high, self.n_a, self.n_b
        else:
            lower, higher, low, high, n_lower, n_higher = b, a, -self.high, -self.low, self.n_b, self.n_a
        fields = dict(
            lower=lower,
            higher=higher,
            gap=abs(self.difference),
            low=low,
            high=high,
            level=round(self.confidence * 100),
            n_a=n_lower,
            n_b=n_higher,
            a=a,
            b=b,
        )
        if self.verdict == "better":
            return tr("compare.better", **fields)
        if self.verdict == "suggestive":
            return tr("compare.suggestive", **fields)
        if self.verdict == "noise":
            return tr("compare.noise", **fields)
        return tr("compare.unknown", **(fields | dict(n_a=self.n_a, n_b=self.n_b)))  # names a, b in their order


def compare(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Compare two settings from their seeds' final values (losses: lower is better) under the course's rule."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} is not valid: pass a level in (0, 1), e.g. 0.95.")
    if not a or not b:
        raise ValueError("compare needs at least one value per setting: pass each seed's final loss.")
    a, b = [float(v) for v in a], [float(v) for v in b]
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    difference = mean_b - mean_a
    n_a, n_b = len(a), len(b)
    finite = all(math.isfinite(v) for v in (*a, *b))
    if n_a < 2 or n_b < 2 or not finite:
        return Comparison(mean_a, mean_b, difference, math.nan, math.nan, n_a, n_b, confidence, "unknown")
    va, vb = statistics.variance(a) / n_a, statistics.variance(b) / n_b
    se = math.sqrt(va + vb)
    if se == 0.0:  # identical seeds on both sides: any gap is exact (deterministic runs)
        low = high = difference
    else:
        df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))  # Welch-Satterthwaite
        half = t_quantile(0.5 + confidence / 2, df) * se
        low, high = difference - half, difference + half
    excludes_zero = low > 0 or high < 0
    ranges_apart = max(a) < min(b) or max(b) < min(a)
    if excludes_zero and min(n_a, n_b) >= MIN_SEEDS_FOR_BETTER and difference != 0:
        verdict = "better"
    elif (excludes_zero or ranges_apart) and difference != 0:
        verdict = "suggestive"
    else:
        verdict = "noise"
    return Comparison(mean_a, mean_b, difference, low, high, n_a, n_b, confidence, verdict)
