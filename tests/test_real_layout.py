"""The real-data path end to end: real ActivityNet and THUMOS14 ids and annotations, features laid out
like the STALE/EffPrompt CLIP release (v_<id>.npy for ActivityNet, <id>.npy for THUMOS14, variable
T_raw, 512-d), the published class splits, and a 512-d text tower from a local checkpoint — through
run_all.py's smoke profile."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.text.tiny import make_tiny_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_layout(shared_data, tmp_path_factory):
    """Two training and one validation video per class (600 real ids), random 512-d features."""
    tmp = tmp_path_factory.mktemp("anet")
    full = json.loads((shared_data / "activitynet/activity_net.v1-3.reconstructed.json").read_text())
    taken, database = {}, {}
    for vid, entry in full["database"].items():
        if entry["subset"] not in ("training", "validation") or not entry["annotations"] or not entry.get("duration"):
            continue
        label = entry["annotations"][0]["label"]
        want = 2 if entry["subset"] == "training" else 1
        if taken.get((label, entry["subset"]), 0) < want:
            taken[(label, entry["subset"])] = taken.get((label, entry["subset"]), 0) + 1
            database[vid] = entry
    (tmp / "activity_net.v1-3.min.json").write_text(json.dumps(full | {"database": database}))
    features = tmp / "features"
    features.mkdir()
    rng = np.random.default_rng(0)
    for vid, entry in database.items():
        t_raw = int(rng.integers(40, 300))
        np.save(features / f"v_{vid}.npy", rng.standard_normal((t_raw, 512)).astype(np.float32))
    clip = make_tiny_clip(tmp / "clip", seed=0, embed_dim=512)
    return tmp, clip


def run_all(root, clip, tmp_path, *extra, suite="zs_activitynet", data=None):
    data = data or ["--data-root", str(root)]
    cmd = [sys.executable, str(ROOT / "run_all.py"), "--suite", suite, "--profile", "smoke", "--workers", "2",
           *data, "--split-lists", str(ROOT.parent / "shared" / "data" / "splits"),
           "--clip-model", clip.model, "--clip-pretrained", clip.pretrained,
           "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=ROOT,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def test_smoke_suite_on_the_real_layout(real_layout, tmp_path):
    """Every method of Table 1 (default variants) on one 75/25 split of the real layout; the ablation variants
    run the same code on other configs and are covered on the embedded benchmark (all 19 jobs took 450 s in CI)."""
    root, clip = real_layout
    done = run_all(root, clip, tmp_path, "--only", "/default/75/25/")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "zs_activitynet").glob("*/record.json")]
    assert records and all(r["status"] == "ok" for r in records)
    split = records[0]["extra"]["split"]
    assert (split["seen"], split["unseen"]) == (150, 50) and split["source"].startswith("imported:")
    title = (tmp_path / "reports" / "zs_activitynet" / "table1_zero_shot.md").read_text().splitlines()[0]
    assert "real data" in title and "synthetic" not in title


def test_missing_features_are_reported_before_any_job(real_layout, tmp_path):
    root, clip = real_layout
    victim = sorted((root / "features").iterdir())[0]
    moved = victim.with_suffix(".away")
    victim.rename(moved)
    try:
        done = run_all(root, clip, tmp_path)
    finally:
        moved.rename(victim)
    assert done.returncode == 2
    assert "1 videos of the suite's splits have no features" in done.stderr
    assert not (tmp_path / "results" / "zs_activitynet").exists() or not list(
        (tmp_path / "results" / "zs_activitynet").glob("*/record.json"))


@pytest.fixture(scope="module")
def thumos_layout(shared_data, tmp_path_factory):
    """Every real THUMOS14 Validation and Test video, random 512-d features of 1.5 rows a second of video
    (31 to 2,400 rows), the real annotations and UntrimmedNet scores linked in, as a --data-root."""
    tmp = tmp_path_factory.mktemp("thumos")
    for name in ("thumos14.json", "uNet_test.npy"):
        (tmp / name).symlink_to(shared_data / "thumos14" / name)
    database = json.loads((shared_data / "thumos14/thumos14.json").read_text())["database"]
    features = tmp / "features"
    features.mkdir()
    rng = np.random.default_rng(0)
    for vid, entry in database.items():
        t_raw = max(8, round(entry["duration"] * 1.5))
        np.save(features / f"{vid}.npy", rng.standard_normal((t_raw, 512)).astype(np.float32))
    clip = make_tiny_clip(tmp / "clip", seed=0, embed_dim=512)
    return tmp, clip


def thumos_records(tmp_path):
    return [json.loads(p.read_text()) for p in (tmp_path / "results" / "zs_thumos14").glob("*/record.json")]


def test_thumos_smoke_suite_on_the_real_layout(thumos_layout, tmp_path):
    root, clip = thumos_layout
    done = run_all(root, clip, tmp_path, "--only", "*/50/50/*", suite="zs_thumos14")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = thumos_records(tmp_path)
    assert records and all(r["status"] == "ok" for r in records)
    for r in records:
        assert (r["extra"]["split"]["seen"], r["extra"]["split"]["unseen"]) == (10, 10)
        assert r["extra"]["split"]["source"].startswith("imported:")
        assert set(r["metrics"]) >= {f"mAP@{t}" for t in ("0.3", "0.4", "0.5", "0.6", "0.7")} | {"fused/mAP_avg"}
    twins = [r for r in records if r["spec"]["protocol"]["double_labels"] == "remove_twins"]
    assert twins and twins[0]["extra"]["train_videos"] <= records[0]["extra"]["train_videos"]
    assert all(r["extra"]["split"]["leaks"] == [] for r in records)  # published 50/50 split 0 does not leak
    title = (tmp_path / "reports" / "zs_thumos14" / "table1_zero_shot.md").read_text().splitlines()[0]
    assert "real data" in title and "THUMOS14" in title and "synthetic" not in title


def test_thumos_gtad_annotations_take_durations_from_the_features(thumos_layout, shared_data, tmp_path):
    """G-TAD's thumos_gt.json has no durations: with --feature-fps each is T_raw / fps, and the records say so."""
    root, clip = thumos_layout
    data = ["--annotations", str(shared_data / "thumos14/thumos_gt.json"), "--features", str(root / "features")]
    done = run_all(root, clip, tmp_path, "--only", "clip_training_free/*/75/25/*", suite="zs_thumos14", data=data)
    assert done.returncode == 2 and "--feature-fps" in done.stderr  # no durations and no rate: one line, no job
    done = run_all(root, clip, tmp_path, "--only", "clip_training_free/*/75/25/*", suite="zs_thumos14",
                   data=data + ["--feature-fps", "1.5"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (record,) = thumos_records(tmp_path)
    assert any("durations assumed: T_raw / 1.5" in note for note in record["extra"]["notes"])
    assert record["extra"]["test_videos"] > 0
    database = json.loads((shared_data / "thumos14/thumos14.json").read_text())["database"]
    assumed = record["runtime"]["data"]["durations"]
    assert len(assumed) == 410 and all(abs(d - database[vid]["duration"]) <= 1 / 1.5 for vid, d in assumed.items())
    victim = root / "features" / "video_validation_0000051.npy"  # a training video: its duration is unknown too
    moved = victim.with_suffix(".away")
    victim.rename(moved)
    try:
        done = run_all(root, clip, tmp_path, suite="zs_thumos14", data=data + ["--feature-fps", "1.5"])
    finally:
        moved.rename(victim)
    assert done.returncode == 2 and "video_validation_0000051" in done.stderr and "have no features" in done.stderr


def test_thumos_missing_feature_file_stops_the_run_in_one_line(thumos_layout, tmp_path):
    root, clip = thumos_layout
    victim = root / "features" / "video_test_0000004.npy"
    moved = victim.with_suffix(".away")
    victim.rename(moved)
    try:
        done = run_all(root, clip, tmp_path, suite="zs_thumos14")
    finally:
        moved.rename(victim)
    assert done.returncode == 2
    (line,) = [l for l in done.stderr.splitlines() if l.startswith("error:")]
    assert "videos of the suite's splits have no features" in line and "video_test_0000004" in line
    assert not thumos_records(tmp_path)
