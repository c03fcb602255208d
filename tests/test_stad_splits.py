"""Named split families of the spatio-temporal track: ST-CLIP's lists, the paper's splits, OV-STAD's
cross-dataset split, and the nearest-seen-name audit."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import yaml

from benchmark.data.splits import (ClassSplit, cross_dataset_split, import_stclip_lists, nearest_seen, paper_splits,
                                   read_split, write_splits)

UCF = ["Basketball", "BasketballDunk", "Biking", "CliffDiving", "CricketBowling", "Diving", "Fencing",
       "FloorGymnastics", "GolfSwing", "HorseRiding", "IceDancing", "LongJump", "PoleVault", "RopeClimbing",
       "SalsaSpin", "SkateBoarding", "Skiing", "Skijet", "SoccerJuggling", "Surfing", "TennisSwing",
       "TrampolineJumping", "VolleyballSpiking", "WalkingWithDog"]


def reference(shared_data):
    return yaml.safe_load((shared_data / "paper_reference" / "st_clip_wacv2025.yaml").read_text())["splits"]


def test_paper_splits_of_zs_ucf_cover_every_class_once(shared_data, tmp_path):
    splits = paper_splits(reference(shared_data)["ZS-UCF"], "UCF101-24", UCF)
    assert [s.index for s in splits] == [1, 2, 3, 4] and all(len(s.seen) == 18 and len(s.unseen) == 6 for s in splits)
    assert sorted(c for s in splits for c in s.unseen) == sorted(UCF)
    assert splits[0].setting == "stclip" and splits[0].source.startswith("paper:")
    path = write_splits(splits[:1], tmp_path)[0]
    assert path.parent.name == "stclip" and read_split(path, UCF) == splits[0]


def test_paper_splits_name_an_unknown_class(shared_data):
    jhmdb = reference(shared_data)["ZS-JHMDB"]
    with pytest.raises(Exception, match=r"ZS-JHMDB split1: class 'clap' is not in the annotations"):
        paper_splits(jhmdb, "ZS-JHMDB", UCF)


def test_ava_splits_give_only_unseen_classes(shared_data):
    ava = reference(shared_data)["ZS-AVA"]
    names = sorted({c for entry in ava.values() for c in entry["unseen"]} | {f"other {i}" for i in range(50)})
    splits = paper_splits(ava, "AVA", names)
    assert [len(s.unseen) for s in splits] == [18, 12, 6] and all(len(s.seen) + len(s.unseen) == len(names) for s in splits)


def test_stclip_lists_are_validated_against_the_videos(shared_data, tmp_path):
    root = shared_data / "jhmdb" / "zs_splits"
    labels = sorted({line for p in root.glob("label_split_1/*_label.txt") for line in p.read_text().split()})
    videos = {}
    for p in root.glob("label_split_*/*_video.txt"):
        for video in p.read_text().split():
            videos.setdefault(video, None)
    # the class of a video is the label of its name's class part: J-HMDB names end with _<class>_<codes>
    classes = {v: next(c for c in sorted(labels, key=len, reverse=True) if f"_{c}_" in f"_{v}") for v in videos}
    splits = import_stclip_lists(root, "JHMDB-21", labels, classes)
    assert [(s.index, len(s.seen), len(s.unseen)) for s in splits] == [(1, 15, 6), (2, 15, 6), (3, 15, 6), (4, 15, 6)]
    assert splits[0].unseen == tuple(sorted(["clap", "sit", "wave", "throw", "pullup", "catch"]))
    bad = tmp_path / "label_split_1"
    bad.mkdir()
    for name in ("train_label.txt", "test_label.txt", "train_video.txt"):
        (bad / name).write_text((root / "label_split_1" / name).read_text())
    (bad / "test_video.txt").write_text("no_such_video\n")
    with pytest.raises(Exception, match=r"test_video.txt:1: video 'no_such_video' is not in the annotations"):
        import_stclip_lists(tmp_path, "JHMDB-21", labels, classes)
    (bad / "test_video.txt").write_text(next(v for v, c in classes.items() if c == "pick") + "\n")
    with pytest.raises(Exception, match=r"test_video.txt:1: .* is of class 'pick', not one of this list's"):
        import_stclip_lists(tmp_path, "JHMDB-21", labels, classes)


def test_cross_dataset_split_and_the_nearest_seen_audit():
    jhmdb = ["golf", "walk", "brush_hair"]
    split = cross_dataset_split("UCF101-24", UCF, "JHMDB-21", jhmdb)
    assert split.setting == "ovstad" and split.dataset == "UCF101-24+JHMDB-21" and split.unseen == tuple(sorted(jhmdb))
    with pytest.raises(Exception, match="share 1 class names, e.g. 'Biking'"):
        cross_dataset_split("UCF101-24", UCF, "other", ["Biking", "x"])

    def embed(names):  # a stand-in text tower: letter-trigram counts of the natural name
        from benchmark.text.prompts import natural_name

        out = np.zeros((len(names), 4096))
        for i, name in enumerate(names):
            text = f"  {natural_name(name)} "
            for k in range(len(text) - 2):
                out[i, zlib.crc32(text[k:k + 3].encode()) % 4096] += 1
        return out

    rows = nearest_seen(split, embed)
    assert rows[0][:2] == ("golf", "GolfSwing") and dict((u, s) for u, s, _ in rows)["walk"] == "WalkingWithDog"
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)


def test_a_family_split_keeps_its_setting_through_a_file(tmp_path):
    split = ClassSplit("d", 15 / 21, 2, ("a",), ("b",), "x", "generated", 0)
    assert split.setting == "train_1_test_1"
    assert read_split(write_splits([split], tmp_path)[0]) == split


def test_import_splits_command_writes_the_stclip_family_and_audits_it(shared_data, tmp_path, capsys):
    from benchmark.cli import main
    from benchmark.text.tiny import make_tiny_clip

    tower = make_tiny_clip(tmp_path / "clip", seed=0)
    argv = ["import-splits", "--annotations", str(shared_data / "jhmdb" / "JHMDB-GT.pkl"), "--family", "stclip",
            "--lists", str(shared_data / "jhmdb" / "zs_splits"), "--dataset", "JHMDB-21", "--out", str(tmp_path / "splits"),
            "--audit-model", tower.model, "--audit-pretrained", tower.pretrained]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "JHMDB-21 stclip: 4 valid splits (15 seen / 6 unseen)" in out
    assert out.count("the closest seen name of each unseen name") == 4 and all(name in out for name in ("pullup", "swing_baseball"))
    written = sorted((tmp_path / "splits" / "JHMDB-21" / "imported" / "stclip").glob("split_*.json"))
    assert [p.name for p in written] == ["split_1.json", "split_2.json", "split_3.json", "split_4.json"]
    assert read_split(written[0]).unseen == ("catch", "clap", "pullup", "sit", "throw", "wave")
