"""The course's rule for "better than" (llmlab.compare), on constructed cases with known answers."""

from __future__ import annotations

import math

import pytest

from llmlab.compare import compare, mean_interval, t_quantile

# Two-sided 95% critical values of Student's t from printed tables (an independent reference).
TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 30: 2.042, 120: 1.980}


@pytest.mark.parametrize("df,expected", sorted(TABLE_975.items()))
def test_t_quantile_matches_printed_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=6e-4)


def test_t_quantile_for_fractional_df_by_integrating_the_density() -> None:
    # The density of t with df = 2.5, integrated from 0 to the quantile by the midpoint rule, must be 0.475.
    df = 2.5
    q = t_quantile(0.975, df)
    const = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    n = 200_000
    h = q / n
    area = sum(const * (1 + ((i + 0.5) * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n)) * h
    assert area == pytest.approx(0.475, abs=1e-6)
    assert t_quantile(0.975, 3) < q < t_quantile(0.975, 2)


def test_mean_interval_is_t_times_standard_error() -> None:
    mean, half = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3), abs=1e-3)
    assert math.isnan(mean_interval([5.0])[1])


def test_three_seeds_far_apart_is_better() -> None:
    c = compare([2.00, 2.01, 2.02], [2.30, 2.31, 2.29])
    assert c.verdict == "better" and c.a_is_lower and c.low > 0
    assert "lower than" in c.says("wide", "deep") and c.says("wide", "deep").startswith("wide")


def test_sentence_keeps_its_interval_positive_when_b_is_lower() -> None:
    # The sentence names the lower side first: its interval is of (higher - lower), so it must not flip sign
    # with the argument order, and the seed counts follow the names.
    forward = compare([2.00, 2.01, 2.02, 2.01], [2.30, 2.31, 2.29])
    backward = compare([2.30, 2.31, 2.29], [2.00, 2.01, 2.02, 2.01])
    assert not backward.a_is_lower and backward.high < 0
    assert forward.says("wide", "deep") == backward.says("deep", "wide")
    assert "+0.2" in backward.says("deep", "wide") and "-0.2" not in backward.says("deep", "wide")
    assert "4 and 3 seeds" in backward.says("deep", "wide")


def test_two_seeds_never_better_even_when_far_apart() -> None:
    # The review's case: a lead larger than 2 standard errors at two seeds is not "clearly best".
    c = compare([2.10, 2.12], [2.30, 2.28])
    assert c.verdict == "suggestive"
    assert "suggestive" in c.says()


def test_lead_of_two_standard_errors_at_two_seeds_is_not_better() -> None:
    # Notebook 04's old "clearly best": a lead of 0.173 against 2·SE = 0.168 at two seeds per setting.
    d = 0.084 / math.sqrt(2)  # two values m ± d have a standard deviation of 0.084, so SE of the gap = 0.084
    a, b = [2.0 - d, 2.0 + d], [2.173 - d, 2.173 + d]
    c = compare(a, b)
    assert c.difference == pytest.approx(0.173) and c.low < 0 < c.high  # t with ~2 df: the interval spans 0
    assert c.verdict == "suggestive"  # the ranges are apart, so worth a re-run; never "better"


def test_overlapping_seeds_are_noise() -> None:
    c = compare([2.0, 2.2, 2.1], [2.05, 2.25, 2.15])
    assert c.verdict == "noise" and c.low < 0 < c.high
    assert "within the noise" in c.says()


def test_separate_ranges_with_wide_interval_are_suggestive() -> None:
    # Ranges do not overlap, but 3 seeds with this much spread leave 0 inside the interval.
    c = compare([1.0, 1.5, 1.9], [1.95, 2.6, 3.2])
    assert c.low < 0 < c.high and c.verdict == "suggestive"


def test_one_seed_or_divergence_is_unknown() -> None:
    assert compare([2.0], [2.5, 2.6]).verdict == "unknown"
    assert compare([2.0, math.nan], [2.5, 2.6]).verdict == "unknown"
    assert "at least 2" in compare([2.0], [3.0]).says()


def test_deterministic_equal_seeds_give_an_exact_gap() -> None:
    c = compare([2.0, 2.0, 2.0], [2.5, 2.5, 2.5])
    assert c.verdict == "better" and c.low == c.high == pytest.approx(0.5)
    assert compare([2.0, 2.0, 2.0], [2.0, 2.0, 2.0]).verdict == "noise"


def test_the_sentence_follows_the_learners_language(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMLAB_LANG", "ja")
    assert "ノイズ" in compare([2.0, 2.2, 2.1], [2.05, 2.25, 2.15]).says()


def test_bad_input_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        compare([], [1.0])
    with pytest.raises(ValueError, match="confidence=2"):
        compare([1.0], [1.0], confidence=2)
