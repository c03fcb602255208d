"""The claims table: Holm's correction, the verdict rule, and the evidence on hand-made per-split frames."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark.evaluation.stats import holm
from benchmark.harness.report import claims_frame, verdict
from benchmark.harness.suite import Claim, SuiteError, load_suite
from harness_toy import write_suite


def test_holm_hand_computed():
    # sorted p 0.01, 0.02, 0.04 times m - j + 1 = 3, 2, 1 -> 0.03, 0.04, 0.04 (already non-decreasing)
    assert holm([0.01, 0.02, 0.04]) == pytest.approx([0.03, 0.04, 0.04])
    # input order kept; 0.03 * 2 = 0.06, then 0.04 * 1 = 0.04 is raised to the running max 0.06
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    # nan is outside the family (m = 2 here) and stays nan; 0.6 * 2 is capped at 1, then 0.7 * 1 raised to 1
    adjusted = holm([math.nan, 0.7, 0.6])
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("diff, p, n, direction, expected", [
    (3.0, 0.001, 10, "greater", ("supported", "Holm p < 0.05")),
    (-3.0, 0.001, 10, "greater", ("contradicted", "Holm p < 0.05")),
    (-3.0, 0.001, 10, "less", ("supported", "Holm p < 0.05")),
    (3.0, 0.001, 10, "less", ("contradicted", "Holm p < 0.05")),
    (3.0, 0.05, 10, "greater", ("inconclusive", "Holm p ≥ 0.05")),
    (3.0, math.nan, 1, "greater", ("inconclusive", "n = 1")),
    (0.0, math.nan, 4, "greater", ("inconclusive", "no test: Δ = 0 on every split")),
    (math.nan, math.nan, 0, "greater", ("not run", "no split has both sides")),
])
def test_verdict_rule(diff, p, n, direction, expected):
    assert verdict(diff, p, n, direction, 0.05) == expected


def test_holm_turns_a_raw_p_below_alpha_into_inconclusive():
    raw = [0.01, 0.04, 0.03]  # all < 0.05; adjusted 0.03, 0.06, 0.06
    assert [verdict(1.0, p, 10, "greater", 0.05)[0] for p in holm(raw)] == ["supported", "inconclusive", "inconclusive"]


def _frame(values: dict[str, list[float]], setting: str = "75/25") -> pd.DataFrame:
    """A table's per-job frame as job_frame builds it: one line per (row, split), nan = no ok record."""
    return pd.DataFrame([{"row": row, "setting": setting, "split": split, "seed": 0, "mAP_avg": v}
                         for row, vs in values.items() for split, v in enumerate(vs)])


def _claim(cid: str, a, b, direction: str = "greater") -> Claim:
    return Claim(id=cid, statement="", where="", table="t", setting="75/25", metric="mAP_avg",
                 a=a if isinstance(a, tuple) else (a,), b=b if isinstance(b, tuple) else (b,), direction=direction)


def test_claims_on_hand_made_splits():
    nan = math.nan
    frame = _frame({
        "base": [10, 20, 30, 40],
        "win": [15, 26, 37, 48],      # Δ 5, 6, 7, 8: paired t p = 0.00209 (scipy)
        "loss": [5, 14, 23, 32],      # Δ -5 .. -8: same p
        "noise": [11, 19, 32, 38],    # Δ 1, -1, 2, -2: mean 0, p = 1
        "edge": [11, 22, 33, 41],     # Δ 1, 2, 3, 1: p = 0.0354 raw, above 0.05 after Holm
        "one": [12, nan, nan, nan],   # only split 0 has a record
        "none": [nan, nan, nan, nan],  # never ran
        # a degradation claim: drops (g1 - p1) = 10, 12, 14, 16 vs (g2 - p2) = 20, 20, 20, 20
        "g1": [50, 52, 54, 56], "p1": [40, 40, 40, 40], "g2": [60, 61, 62, 63], "p2": [40, 41, 42, 43],
    })
    claims = (_claim("win", "win", "base"), _claim("loss", "loss", "base"), _claim("noise", "noise", "base"),
              _claim("edge", "edge", "base"), _claim("one", "one", "base"), _claim("none", "none", "base"),
              _claim("drop", ("g1", "p1"), ("g2", "p2"), "less"))
    out, pairs = claims_frame(claims, {"t": frame}, 0.05)
    out = out.set_index("id")

    assert out["verdict"].to_dict() == {"win": "supported", "loss": "contradicted", "noise": "inconclusive",
                                        "edge": "inconclusive", "one": "inconclusive", "none": "not run",
                                        "drop": "supported"}
    assert out.loc["win", ["n", "Δ mean", "A mean", "B mean"]].tolist() == pytest.approx([4, 6.5, 31.5, 25.0])
    # 95% CI of the mean Δ: 6.5 ± t(0.975, 3) * sd(5, 6, 7, 8) / 2 = 6.5 ± 3.182446 * 1.290994 / 2
    half = 3.182446 * math.sqrt(5 / 3) / 2
    assert out.loc["win", ["Δ ci95_lo", "Δ ci95_hi"]].tolist() == pytest.approx([6.5 - half, 6.5 + half], abs=1e-5)
    assert out.loc["win", "paired t p"] == pytest.approx(0.0020855, rel=1e-4)
    # the family: the five claims with n >= 2. Sorted raw p: win, loss 0.0021, drop 0.0123 (Δ -10, -8, -6, -4),
    # edge 0.0354, noise 1; edge is the 4th of 5, so x (5 - 4 + 1) = 0.0707 > 0.05 although 0.0354 < 0.05
    assert (out["Holm m"] == 5).all()
    assert out.loc["edge", "paired t p"] == pytest.approx(0.035353, rel=1e-4)
    assert out.loc["edge", "Holm p"] == pytest.approx(2 * 0.035353, rel=1e-4)
    assert out.loc["one", "n"] == 1 and out.loc["one", "why"] == "n = 1" and math.isnan(out.loc["one", "Holm p"])
    assert out.loc["none", "n"] == 0
    assert out.loc["drop", "Δ mean"] == pytest.approx(-7.0) and out.loc["drop", "test"] == "(g1 − p1) < (g2 − p2)"
    assert pairs[pairs["id"] == "drop"]["Δ"].tolist() == [-10, -8, -6, -4]
    assert pairs[pairs["id"] == "one"][["split", "A", "B"]].values.tolist() == [[0, 12, 10]]


def test_claims_pair_by_split_and_seed_within_the_setting():
    frame = pd.concat([_frame({"a": [3, 4, 5], "b": [1, 1, 1]}, "75/25"), _frame({"a": [0, 0, 0], "b": [9, 9, 9]}, "50/50")])
    frame.loc[(frame["row"] == "b") & (frame["split"] == 2), "split"] = 7  # no partner for a's split 2
    out, pairs = claims_frame((_claim("c", "a", "b"),), {"t": frame}, 0.05)
    assert out.loc[0, "n"] == 2 and out.loc[0, "Δ mean"] == pytest.approx(2.5)
    assert pairs["split"].tolist() == [0, 1]



def test_a_row_run_on_one_seed_is_paired_with_every_seed_of_the_other():
    """A training-free row (seed 0 only) against a trained row on seeds 0-2: three pairs per split, its one
    value each time; a row whose other seeds failed is not broadcast (it was planned on three seeds)."""
    nan = math.nan
    trained = pd.concat([_frame({"trained": vs}).assign(seed=seed) for seed, vs in enumerate([[4, 6], [5, 7], [6, 8]])])
    failed = pd.concat([_frame({"failed": vs}).assign(seed=seed) for seed, vs in enumerate([[9, 9], [nan, nan], [nan, nan]])])
    frame = pd.concat([trained, failed, _frame({"free": [1, 2]})])
    out, pairs = claims_frame((_claim("c", "trained", "free"), _claim("d", "failed", "free")), {"t": frame}, 0.05)
    c = pairs[pairs["id"] == "c"]
    assert out.loc[0, "n"] == 6 and c["B"].tolist() == [1, 1, 1, 2, 2, 2] and out.loc[0, "Δ mean"] == pytest.approx(4.5)
    assert out.loc[1, "n"] == 2

# --- the claims: block of a suite ----------------------------------------------------------

def test_zs_activitynet_claims_name_rows_of_their_tables():
    suite = load_suite("zs_activitynet", "smoke")
    claims = {c.id: c for c in suite.claims}
    assert len(claims) == 23 and suite.report["alpha"] == 0.05
    assert {c.table for c in claims.values()} == {"table1_zero_shot", "table3_error_propagation",
                                                  "table4_representation_masking", "table5_text_encoder",
                                                  "table6_temporal_model", "tifad_ablations"}
    t3 = claims["t3_parallel_degrades_less"]
    assert (t3.a, t3.b, t3.direction, t3.setting) == (("STALE GT action masks", "STALE predicted masks"),
                                                      ("B-I GT proposals", "B-I predicted proposals"), "less", "75/25")
    assert all(c.metric == "mAP_avg" for c in claims.values())


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
