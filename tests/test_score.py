"""``python -m benchmark score``: the layout, both formats, what is left out, bad input, the report rows.

On zs_thumos14's smoke profile (the THUMOS-shaped synthetic benchmark: 75/25 split 0, 50/50 split 0
and the closed set). The equality of ``score`` with the suite's own evaluation (export ours, score
them back) is in tests/test_suite_smoke.py, after a real run.
"""
from __future__ import annotations

import json
import warnings

import pytest

from benchmark.cli import main
from benchmark.evaluation.predictions import write_predictions
from benchmark.harness.external import SETTING_DIRS
from benchmark.harness.scoring import data_facts, job_test_view, open_dataset
from benchmark.harness.suite import external_spec, load_suite

SUITE = ("--suite", "zs_thumos14", "--profile", "smoke")


@pytest.fixture(scope="module")
def views():
    """(setting, split) -> the split's test view, as `score` sees it."""
    suite = load_suite("zs_thumos14", "smoke")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = open_dataset(data_facts(suite), features=False)
        return dataset, {(s, i): job_test_view(dataset, external_spec(suite, "x", s, i))[1]
                         for s, i in (("75/25", 0), ("50/50", 0), ("closed", 0))}


def gt_as_predictions(test, jitter: float = 0.0) -> dict:
    """The test view's GT instances as detections (score 1 - a little per instance)."""
    out: dict = {}
    for k, (vid, t0, t1, label) in enumerate(zip(test.gt.video, test.gt.t0, test.gt.t1, test.gt.label)):
        out.setdefault(str(vid), []).append({"segment": [float(t0) + jitter, float(t1)], "label": str(label),
                                             "score": 1.0 - k * 1e-4})
    return out


def write_folder(root, views, suffix=".json", skip=(), **overrides) -> None:
    for (setting, index), test in views.items():
        if (setting, index) in skip:
            continue
        detections = overrides.get(setting, gt_as_predictions(test))
        write_predictions(root / SETTING_DIRS[setting] / f"split_{index}{suffix}", detections)


def score(tmp_path, folder, *extra):
    return main(["score", *SUITE, "--name", "Oracle", "--predictions", str(folder), "--results-dir",
                 str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports"), *extra])


def records(tmp_path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (tmp_path / "results" / "zs_thumos14").glob("*/record.json")]


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_ground_truth_scores_one_in_both_formats_and_joins_the_tables(tmp_path, views, suffix, capsys):
    dataset, by_split = views
    write_folder(tmp_path / "pred", by_split, suffix)
    assert score(tmp_path, tmp_path / "pred") == 0
    recs = records(tmp_path)
    assert len(recs) == 3 and {r["spec"]["setting"] for r in recs} == {"75/25", "50/50", "closed"}
    for r in recs:
        assert r["status"] == "ok" and r["spec"]["method"] == "external:Oracle" and r["spec"]["hparams"] == {}
        assert r["metrics"]["mAP_avg"] == 1.0 and r["metrics"]["gt_labels/mAP_avg"] == 1.0
        assert r["extra"]["scored"]["outside_scored_videos"] == r["extra"]["scored"]["outside_test_classes"] == 0
        assert r["provenance"]["prediction_file"]["format"] == suffix[1:] and len(r["provenance"]["prediction_file"]["sha256"]) == 64
    table1 = (tmp_path / "reports" / "zs_thumos14" / "table1_zero_shot.md").read_text()
    assert "| 75/25     | Oracle " in table1 and "| 50/50     | Oracle " in table1
    assert "| Oracle GT labels" in (tmp_path / "reports" / "zs_thumos14" / "error_decomposition.md").read_text()
    assert "Oracle" in (tmp_path / "reports" / "zs_thumos14" / "table2_closed_set.md").read_text()
    readme = (tmp_path / "reports" / "zs_thumos14" / "README.md").read_text()
    assert "## Methods scored from their prediction files" in readme and f"split_0{suffix}" in readme


def test_predictions_outside_the_split_are_left_out_and_counted(tmp_path, views):
    dataset, by_split = views
    test = by_split[("75/25", 0)]
    seen = sorted(set(dataset.annotations.classes) - set(test.classes))[0]
    training_video = next(v.id for v in dataset.annotations.subset(dataset.train_subset))
    detections = gt_as_predictions(test)
    first = next(iter(detections))
    detections[first] = detections[first] + [{"segment": [0.0, 1.0], "label": seen, "score": 2.0}]  # a seen class
    detections[training_video] = [{"segment": [0.0, 1.0], "label": test.classes[0], "score": 2.0}] * 3
    write_folder(tmp_path / "pred", by_split, **{"75/25": detections})
    assert score(tmp_path, tmp_path / "pred", "--no-report") == 0
    (rec,) = [r for r in records(tmp_path) if r["spec"]["setting"] == "75/25"]
    assert rec["extra"]["scored"] == {"predictions": len(test.gt) + 4, "outside_scored_videos": 3, "outside_test_classes": 1}
    assert rec["metrics"]["mAP_avg"] == 1.0  # left out: they would have been false positives ranked first


def test_partial_paper_numbers_and_settings(tmp_path, views):
    dataset, by_split = views
    write_folder(tmp_path / "pred", by_split, skip=[("closed", 0)])
    assert score(tmp_path, tmp_path / "pred") == 2  # the closed-set file is missing
    assert not records(tmp_path)
    paper = tmp_path / "paper.yaml"
    paper.write_text("table1_zero_shot: {'75/25': {mAP_avg: 12.5, mAP@0.5: 20.25}}\n")
    assert score(tmp_path, tmp_path / "pred", "--partial", "--paper-numbers", str(paper)) == 0
    assert len(records(tmp_path)) == 2
    table1 = (tmp_path / "reports" / "zs_thumos14" / "table1_zero_shot.md").read_text()
    oracle = [line for line in table1.splitlines() if "| Oracle " in line]
    assert len(oracle) == 2 and "12.5" in oracle[0] and "20.25" in oracle[0] and "12.5" not in oracle[1]
    assert "Oracle" not in (tmp_path / "reports" / "zs_thumos14" / "table2_closed_set.md").read_text()
    assert score(tmp_path / "again", tmp_path / "pred", "--settings", "75/25", "--no-report") == 0
    assert [r["spec"]["setting"] for r in records(tmp_path / "again")] == ["75/25"]


def test_an_empty_file_scores_zero_with_a_warning(tmp_path, views):
    dataset, by_split = views
    write_folder(tmp_path / "pred", by_split, **{"50/50": {}})
    (tmp_path / "pred" / "50_50" / "split_0.json").write_text("")
    with pytest.warns(UserWarning, match="50_50/split_0.json: no predictions"):
        assert score(tmp_path, tmp_path / "pred", "--no-report") == 0
    (rec,) = [r for r in records(tmp_path) if r["spec"]["setting"] == "50/50"]
    assert rec["metrics"]["mAP_avg"] == 0.0 and rec["extra"]["scored"]["predictions"] == 0


def _bad(root, by_split, case):
    """Write a folder with one defect; returns the path the error must name."""
    write_folder(root, by_split)
    target = root / "75_25" / "split_0.json"
    vid = str(by_split[("75/25", 0)].gt.video[0])
    label = str(by_split[("75/25", 0)].gt.label[0])
    if case == "layout":
        (root / "75-25").mkdir()
        return root / "75-25"
    if case == "stray file":
        target = root / "75_25" / "predictions.json"
        target.write_text("{}")
        return target
    if case == "two files":
        (root / "75_25" / "split_0.csv").write_text("video-id,t-start,t-end,label,score\n")
        return root / "75_25" / "split_0."  # the message names one and the other
    if case == "missing split":
        target.unlink()
        return root / "75_25" / "split_0.json"
    if case == "not a folder":
        return root / "nowhere"
    contents = {
        "malformed json": '{"results": {',
        "nan score": f'{{"results": {{"{vid}": [{{"segment": [0, 1], "label": "{label}", "score": NaN}}]}}}}',
        "reversed": f'{{"results": {{"{vid}": [{{"segment": [3, 1], "label": "{label}", "score": 1}}]}}}}',
        "non-numeric": f'{{"results": {{"{vid}": [{{"segment": ["a", 1], "label": "{label}", "score": 1}}]}}}}',
        "unknown class": f'{{"results": {{"{vid}": [{{"segment": [0, 1], "label": "Juggling chainsaws", "score": 1}}]}}}}',
    }
    if case in contents:
        target.write_text(contents[case])
        return target
    target.unlink()
    target = target.with_suffix(".csv")
    target.write_text({"malformed csv": "video-id,t-start,t-end,label,score\na,0,1,x,1,2,3\n",
                       "missing column": "video-id,t-start,label,score\na,0,x,1\n",
                       "infinite score csv": f"video-id,t-start,t-end,label,score\n{vid},0,1,{label},inf\n"}[case])
    return target


@pytest.mark.parametrize("case", ["layout", "stray file", "two files", "missing split", "not a folder", "malformed json",
                                  "nan score", "reversed", "non-numeric", "unknown class", "malformed csv",
                                  "missing column", "infinite score csv"])
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(tmp_path, views, case, capsys):
    dataset, by_split = views
    named = _bad(tmp_path / "pred", by_split, case)
    assert score(tmp_path, tmp_path / "pred" if case != "not a folder" else named) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if not line.startswith("warning: ")]  # (the split's double-label warning)
    assert len(errors) == 1 and errors[0].startswith("error: ") and str(named) in errors[0], err
    assert not (tmp_path / "results").exists() or not records(tmp_path)
    assert not (tmp_path / "reports").exists()
