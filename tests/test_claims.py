"""The claims table: Holm's correction, the verdict rule, and the evidence on hand-made per-split frames."""
from __future__ import annotations

import math

import pytest

from benchmark.evaluation.stats import holm


def test_holm_hand_computed():
    # sorted p 0.01, 0.02, 0.04 times m - j + 1 = 3, 2, 1 -> 0.03, 0.04, 0.04 (already non-decreasing)
    assert holm([0.01, 0.02, 0.04]) == pytest.approx([0.03, 0.04, 0.04])
    # input order kept; 0.03 * 2 = 0.06, then 0.04 * 1 = 0.04 is raised to the running max 0.06
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    # nan is outside the family (m = 2 here) and stays nan; 0.6 * 2 is capped at 1, then 0.7 * 1 raised to 1
    adjusted = holm([math.nan, 0.7, 0.6])
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([1.0, 1.0])
