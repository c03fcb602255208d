"""The spatio-temporal suites end to end: the smoke profile on the embedded benchmark, and the J-HMDB smoke
profile on the real annotation, split-list and person-box files with generated features in the real layout."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.data.box_annotations import load_box_annotations
from benchmark.harness.suite import SuiteError, load_suite, plan
from benchmark.text.tiny import make_tiny_clip

ROOT = Path(__file__).resolve().parents[1]


def run_all(*args, timeout=900):
    return subprocess.run([sys.executable, str(ROOT / "run_all.py"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def test_ablation_tables_skip_analyses_and_training_free_rows_run_one_seed(tmp_path):
    """An ablation table's jobs skip the analyses unless another table runs the same job (J-HMDB Table 4's
    default is Table 2's split 1); the CLIP baseline runs seed 0 only where OV-STAD runs seeds 0-2."""
    jobs = [job.spec for job in plan(load_suite("zs_stad_jhmdb", "default"))]
    skipped = [s for s in jobs if s.get("analyses") is False]
    assert {s["variant"] for s in skipped} >= {"lora_4", "no_prompting"} and {s["split"]["index"] for s in skipped} == {1}
    assert any(s["method"] == "stclip" and s["variant"] == "default" and s["split"]["index"] == 1 and "analyses" not in s
               for s in jobs)
    ov = [job.spec for job in plan(load_suite("ov_stad", "default"))]
    assert {s["seed"] for s in ov if s["method"] == "stad_clip_baseline"} == {0}
    assert {s["seed"] for s in ov if s["variant"] == "full"} == {0, 1, 2}
    tad = (ROOT / "benchmark/suites/zs_thumos14.yaml").read_text().replace(
        "  table1_zero_shot:\n", "  table1_zero_shot:\n    analyses: false\n", 1)
    (tmp_path / "t.yaml").write_text(tad)
    with pytest.raises(SuiteError, match="table1_zero_shot.analyses: false is for task stad"):
        load_suite(tmp_path / "t.yaml")


def test_jhmdb_smoke_suite_end_to_end(tmp_path):
    done = run_all("--suite", "zs_stad_jhmdb", "--profile", "smoke", "--workers", "2",
                   "--results-dir", tmp_path / "results", "--reports-dir", tmp_path / "reports")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "zs_stad_jhmdb").glob("*/record.json")]
    assert records and all(r["status"] == "ok" for r in records)
    analyses = {"act/", "odm/", "gt_boxes/", "soft_voting/", "detector_score_ignore/", "rule:s_minus_t:0.001/",
                "rule:score>0.3/", "test_videos_all/"}
    for r in records:
        metrics = r["metrics"]
        assert 0 <= metrics["frame_mAP@0.5"] <= 1 and 0 <= metrics["gt_boxes/frame_mAP@0.5"] <= 1
        assert {prefix + "frame_mAP@0.5" for prefix in analyses} <= set(metrics)
        assert any("synthetic data" in note for note in r["extra"]["notes"])
    trained = [r for r in records if r["spec"]["method"] in ("ovstad", "stclip")]
    assert trained and all(r["extra"]["compute"]["training"][r["spec"]["method"]]["rule"] == "plateau" for r in trained)
    table = (tmp_path / "reports" / "zs_stad_jhmdb" / "table2_zs_jhmdb.md").read_text()
    assert "synthetic" in table and "ST-CLIP" in table and "79.08" in table and "82.84" in table  # the paper beside ours
    assert (tmp_path / "reports" / "zs_stad_jhmdb" / "claims.md").is_file()


def test_ov_stad_smoke_suite_trains_on_one_dataset_and_tests_another(tmp_path):
    """UCF-shaped -> JHMDB-shaped pair: novel (JHMDB) classes are the headline, base (UCF) classes base/;
    no test box of the novel set is scored over a base class, and the reports carry the paper beside ours."""
    done = run_all("--suite", "ov_stad", "--profile", "smoke", "--workers", "2",
                   "--results-dir", tmp_path / "results", "--reports-dir", tmp_path / "reports")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "ov_stad").glob("*/record.json")]
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    for r in records:
        split, metrics = r["extra"]["split"], r["metrics"]
        assert (len(split["seen"]), len(split["unseen"])) == (24, 21) and not set(split["seen"]) & set(split["unseen"])
        for name in ("frame_mAP@0.5", "base/frame_mAP@0.5", "gt_boxes/base/frame_mAP@0.5", "rule:top3/base/frame_mAP@0.5"):
            assert 0 <= metrics[name] <= 1, name
    predictions = next((tmp_path / "results" / "ov_stad").glob("*/predictions.json.gz"))
    scored = json.loads(gzip.decompress(predictions.read_bytes()))["results"]
    seen, unseen = set(records[0]["extra"]["split"]["seen"]), set(records[0]["extra"]["split"]["unseen"])
    for video, rows in scored.items():  # each test set over its own dataset's classes
        labels = {row["label"] for row in rows}
        assert labels <= seen or labels <= unseen, video
    assert any({row["label"] for row in rows} <= unseen for rows in scored.values())
    table = (tmp_path / "reports" / "ov_stad" / "table5_ucf_jhmdb.md").read_text()
    assert "synthetic" in table and "61.4" in table and "71.6" in table  # Ours in the paper: 71.6 base / 61.4 novel


def test_ava_smoke_suites_read_the_ava_layout_and_score_groups_of_classes(tmp_path):
    """ZS-AVA (ST-CLIP) and OV-AVA (OV-STAD) on the AVA-shaped smoke benchmark: CSV annotations, the LFB
    person-box CSV, keyframes under the official evaluator; splits labelled generated; OV-AVA's base / novel."""
    for suite in ("zs_stad_ava", "ov_stad_ava"):
        done = run_all("--suite", suite, "--profile", "smoke", "--workers", "2",
                       "--results-dir", tmp_path / "results", "--reports-dir", tmp_path / "reports")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    zs = [json.loads(p.read_text()) for p in (tmp_path / "results" / "zs_stad_ava").glob("*/record.json")]
    assert zs and all(r["status"] == "ok" and len(r["extra"]["split"]["unseen"]) == 18 for r in zs)
    assert {"ava_alphaction/frame_mAP@0.5", "gt_boxes/frame_mAP@0.5", "rule:top3/frame_mAP@0.5"} <= set(zs[0]["metrics"])
    assert not any(m.startswith(("rule:s_minus_t", "test_videos_all/")) for m in zs[0]["metrics"])  # not AVA's shortcuts
    ov = [json.loads(p.read_text()) for p in (tmp_path / "results" / "ov_stad_ava").glob("*/record.json")]
    assert ov and all((len(r["extra"]["split"]["seen"]), len(r["extra"]["split"]["unseen"])) == (45, 15) for r in ov)
    for r in ov:  # all = the 60 classes' mean AP; base and novel are its two groups
        m, per_class = r["metrics"], r["per_class"]
        assert len(per_class) <= 60 and m["frame_mAP@0.5"] == pytest.approx(np.mean([v[0] for v in per_class.values()]))
        novel = [per_class[c][0] for c in r["extra"]["split"]["unseen"] if c in per_class]
        assert m["unseen/frame_mAP@0.5"] == pytest.approx(np.mean(novel))
    for suite, table, paper in (("zs_stad_ava", "table1_zs_ava", "9.01"), ("ov_stad_ava", "table6_ov_ava", "16.6")):
        text = (tmp_path / "reports" / suite / f"{table}.md").read_text()
        assert "generated" in text and "not the paper's" in text and "synthetic" in text and paper in text


def write_features(root: Path, videos, nframes: dict, dim: int = 64, grid: int = 4, seed: int = 0):
    """Random per-frame features in the documented layout: ROOT/<class>/<video>.npz with frames, global, tokens."""
    rng = np.random.default_rng(seed)
    for video in videos:
        t = nframes[video]
        path = root / f"{video}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, frames=np.arange(1, t + 1, dtype=np.int32),
                 **{"global": rng.standard_normal((t, dim)).astype(np.float16),
                    "tokens": rng.standard_normal((t, grid * grid, dim)).astype(np.float16)})


def test_jhmdb_smoke_on_the_real_files(shared_data, tmp_path):
    """Real JHMDB-GT.pkl, ST-CLIP's published split lists and its person-box file; generated features for the
    videos of label split 1 (the only split the smoke profile runs). A missing feature file stops the run in one line."""
    folder = shared_data / "jhmdb"
    ann = load_box_annotations(folder / "JHMDB-GT.pkl")
    write_features(tmp_path / "features", sorted(ann.nframes), ann.nframes)
    tower = make_tiny_clip(tmp_path / "clip", seed=0)
    args = ["--suite", "zs_stad_jhmdb", "--profile", "smoke", "--annotations", folder / "JHMDB-GT.pkl",
            "--features", tmp_path / "features", "--person-boxes", folder / "jhmdb_faster_RCNN_person.json",
            "--person-box-images", folder / "jhmdb_test_gt_min.json", "--split-lists", folder / "zs_splits",
            "--clip-model", tower.model, "--clip-pretrained", tower.pretrained, "--only", "stad_clip_baseline/*",
            "--workers", "2", "--results-dir", tmp_path / "results", "--reports-dir", tmp_path / "reports"]
    done = run_all(*args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "zs_stad_jhmdb").glob("*/record.json")]
    assert records and all(r["status"] == "ok" and r["extra"]["test_videos"] == 78 for r in records)
    assert all(sorted(r["extra"]["split"]["unseen"]) == ["catch", "clap", "pullup", "sit", "throw", "wave"] for r in records)
    needed = sorted(v for v in ann.splits[0][1] if v.startswith("pullup/"))[0]  # a test video of an unseen class
    missing = tmp_path / "features" / f"{needed}.npz"
    missing.unlink()
    done = run_all(*args[:-4], "--results-dir", tmp_path / "results2", "--reports-dir", tmp_path / "reports2", "--dry-run")
    assert done.returncode == 2 and f"{missing}" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
