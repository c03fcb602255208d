import json
import shutil
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmark.data.box_annotations import load_box_annotations, load_person_boxes, read_ava_exclusions, read_ava_label_map
from benchmark.data.regions import roi_pool, roi_weights
from benchmark.data.safe_pickle import load_pickle
from benchmark.data.synthetic_stad import PROFILES, ensure_synthetic_stad, generate, load_manifest
from benchmark.evaluation.boxes import box_iou
from benchmark.text.clip import TextEncoderConfig, load_text_tower


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _data_bytes(root: Path) -> int:
    """Everything but the text tower (a 13 MB copy of the cached pretrained checkpoint)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "text_encoder" not in p.parts)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The three smoke profiles, with their generation times (the tower is cached before timing)."""
    root = tmp_path_factory.mktemp("stad")
    generate(root / "warm", replace(PROFILES["ava_smoke"], train_movies=1, val_movies=1, keyframes=10))
    out = {}
    for profile in ("jhmdb_smoke", "ucf_smoke", "ava_smoke"):
        start = time.perf_counter()
        path = generate(root / profile, PROFILES[profile])
        out[profile] = (path, time.perf_counter() - start)
    return out


def _pkl(root: Path):
    manifest = load_manifest(root)
    return manifest, load_box_annotations(manifest["annotations"]["act_pkl"])


def _features(root: Path, video: str) -> dict:
    with np.load(root / "features" / f"{video}.npz") as data:
        return {key: data[key] for key in data.files}


def test_smoke_profiles_are_small_and_fast(smoke):
    for profile, (path, seconds) in smoke.items():
        assert _data_bytes(path) < 5e6, profile
        assert seconds < 20, (profile, seconds)  # about 1 s each on an idle core
        assert json.loads((path / "synthetic.json").read_text())["synthetic"] is True


def test_same_config_same_bytes_wherever_written(tmp_path):
    for cfg in (replace(PROFILES["jhmdb_smoke"], videos=21), replace(PROFILES["ava_smoke"], train_movies=2, val_movies=1)):
        a, b = generate(tmp_path / cfg.layout / "a", cfg), generate(tmp_path / cfg.layout / "deeper" / "b", cfg)
        files = _files(a)
        assert "synthetic.json" in files and any(f.endswith(".pt") for f in files) and any(f.endswith(".npz") for f in files)
        assert files == _files(b)
        c = generate(tmp_path / cfg.layout / "c", replace(cfg, seed=1))
        assert _files(c)["synthetic.json"] != files["synthetic.json"]


def test_a_moved_folder_still_loads(tmp_path):
    first = generate(tmp_path / "first", replace(PROFILES["jhmdb_smoke"], videos=21))
    raw = json.loads((first / "synthetic.json").read_text())
    paths = [*raw["annotations"].values(), raw["person_boxes"], raw["features"], *raw["text_encoder"].values()]
    assert not any(Path(p).is_absolute() for p in paths)
    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(first, moved)
    manifest = load_manifest(moved)
    assert all(Path(p).exists() for p in [*manifest["annotations"].values(), manifest["person_boxes"], manifest["features"]])
    tower = load_text_tower(TextEncoderConfig(**manifest["text_encoder"]))
    assert tower.encode_text(manifest["phrases"][:2]).shape == (2, raw["config"]["embed_dim"])
    assert len(load_box_annotations(manifest["annotations"]["act_pkl"]).videos) == 21


def test_ensure_reuses_a_complete_folder(tmp_path):
    first = ensure_synthetic_stad(tmp_path, "jhmdb_smoke", seed=2, videos=21)
    stamp = (first / "synthetic.json").stat().st_mtime_ns
    assert ensure_synthetic_stad(tmp_path, "jhmdb_smoke", seed=2, videos=21) == first
    assert (first / "synthetic.json").stat().st_mtime_ns == stamp


def test_jhmdb_shape_through_the_real_readers(smoke):
    root = smoke["jhmdb_smoke"][0]
    manifest, ann = _pkl(root)
    assert ann.format == "act_pkl" and len(ann.labels) == 21 and ann.labels == tuple(manifest["classes"])
    assert all("_" in name and " " not in name for name in ann.labels)  # JHMDB spelling: brush_hair
    assert len(ann.videos) == 42 and len(ann.splits) == 3
    for train, test in ann.splits:
        assert not set(train) & set(test) and len(train) + len(test) == 42 and 0.2 < len(test) / 42 < 0.4
    assert set(ann.resolution.values()) == {(240, 320)} and 15 <= min(ann.nframes.values()) <= max(ann.nframes.values()) <= 40
    for video in ann.videos:  # one actor tube covering every frame
        rows = ann.gt.video == video
        assert set(ann.gt.person[rows].tolist()) == {0} and sorted(ann.gt.frame[rows]) == list(range(1, ann.nframes[video] + 1))
    raw = load_pickle(manifest["annotations"]["act_pkl"])
    assert next(iter(next(iter(raw["gttubes"].values())).values()))[0].dtype == np.float32
    # the ST-CLIP test JSON holds exactly the pickle's split-1 test rows (bare movie names)
    stclip = load_box_annotations(manifest["annotations"]["gt_json"])
    test = ann.gt.select(np.isin(ann.gt.video, ann.splits[0][1]))
    bare = np.array([v.split("/")[-1] for v in test.video])
    assert _rows(bare, test) == _rows(stclip.gt.video, stclip.gt)
    video = ann.videos[0]
    features = _features(root, video)
    assert features["tokens"].dtype == np.float16 and features["tokens"].shape == (ann.nframes[video], 16, 64)
    assert features["global"].shape == (ann.nframes[video], 64)
    assert (features["frames"] == np.arange(1, ann.nframes[video] + 1)).all()


def _rows(videos: np.ndarray, table) -> list:
    return sorted(zip(videos.tolist(), table.frame.tolist(), table.label.tolist(), map(tuple, table.box.tolist())))


def test_person_boxes_like_a_detector(smoke):
    """Scores as strings sorted per image, >= 0.05; recall@0.5 of the GT boxes high but not perfect; the
    best detection's IoU near 0.8; 1-4 distractors a frame."""
    for profile in ("jhmdb_smoke", "ucf_smoke"):
        manifest = load_manifest(smoke[profile][0])
        raw = json.loads(Path(manifest["person_boxes"]).read_text())
        assert all(isinstance(d["score"], str) for d in raw)
        by_image = {}
        for d in raw:
            by_image.setdefault(d["image_id"], []).append(float(d["score"]))
        assert all(s == sorted(s, reverse=True) for s in by_image.values()) and min(map(min, by_image.values())) >= 0.05
        boxes = load_person_boxes(manifest["person_boxes"], manifest["annotations"]["gt_json"])
        gt = load_box_annotations(manifest["annotations"]["gt_json"]).gt
        best = []
        for (video, frame) in set(zip(gt.video.tolist(), gt.frame.tolist())):
            mine = (boxes.video == video) & (boxes.frame == frame)
            truth = gt.box[(gt.video == video) & (gt.frame == frame)]
            best += box_iou(truth, boxes.box[mine]).max(1, initial=0).tolist()
        best = np.array(best)
        assert 0.85 < (best >= 0.5).mean() < 0.995, profile
        assert 0.72 < np.median(best) < 0.88, profile
        per_image = np.array([len(s) for s in by_image.values()])
        assert 1 <= per_image.min() and per_image.max() <= 4 + 4 + 2  # a missed actor leaves distractors only


def test_ucf_shape_through_the_real_readers(smoke):
    root = smoke["ucf_smoke"][0]
    manifest, ann = _pkl(root)
    assert len(ann.labels) == 24 and all(name[0].isupper() and " " not in name for name in ann.labels)
    assert len(ann.splits) == 1 and len(ann.videos) == 48
    tubes = Counter(video for video, _ in set(zip(ann.gt.video.tolist(), ann.gt.person.tolist())))
    assert set(tubes.values()) <= {1, 2, 3, 4} and max(tubes.values()) > 1
    assert all(len(set(ann.gt.label[ann.gt.video == v].tolist())) == 1 for v in ann.videos)  # same-class tubes
    covered = sum(len(set(ann.gt.frame[ann.gt.video == v].tolist())) for v in ann.videos) / sum(ann.nframes.values())
    assert 0.75 < covered < 0.97  # the real UCF101-24 test split: 87%
    pyannot = load_box_annotations(manifest["annotations"]["pyannot"])
    assert len(pyannot.gt) == len(ann.gt) and set(pyannot.splits[0][1]) == set(ann.splits[0][1])
    video = ann.videos[0]
    features = _features(root, video)
    assert (features["frames"] == np.arange(1, ann.nframes[video] + 1, 4)).all()  # ucf_smoke: every 4th frame
    assert features["tokens"].shape == (len(features["frames"]), 16, 64)


def test_ava_shape_through_the_real_readers(smoke):
    root = smoke["ava_smoke"][0]
    manifest = load_manifest(root)
    files = manifest["annotations"]
    label_map = read_ava_label_map(files["label_map"])
    assert len(label_map.names) == 80 and list(label_map.names) == list(range(1, 81))
    assert Counter(label_map.label_types.values()) == {"PERSON_MOVEMENT": 14, "OBJECT_MANIPULATION": 49, "PERSON_INTERACTION": 17}
    sixty = read_ava_label_map(files["label_map_60"])
    assert len(sixty.names) == 60 and set(sixty.names.items()) <= set(label_map.names.items())
    excluded = read_ava_exclusions(files["excluded"])
    empty = 0
    for subset in ("train", "val"):
        ann = load_box_annotations(files[f"{subset}_csv"], labels=files["label_map"])
        assert ann.format == "ava_csv" and len(ann.labels) == 80
        keys = set(zip(ann.keyframes.video.tolist(), ann.keyframes.frame.tolist()))
        assert min(ann.keyframes.frame) == 902 and not keys & excluded
        with_boxes = set(zip(ann.gt.video.tolist(), ann.gt.frame.tolist()))
        empty += len(keys - with_boxes)  # annotated empty keyframes (2-column rows)
        people = set(zip(ann.gt.video.tolist(), ann.gt.frame.tolist(), ann.gt.person.tolist()))
        assert set(Counter((v, f) for v, f, _ in people).values()) <= set(range(2, 7))  # persons a keyframe
        kinds = Counter()
        for key in people:
            rows = (ann.gt.video == key[0]) & (ann.gt.frame == key[1]) & (ann.gt.person == key[2])
            types = [ann.label_types[name] for name in ann.gt.label[rows]]
            assert types.count("PERSON_MOVEMENT") == 1 and len(types) <= 4
            kinds[len(types)] += 1
        assert set(kinds) == {1, 2, 3, 4}
        assert np.all(ann.gt.box == ann.gt.box.round(3)) and ann.gt.box.max() <= 1
    assert empty and excluded and {v for v, _ in excluded} <= set(load_box_annotations(files["val_csv"]).keyframes.video.tolist())
    rows = [line.split(",") for line in Path(manifest["person_boxes"]).read_text().splitlines()]
    assert all(len(r) == 8 and r[6] == "" and 0.05 <= float(r[7]) <= 1 for r in rows)
    video = sorted({r[0] for r in rows})[0]
    features = _features(root, video)
    assert (features["frames"] == 902 + np.arange(40)).all() and features["tokens"].shape == (40, 16, 64)


def test_roi_pool_weights_cells_by_covered_area():
    tokens = np.arange(16, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # cell k holds k
    assert roi_pool(tokens, np.array([0, 0, 80, 60]), (240, 320), 4).tolist() == [0, 0, 0]  # exactly cell 0
    assert roi_pool(tokens, np.array([40, 0, 120, 60]), (240, 320), 4)[0] == pytest.approx(0.5)  # half of cells 0 and 1
    assert roi_pool(tokens, np.array([0.5, 0.5, 0.5, 0.5]), (1, 1), 4)[0] == 10  # a point: the cell under it
    weights = roi_weights(np.array([[0, 0, 320, 240], [0, 0, 160, 120]]), (240, 320), (4, 4))
    assert np.allclose(weights.sum(1), 1) and np.allclose(weights[0], 1 / 16) and np.allclose(weights[1][[0, 1, 4, 5]], 0.25)
    per_frame = roi_pool(np.stack([tokens, tokens + 1]), np.array([[0, 0, 80, 60], [0, 0, 80, 60]]), (240, 320), 4)
    assert per_frame[:, 0].tolist() == [0, 1]


def _ridge(x: np.ndarray, y: np.ndarray, lam: float = 1.0) -> np.ndarray:
    x = np.column_stack([x, np.ones(len(x))])
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def _scores(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.column_stack([x, np.ones(len(x))]) @ w


def test_region_features_carry_the_class_only_on_the_actor(smoke):
    """A least-squares map from region features to classes, fitted on the training videos' GT boxes, puts a
    test region pooled from the GT box closer (cosine) to its class direction than one pooled from a loose
    box around the actor (the detector's second boxes, IoU 0.2-0.5), and those closer than one pooled from a
    distractor box elsewhere (IoU < 0.1). On a 4 x 4 grid, boxes of IoU >= 0.5 pool almost the same cells."""
    root = smoke["jhmdb_smoke"][0]
    manifest, ann = _pkl(root)
    boxes = load_person_boxes(manifest["person_boxes"], manifest["annotations"]["gt_json"])
    train, test = ann.splits[0]
    index = {name: i for i, name in enumerate(ann.labels)}
    x, y = [], []
    for video in train:
        feats, rows = _features(root, video), ann.gt.video == video
        order = np.argsort(ann.gt.frame[rows])
        x.append(roi_pool(feats["tokens"], ann.gt.box[rows][order], (240, 320), 4))
        y += [index[label] for label in ann.gt.label[rows][order]]
    w = _ridge(np.concatenate(x), np.eye(len(ann.labels))[y])
    cosine = {"gt": [], "jittered": [], "distractor": []}
    for video in test:
        feats, rows = _features(root, video), ann.gt.video == video
        bare = video.split("/")[-1]
        label = index[ann.gt.label[rows][0]]
        for frame, box in zip(ann.gt.frame[rows], ann.gt.box[rows]):
            found = (boxes.video == bare) & (boxes.frame == frame)
            iou = box_iou(box, boxes.box[found])[0]
            tokens = feats["tokens"][frame - 1]
            picks = {"gt": [box], "jittered": boxes.box[found][(iou >= 0.2) & (iou < 0.5)],
                     "distractor": boxes.box[found][iou < 0.1]}
            for kind, chosen in picks.items():
                if len(chosen):
                    s = _scores(w, roi_pool(tokens, np.asarray(chosen), (240, 320), 4))
                    cosine[kind] += (s[:, label] / np.linalg.norm(s, axis=1)).tolist()
    mean = {kind: np.mean(v) for kind, v in cosine.items()}
    assert all(len(v) > 50 for v in cosine.values())
    assert mean["gt"] > mean["jittered"] + 0.04 and mean["jittered"] > mean["distractor"] + 0.1, mean


def test_global_feature_carries_context_beyond_the_box(smoke):
    """UCF-shaped: a nearest-class-mean classifier on video-mean global features, fitted on training videos,
    beats chance on test videos, and so does one on the global features of frames where nobody acts."""
    root = smoke["ucf_smoke"][0]
    _, ann = _pkl(root)
    train, test = ann.splits[0]
    label_of = {v: ann.gt.label[ann.gt.video == v][0] for v in ann.videos}

    def video_mean(video, where):
        feats = _features(root, video)
        acted = np.isin(feats["frames"], ann.gt.frame[ann.gt.video == video])
        g = feats["global"].astype(np.float32)[acted if where == "acted" else ~acted]
        return g.mean(0) / np.linalg.norm(g.mean(0)) if len(g) else None

    for where in ("acted", "idle"):
        means = {}
        for video in train:
            if (m := video_mean(video, "acted")) is not None:
                means.setdefault(label_of[video], []).append(m)
        names = sorted(means)
        centre = np.stack([np.mean(means[n], 0) for n in names])
        hits = [names[int(np.argmax(centre @ m))] == label_of[v] for v in test if (m := video_mean(v, where)) is not None]
        assert len(hits) >= 5 and np.mean(hits) > 3 / len(ann.labels), (where, np.mean(hits), len(hits))


def test_the_synth_command_writes_a_box_level_profile(tmp_path, capsys):
    from benchmark.cli import main

    assert main(["synth", "--out", str(tmp_path / "b"), "--profile", "jhmdb_smoke", "--seed", "3"]) == 0
    assert main(["dataset-info", "--annotations", str(tmp_path / "b" / "annotations" / "JHMDB-GT.pkl"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["format"] == "act_pkl" and info["subsets"]["all"]["videos"] == 42
    assert main(["synth", "--out", str(tmp_path / "c"), "--profile", "ava_smoke", "--videos", "3"]) == 2


def test_a_cross_dataset_pair_shares_the_visual_model_and_has_disjoint_classes(tmp_path):
    from benchmark.data.synthetic_stad import _class_phrases

    ucf_cfg, jhmdb_cfg = PROFILES["ucf_pair_smoke"], PROFILES["jhmdb_pair_smoke"]
    ucf_names, ucf_reserved, ucf_shared = _class_phrases(ucf_cfg, np.random.default_rng(0))
    jhmdb_names, jhmdb_reserved, jhmdb_shared = _class_phrases(jhmdb_cfg, np.random.default_rng(1))
    assert (len(ucf_names), len(jhmdb_names)) == (24, 21) and not set(ucf_names) & set(jhmdb_names)
    assert ucf_reserved == jhmdb_reserved == set(ucf_names) | set(jhmdb_names)
    # one visual encoder: the dataset-independent draws (A, R, motion phases) come from one stream of the seed
    assert np.array_equal(ucf_shared.standard_normal(5), jhmdb_shared.standard_normal(5))
    other_seed = _class_phrases(replace(ucf_cfg, seed=1), np.random.default_rng(0))
    assert other_seed[0] != ucf_names

    ucf = load_manifest(generate(tmp_path / "ucf", ucf_cfg))
    jhmdb = load_manifest(generate(tmp_path / "jhmdb", jhmdb_cfg))
    assert set(ucf["phrases"]) == set(ucf_names) and set(jhmdb["phrases"]) == set(jhmdb_names)
    assert jhmdb["captions"] is None
    with np.load(ucf["captions"]) as corpus:  # the alignment corpus names no class of either dataset
        captions = set(corpus["caption"].tolist())
    assert captions and not any(name in caption for caption in captions for name in ucf_reserved)
    with pytest.raises(Exception, match="do not fit"):
        _class_phrases(replace(jhmdb_cfg, pair=(30, 45)), np.random.default_rng(0))
