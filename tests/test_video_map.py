"""Video-mAP: hand-computed tube IoU in the two conventions, GT tubes from box rows, and an independent slow
reference (ACT.py:videoAP / iou3dt / nms3dt and evaluate_multisports.py:videoAP / iou3dt_voc, transcribed in
plain Python on (frame, x1, y1, x2, y2) rows) compared on random tubes."""
import numpy as np
import pytest

from benchmark.errors import InputError
from benchmark.evaluation.boxes import BoxTable
from benchmark.evaluation.video_map import Tube, gt_tubes, nms3dt, tube_iou, video_map


# ---------------------------------------------------------------------------------------------
# Independent slow reference. A tube is (video, label, score, rows), rows = [(frame, x1, y1, x2, y2)]
# over consecutive frames (ACT's layout).
# ---------------------------------------------------------------------------------------------

def ref_iou2d(a, b, one):
    iw = max(0.0, min(a[2] + one, b[2] + one) - max(a[0], b[0]))
    ih = max(0.0, min(a[3] + one, b[3] + one) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0] + one) * (a[3] - a[1] + one) + (b[2] - b[0] + one) * (b[3] - b[1] + one) - inter
    return inter / union if union else 0.0


def ref_iou3dt(b1, b2, one):
    """iou3dt (one = 1) and iou3dt_voc (one = 0)."""
    tmin, tmax = max(b1[0][0], b2[0][0]), min(b1[-1][0], b2[-1][0])
    if tmax < tmin:
        return 0.0
    temporal_inter = tmax - tmin + one
    temporal_union = max(b1[-1][0], b2[-1][0]) - min(b1[0][0], b2[0][0]) + one
    if temporal_inter == 0:
        return 0.0
    tube1 = [r for r in b1 if tmin <= r[0] <= tmax]
    tube2 = [r for r in b2 if tmin <= r[0] <= tmax]
    spatial = sum(ref_iou2d(r1[1:], r2[1:], one) for r1, r2 in zip(tube1, tube2)) / len(tube1)
    return spatial * temporal_inter / temporal_union


def ref_nms3dt(tubes, overlap):
    remaining = sorted(tubes, key=lambda t: -t[2])
    kept = []
    while remaining:
        top = remaining.pop(0)
        kept.append(top)
        remaining = [t for t in remaining if ref_iou3dt(t[3], top[3], 1) <= overlap]
    return kept


def ref_video_ap(gt, dets, preset, th, labels):
    act = preset == "act"
    aps = {}
    for label in labels:
        gt_of = {}
        for video, gt_label, rows in gt:
            if gt_label == label:
                gt_of.setdefault(video, []).append([rows, False])
        n_gt = sum(len(v) for v in gt_of.values())
        detections = [d for d in dets if d[1] == label]
        if act:
            videos = []
            for d in detections:
                if d[0] not in videos:
                    videos.append(d[0])
            detections = [k for v in videos for k in ref_nms3dt([d for d in detections if d[0] == v], 0.3)]
        elif n_gt == 0:
            continue
        tps, fn = [], n_gt
        pr = [(1.0, 0.0)]
        tp = fp = 0
        for video, _, score, rows in sorted(detections, key=lambda d: -d[2]):
            positive = False
            if gt_of.get(video):
                ious = [ref_iou3dt(g, rows, 1 if act else 0) for g, _ in gt_of[video]]
                amax = ious.index(max(ious))
                if ious[amax] >= th:
                    if act:
                        positive = True
                        del gt_of[video][amax]
                    elif not gt_of[video][amax][1]:
                        positive = gt_of[video][amax][1] = True
            tps.append(positive)
            if positive:
                tp, fn = tp + 1, fn - 1
            else:
                fp += 1
            if act:
                pr.append((tp / (tp + fp), tp / (tp + fn)))  # ZeroDivisionError without GT, as ACT
        if act:
            aps[label] = sum((pr[i][1] - pr[i - 1][1]) * (pr[i][0] + pr[i - 1][0]) / 2 for i in range(1, len(pr)))
        else:
            hits, precision, recall = 0, [], []
            for i, t in enumerate(tps):
                hits += t
                precision.append(hits / (i + 1))
                recall.append(hits / n_gt)
            mrec, mpre = [0.0] + recall + [1.0], [0.0] + precision + [0.0]
            for i in range(len(mpre) - 2, -1, -1):
                mpre[i] = max(mpre[i], mpre[i + 1])
            aps[label] = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)))
    return aps


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def tube(start, end, box, video="v", label="a", score=float("nan")):
    frames = np.arange(start, end + 1)
    return Tube(video, label, frames, np.tile(np.asarray(box, dtype=np.float64), (len(frames), 1)), score)


def as_rows(t: Tube):
    return [(int(f), *map(float, b)) for f, b in zip(t.frames, t.boxes)]


def random_tubes(rng):
    gt, dets = [], []
    for v in range(int(rng.integers(1, 4))):
        for _ in range(int(rng.integers(1, 4))):
            start = int(rng.integers(1, 30))
            end = start + int(rng.integers(0, 25))
            xy = rng.uniform(0, 50, 2)
            box = np.r_[xy, xy + rng.uniform(5, 40, 2)]
            frames = np.arange(start, end + 1)
            boxes = box + np.cumsum(rng.normal(0, 1, (len(frames), 4)), axis=0)
            boxes = np.hstack([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])])
            label = str(rng.choice(["a", "b"]))
            gt.append(Tube(f"v{v}", label, frames, boxes))
    for _ in range(int(rng.integers(0, 12))):
        g = gt[int(rng.integers(len(gt)))]
        cut0 = int(rng.integers(-3, 4))
        cut1 = int(rng.integers(-3, 4))
        first, last = g.frames[0] + cut0, g.frames[-1] + cut1
        if last < first:
            last = first
        frames = np.arange(first, last + 1)
        inside = np.clip(frames - g.frames[0], 0, len(g.frames) - 1)
        boxes = g.boxes[inside] + rng.normal(0, 3, (len(frames), 4))
        boxes = np.hstack([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])])
        label = g.label if rng.random() < 0.8 else str(rng.choice(["a", "b", "c"]))
        score = float(rng.integers(0, 4)) / 4 if rng.random() < 0.5 else float(rng.random())
        dets.append(Tube(g.video if rng.random() < 0.9 else "elsewhere", label, frames, boxes, score))
    return gt, dets


# ---------------------------------------------------------------------------------------------
# Hand-computed tube IoU
# ---------------------------------------------------------------------------------------------

def test_one_frame_overlap():
    # Frames 1..10 and 10..19, the same box. ACT: (10 - 10 + 1) / (19 - 1 + 1) = 1/19, spatial 1.
    # MultiSports: (10 - 10) / (19 - 1) = 0.
    a, b = tube(1, 10, (0, 0, 9, 9)), tube(10, 19, (0, 0, 9, 9))
    assert tube_iou(a, b, "act") == pytest.approx(1 / 19, abs=1e-15)
    assert tube_iou(a, b, "multisports") == 0.0


def test_partial_temporal_overlap():
    # Frames 1..10 and 6..15: ACT (10 - 6 + 1) / (15 - 1 + 1) = 5/15; MultiSports (10 - 6) / (15 - 1) = 4/14.
    a, b = tube(1, 10, (0, 0, 9, 9)), tube(6, 15, (0, 0, 9, 9))
    assert tube_iou(a, b, "act") == pytest.approx(1 / 3, abs=1e-15)
    assert tube_iou(a, b, "multisports") == pytest.approx(2 / 7, abs=1e-15)


def test_spatial_iou_conventions():
    # Same frames 1..10; boxes [0,0,9,9] and [0,0,19,9]. ACT +1: 10*10 / (20*10) = 0.5, temporal 10/10.
    # MultiSports continuous: 9*9 / (19*9) = 9/19, temporal 9/9.
    a, b = tube(1, 10, (0, 0, 9, 9)), tube(1, 10, (0, 0, 19, 9))
    assert tube_iou(a, b, "act") == 0.5
    assert tube_iou(a, b, "multisports") == pytest.approx(9 / 19, abs=1e-15)


def test_disjoint_tubes():
    a, b = tube(1, 5, (0, 0, 9, 9)), tube(7, 9, (0, 0, 9, 9))
    assert tube_iou(a, b, "act") == 0.0 and tube_iou(a, b, "multisports") == 0.0


# ---------------------------------------------------------------------------------------------
# Video AP
# ---------------------------------------------------------------------------------------------

def test_rematch_after_deletion_at_tube_level():
    # Two GT tubes over frames 1..10: A = [0,0,100,100], B = [10,0,110,100]. Detections: A itself (0.9),
    # then [3,0,103,100] (0.8), which overlaps A best (0.94) and B at 0.87 (continuous; 0.87 with +1).
    # MultiSports: the second one's argmax A is matched -> FP: TP, FP -> 50. ACT would re-match it to B,
    # but its nms3dt(0.3) first removes it (tube IoU 0.94 with the first detection): one TP of 2 GT ->
    # trapezoid 0.5 * (1 + 1) / 2 = 50 as well, for another reason.
    gt = [tube(1, 10, (0, 0, 100, 100)), tube(1, 10, (10, 0, 110, 100))]
    dets = [tube(1, 10, (0, 0, 100, 100), score=0.9), tube(1, 10, (3, 0, 103, 100), score=0.8)]
    assert video_map(gt, dets, "multisports").map == 0.5
    act = video_map(gt, dets, "act")
    assert act.map == 0.5 and act.meta["detections_removed_by_nms"] == 1
    assert ref_video_ap([(t.video, t.label, as_rows(t)) for t in gt],
                        [(t.video, t.label, t.score, as_rows(t)) for t in dets], "act", 0.5, ["a"]) == {"a": 0.5}


def test_trapezoid_vs_all_point():
    # TP, FP, TP over two GT tubes (different videos): ACT 0.5 + 0.5 * (1/2 + 2/3) / 2 = 0.791667; VOC 0.833333.
    gt = [tube(1, 10, (0, 0, 9, 9), video="x"), tube(1, 10, (0, 0, 9, 9), video="y")]
    dets = [tube(1, 10, (0, 0, 9, 9), video="x", score=0.9), tube(1, 10, (0, 0, 9, 9), video="z", score=0.8),
            tube(1, 10, (0, 0, 9, 9), video="y", score=0.7)]
    assert video_map(gt, dets, "act").map == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2, abs=1e-12)
    assert video_map(gt, dets, "multisports").map == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)


def test_act_nms_keeps_the_higher_score():
    a = tube(1, 10, (0, 0, 9, 9), score=0.5)
    b = tube(1, 10, (1, 0, 10, 9), score=0.9)  # IoU with a: 9*10 / (11*10) > 0.3
    c = tube(20, 30, (0, 0, 9, 9), score=0.1)  # disjoint
    assert nms3dt([a, b, c], 0.3) == [b, c]


def test_act_class_with_detections_and_no_gt_is_an_error():
    gt = [tube(1, 10, (0, 0, 9, 9))]
    dets = [tube(1, 10, (0, 0, 9, 9), label="b", score=0.5)]
    with pytest.raises(InputError, match="class 'b' has detected tubes but no GT"):
        video_map(gt, dets, "act", classes=["a", "b"])
    assert video_map(gt, dets, "multisports", classes=["a", "b"]).per_class == {"a": 0.0}


def test_gt_tubes_from_box_rows():
    rows = [("v", 2, 0, 0, 9, 9, "a"), ("v", 1, 0, 0, 8, 8, "a"), ("v", 1, 5, 5, 20, 20, "a"),
            ("v", 2, 5, 5, 20, 20, "a"), ("v", 1, 5, 5, 20, 20, "b"), ("w", 1, 0, 0, 1, 1, "a")]
    table = BoxTable.from_rows(rows, with_score=False)
    table = BoxTable(table.video, table.frame, table.box, table.label, person=np.array([0, 0, 1, 1, 1, 0]))
    tubes = gt_tubes(table)
    summary = [(t.video, t.label, t.frames.tolist(), t.boxes[:, 2].tolist()) for t in tubes]
    assert summary == [("v", "a", [1, 2], [8.0, 9.0]), ("v", "a", [1, 2], [20.0, 20.0]),
                       ("v", "b", [1], [20.0]), ("w", "a", [1], [1.0])]
    with pytest.raises(ValueError, match="person"):
        gt_tubes(BoxTable.from_rows(rows, with_score=False))


@pytest.mark.parametrize("preset", ["act", "multisports"])
def test_matches_the_reference_on_random_tubes(preset):
    rng = np.random.default_rng({"act": 11, "multisports": 12}[preset])
    for case in range(200):
        gt, dets = random_tubes(rng)
        th = float(rng.choice([0.2, 0.5, 0.75]))
        labels = ["a", "b"]
        gt_rows = [(t.video, t.label, as_rows(t)) for t in gt]
        det_rows = [(t.video, t.label, t.score, as_rows(t)) for t in dets]
        for a in gt[:2]:
            for b in dets[:3]:
                assert tube_iou(a, b, preset) == pytest.approx(ref_iou3dt(as_rows(a), as_rows(b), int(preset == "act")), abs=1e-12)
        try:
            expected = ref_video_ap(gt_rows, det_rows, preset, th, labels)
        except ZeroDivisionError:
            with pytest.raises(InputError):
                video_map(gt, dets, preset, th, labels)
            continue
        if not expected:
            continue
        result = video_map(gt, dets, preset, th, labels)
        assert list(result.per_class) == list(expected)
        for name, ap in expected.items():
            assert result.per_class[name] == pytest.approx(ap, abs=1e-12)
