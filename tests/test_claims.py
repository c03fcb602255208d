"""The claims table: Holm's correction, the verdict rule, and the evidence on hand-made per-split frames."""
from __future__ import annotations

import math

import pytest

from benchmark.evaluation.stats import holm
from benchmark.harness.suite import SuiteError, load_suite
from harness_toy import write_suite


def test_holm_hand_computed():
    # sorted p 0.01, 0.02, 0.04 times m - j + 1 = 3, 2, 1 -> 0.03, 0.04, 0.04 (already non-decreasing)
    assert holm([0.01, 0.02, 0.04]) == pytest.approx([0.03, 0.04, 0.04])
    # input order kept; 0.03 * 2 = 0.06, then 0.04 * 1 = 0.04 is raised to the running max 0.06
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    # nan is outside the family (m = 2 here) and stays nan; 0.6 * 2 is capped at 1, then 0.7 * 1 raised to 1
    adjusted = holm([math.nan, 0.7, 0.6])
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([1.0, 1.0])


# --- the claims: block of a suite ----------------------------------------------------------

@pytest.mark.parametrize("claim, fragment", [
    ({"table": "t2"}, "claims[0].table: no (enabled) table 't2'"),
    ({"a": "Nope"}, "claims[0].a: 'Nope' is not a row label of table t1"),
    ({"b": {"minus": ["Toy"]}}, "claims[0].b.minus: expected two row labels"),
    ({"b": {"plus": ["Toy", "wide"]}}, "claims[0].b: unknown key 'plus'"),
    ({"direction": "up"}, "claims[0].direction: 'up' is not one of greater, less"),
    ({"metric": "AR@100"}, "claims[0].metric: 'AR@100' is not one of mAP@0.5, mAP_avg"),
    ({"statement": None}, "claims[0].statement: missing"),
    ({"colour": "red"}, "claims[0]: unknown key 'colour'"),
])
def test_bad_claims_fail_with_one_line(tmp_path, claim, fragment):
    good = {"id": "c", "statement": "wide beats toy", "where": "Table 1", "table": "t1", "a": "wide", "b": "Toy"}
    path = write_suite(tmp_path / "s.yaml", variants={"wide": {"hidden": 16}}, claims=[{**good, **claim}])
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path)) and fragment in msg, msg


def test_claim_setting_is_required_when_the_table_has_two(tmp_path):
    good = {"id": "c", "statement": "s", "where": "w", "table": "t1", "a": "wide", "b": "Toy"}
    path = write_suite(tmp_path / "s.yaml", variants={"wide": {}}, settings=("75/25", "50/50"), claims=[good, good])
    with pytest.raises(SuiteError, match="claims\\[0\\].setting: missing"):
        load_suite(path)
    path = write_suite(tmp_path / "s.yaml", variants={"wide": {}}, settings=("75/25", "50/50"),
                       claims=[{**good, "setting": "50/50"}, {**good, "setting": "75/25"}])
    with pytest.raises(SuiteError, match="claims: ids must be unique"):
        load_suite(path)
