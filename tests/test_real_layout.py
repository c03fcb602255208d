"""The real-data path end to end: real ActivityNet ids and annotations, features laid out like the
STALE/EffPrompt CLIP release (v_<id>.npy, variable T_raw, 512-d), the published class splits, and a
512-d text tower from a local checkpoint — through run_all.py's smoke profile."""
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


def run_all(root, clip, tmp_path, *extra):
    cmd = [sys.executable, str(ROOT / "run_all.py"), "--suite", "zs_activitynet", "--profile", "smoke", "--workers", "2",
           "--data-root", str(root), "--split-lists", str(ROOT.parent / "shared" / "data" / "splits"),
           "--clip-model", clip.model, "--clip-pretrained", clip.pretrained,
           "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=ROOT,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def test_smoke_suite_on_the_real_layout(real_layout, tmp_path):
    root, clip = real_layout
    done = run_all(root, clip, tmp_path, "--only", "*/75/25/*")
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
