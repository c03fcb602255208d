"""Statistics over splits: summaries with a Student-t CI and paired comparisons."""
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from benchmark.evaluation.stats import paired_comparison, summarise


def test_summary_hand_computed():
    # mean 4, sample variance ((2)^2 + 0 + 2^2) / 2 = 4 -> std 2; t_{0.975, 2} = 4.302653 (tables)
    s = summarise([2.0, 4.0, 6.0])
    assert (s.mean, s.std, s.n) == (4.0, 2.0, 3)
    half = 4.302653 * 2 / math.sqrt(3)
    assert s.ci95 == pytest.approx((4 - half, 4 + half), abs=1e-5)


def test_summary_of_ten_splits_uses_nine_degrees_of_freedom():
    values = np.arange(10, dtype=float)
    s = summarise(values)
    half = 2.262157 * values.std(ddof=1) / math.sqrt(10)  # t_{0.975, 9} from tables
    assert s.ci95 == pytest.approx((4.5 - half, 4.5 + half), abs=1e-5)


@pytest.mark.parametrize("values, mean", [([], math.nan), ([3.5], 3.5)])
def test_summary_of_fewer_than_two_values_is_nan_without_warnings(values, mean):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarise(values)
    assert s.n == len(values)
    assert (math.isnan(s.mean) and math.isnan(mean)) or s.mean == mean
    assert math.isnan(s.std) and all(math.isnan(x) for x in s.ci95)


def test_non_finite_values_are_an_error():
    with pytest.raises(ValueError, match="finite"):
        summarise([1.0, float("nan")])


def test_paired_comparison_hand_computed():
    a = [10.0, 12.0, 11.0, 15.0, 14.0]
    b = [9.0, 10.0, 11.5, 12.0, 10.0]
    # differences 1, 2, -0.5, 3, 4: mean 1.9, sample variance 12.2 / 4 = 3.05, t = 1.9 / sqrt(3.05 / 5)
    c = paired_comparison(a, b)
    assert c.n == 5 and c.diff == pytest.approx(1.9)
    t = 1.9 / math.sqrt(3.05 / 5)
    assert c.t_pvalue == pytest.approx(2 * stats.t.sf(t, 4), rel=1e-9)  # paired: 4 degrees of freedom
    assert 0.05 < c.t_pvalue < 0.1
    # Wilcoxon exact: |d| ranks 2, 3, 1, 4, 5; the negative difference has rank 1, so W = 1;
    # of the 32 sign patterns, 2 have W <= 1 (W = 0, W = 1): p = 2 * 2/32 = 0.125
    assert c.wilcoxon_pvalue == pytest.approx(0.125)
    half = 2.776445 * math.sqrt(3.05 / 5)  # t_{0.975, 4} from tables
    assert c.diff_ci95 == pytest.approx((1.9 - half, 1.9 + half), abs=1e-5)


def test_paired_comparison_swaps_sign():
    a, b = [1.0, 2.0, 4.0], [0.5, 1.0, 1.0]
    assert paired_comparison(b, a).diff == pytest.approx(-paired_comparison(a, b).diff)
    assert paired_comparison(b, a).t_pvalue == pytest.approx(paired_comparison(a, b).t_pvalue)


def test_paired_comparison_degenerate_cases_are_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single = paired_comparison([1.0], [2.0])
        same = paired_comparison([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert single.n == 1 and single.diff == -1.0 and math.isnan(single.t_pvalue) and math.isnan(single.wilcoxon_pvalue)
    assert same.diff == 0.0 and math.isnan(same.t_pvalue) and math.isnan(same.wilcoxon_pvalue)


def test_paired_comparison_needs_the_same_splits():
    with pytest.raises(ValueError, match="same splits"):
        paired_comparison([1.0, 2.0], [1.0])
