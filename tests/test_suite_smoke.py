"""The product's headline command, end to end on the smoke profile (tiny synthetic data, one split)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_all(tmp_path, *extra):
    cmd = [sys.executable, str(ROOT / "run_all.py"), "--suite", "zs_activitynet", "--profile", "smoke",
           "--workers", "2", "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)


def test_smoke_suite_end_to_end_then_cached(tmp_path):
    first = run_all(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "failed 0, timeout 0" in first.stdout
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "zs_activitynet").glob("*/record.json")]
    assert records and all(r["status"] == "ok" for r in records)
    methods = {r["spec"]["method"] for r in records}
    assert {"stale", "b1_bmn_clip", "b2_denseclip", "effprompt", "clip_training_free", "ovactionformer", "tifad",
            "t3al"} <= methods
    for r in records:
        assert 0 <= r["metrics"]["mAP_avg"] <= 1
        total = r["extra"]["compute"]["total"]
        assert total["train"]["cpu_s"] >= 0 and total["predict"]["wall_s"] > 0
        # trained methods take optimizer steps (B-I's are its shared BMN's); the training-free ones (T3AL adapts at
        # test time: its steps are inference's) and B-I on ground-truth proposals (nothing to train) none
        untrained = r["spec"]["method"] in ("clip_training_free", "t3al") or r["labels"][0].startswith("b1_bmn_clip/gt_proposals")
        assert (total["train"]["steps"] == 0) == untrained, r["labels"]
    audit_rows_of_the_methods_since_stale(records)

    reports = tmp_path / "reports" / "zs_activitynet"
    for table in ("table1_zero_shot", "table2_closed_set", "table3_error_propagation", "table4_representation_masking",
                  "table5_text_encoder", "table6_temporal_model", "protocol_audit"):
        markdown = (reports / f"{table}.md").read_text()
        assert "synthetic" in markdown.splitlines()[0]
        assert (reports / f"{table}.csv").stat().st_size > 0
    header = (reports / "table1_zero_shot.md").read_text().split("| setting")[1].splitlines()[0]
    assert "train CPU s" in header and "train steps" in header and "inference CPU s" in header
    readme = (reports / "README.md").read_text()
    assert "synthetic data" in readme.splitlines()[0] and "wall time" in readme
    # one split: every claim is in the table, none can be tested
    claims = pd.read_csv(reports / "claims.csv")
    assert len(claims) == 23 and set(claims["verdict"]) == {"inconclusive"} and (claims["n"] == 1).all()
    assert "synthetic data" in (reports / "claims.md").read_text().splitlines()[0]
    assert "- [claims](claims.md)" in readme
    for figure in ("table1_splits_75_25", "error_propagation_75_25", "localisation_noise_75_25",
                   "fp_profile_75_25_stale", "fp_profile_75_25_b_i", "sensitivity_75_25_stale", "sensitivity_75_25_b_i"):
        for suffix in (".png", ".pdf"):
            assert (reports / f"{figure}{suffix}").stat().st_size > 0, figure

    again = run_all(tmp_path)
    assert again.returncode == 0
    assert f"0 to run, {len(records)} cached" in again.stdout


def audit_rows_of_the_methods_since_stale(records):
    """The shortcut jobs of Ti-FAD and T3AL against their clean jobs (75/25 split 0): scoring every epoch on the test
    split only observes (same headline; the best epoch is at least as good, the one smoke epoch equal); T3AL's tIoU
    set {0.5, 0.75, 0.95} gives as its average the clean job's mAP_avg3; the top-class filter is recorded."""
    from benchmark.harness.suite import load_suite

    clean_protocol = load_suite("zs_activitynet", "smoke").protocol

    def record(method, **changes):
        found = [r for r in records if r["spec"]["method"] == method and r["spec"]["variant"] == "default"
                 and r["spec"]["setting"] == "75/25" and r["spec"]["protocol"] == clean_protocol | changes]
        assert len(found) == 1, (method, changes, [r["labels"] for r in found])
        return found[0]

    clean, probed = record("tifad"), record("tifad", best_epoch_on_test=True)
    assert probed["metrics"]["mAP_avg"] == clean["metrics"]["mAP_avg"]
    assert len(probed["extra"]["test_curve"]) == 1  # smoke: one epoch
    assert probed["metrics"]["best_epoch_on_test/mAP_avg"] == clean["metrics"]["mAP_avg"]
    assert "top_class_filtered/mAP_avg" in clean["metrics"] and "fused/mAP_avg" in clean["metrics"]
    t3al, three = record("t3al"), record("t3al", tiou="0.5,0.75,0.95")
    assert three["metrics"]["mAP_avg"] == pytest.approx(t3al["metrics"]["mAP_avg3"], rel=1e-12)
    everything = record("t3al", test_subsets="all")
    assert everything["extra"]["test_videos"] > t3al["extra"]["test_videos"]


def test_thumos_smoke_suite_end_to_end(tmp_path):
    """zs_thumos14's smoke profile on the THUMOS-shaped synthetic benchmark: THUMOS tIoUs, the double-label
    leak flagged in the records and listed in the README, the UntrimmedNet-style fusion recorded apart."""
    cmd = [sys.executable, str(ROOT / "run_all.py"), "--suite", "zs_thumos14", "--profile", "smoke", "--only", "*/75/25/*",
           "--workers", "2", "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "zs_thumos14").glob("*/record.json")]
    assert {r["spec"]["method"] for r in records} == {"stale", "b1_bmn_clip", "b2_denseclip", "effprompt",
                                                     "clip_training_free", "ovactionformer", "tifad", "t3al"}
    for r in records:
        assert r["status"] == "ok" and {"mAP@0.3", "mAP@0.7", "fused/mAP_avg"} <= set(r["metrics"])
        if r["spec"]["method"] in ("b1_bmn_clip", "effprompt"):
            assert r["extra"]["config"]["bmn"]["max_duration"] == 32  # the synthetic profiles' BMN cap
    # seed 0's double-labelled pair is split by 75/25 class split 0: every record says so, and the README
    (leak,) = {note for r in records for note in r["extra"]["split"]["leaks"]}
    assert all(r["extra"]["split"]["leaks"] == [leak] for r in records)
    readme = (tmp_path / "reports" / "zs_thumos14" / "README.md").read_text()
    assert f"- 75/25: splits 0 ({leak})" in readme
    table = (tmp_path / "reports" / "zs_thumos14" / "table1_zero_shot.md").read_text()
    assert "synthetic" in table.splitlines()[0] and re.search(r"\| mAP@0\.3 +\| mAP@0\.4 ", table)

    # export ours, score them back under another name: the same numbers, to the last bit (both formats)
    for method, fmt, name in (("b1_bmn_clip", "json", "B-I again"), ("clip_training_free", "csv", "CLIP TF again")):
        out = tmp_path / "exported" / method
        common = ["--suite", "zs_thumos14", "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports")]
        done = subprocess.run([sys.executable, "-m", "benchmark", "export", "--method", method, "--format", fmt, "--out",
                               str(out), "--profile", "smoke", *common], capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 0 and (out / "75_25" / f"split_0.{fmt}").is_file(), done.stderr[-2000:]
        done = subprocess.run([sys.executable, "-m", "benchmark", "score", "--name", name, "--predictions", str(out),
                               "--settings", "75/25", "--profile", "smoke", "--diagnostics", *common],
                              capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        scored = [json.loads(p.read_text()) for p in (tmp_path / "results" / "zs_thumos14").glob("*/record.json")]
        (ours,) = [r for r in scored if r["spec"]["method"] == method and r["spec"]["setting"] == "75/25"
                   and not r["labels"][0].count("+")]
        (theirs,) = [r for r in scored if r["spec"]["method"] == f"external:{name}"]
        assert theirs["metrics"] == {k: v for k, v in ours["metrics"].items() if k in theirs["metrics"]}
        assert {"mAP_avg", "gt_labels/mAP_avg", "fused/mAP_avg"} <= set(theirs["metrics"]) and ours["metrics"]["mAP_avg"] > 0
        assert theirs["per_class"] == ours["per_class"] and theirs["extra"]["diagnostics"] == ours["extra"]["diagnostics"]
        table = (tmp_path / "reports" / "zs_thumos14" / "table1_zero_shot.md").read_text()
        assert f"| {name} " in table
        paired = pd.read_csv(tmp_path / "reports" / "zs_thumos14" / f"paired_{name.lower().replace(' ', '_').replace('-', '_')}.csv")
        same = paired[(paired["table"] == "table1_zero_shot") & (paired["vs"] == {"b1_bmn_clip": "B-I"}.get(method, "CLIP training-free"))]
        assert len(same) == 1 and same["Δ mean"].iloc[0] == 0.0 and set(paired["vs"]) >= {"STALE", "B-II"}
