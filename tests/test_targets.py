import warnings

import numpy as np
import pytest

from benchmark.data.annotations import Instance, Video, load_annotations
from benchmark.data.targets import TargetError, instance_snippets, snippet_targets

CLASSES = {"jump": 0, "run": 1, "swim": 2}  # K = 3, background = 3


def video(*instances, duration=10.0, vid="v"):
    return Video(vid, "training", duration, None, tuple(Instance(s, e, lab) for s, e, lab in instances))


def block(T, lo, hi):
    m = np.zeros(T, np.uint8)
    m[lo:hi] = 1
    return m


def test_one_instance_by_snippet_centres():
    # duration 10 s, T = 10: snippet i covers [i, i+1) s, centre i + 0.5; [2.4, 5.6) holds centres 2.5..5.5
    t = snippet_targets([video((2.4, 5.6, "run"))], CLASSES, 10)
    np.testing.assert_array_equal(t.cls[0], [3, 3, 1, 1, 1, 1, 3, 3, 3, 3])
    np.testing.assert_array_equal(t.fg[0], [0, 0, 1, 1, 1, 1, 0, 0, 0, 0])
    assert t.cls.dtype == np.int64 and t.fg.dtype == np.float32 and t.masks.dtype == np.uint8
    for row in range(10):
        np.testing.assert_array_equal(t.masks[0, row], block(10, 2, 6) if 2 <= row < 6 else 0)
    assert t.num_classes == 3 and t.video_ids == ("v",)


def test_segment_end_is_exclusive_at_a_centre():
    assert instance_snippets(2.5, 4.5, 10.0, 10) == (2, 4)  # centre 4.5 not inside [2.5, 4.5)


def test_seconds_scale_with_duration():
    # duration 50 s, T = 5: snippets are 10 s; [10, 30) covers snippets 1 and 2
    t = snippet_targets([video((10.0, 30.0, "jump"), duration=50.0)], CLASSES, 5)
    np.testing.assert_array_equal(t.cls[0], [3, 0, 0, 3, 3])


@pytest.mark.parametrize("start,end,snippet", [
    (3.1, 3.3, 3),  # shorter than a snippet, between two centres
    (7.0, 7.0, 7),  # zero length
    (9.95, 10.0, 9),  # at the very end
    (12.0, 15.0, 9),  # entirely past the duration: clipped to the last snippet
])
def test_every_instance_marks_at_least_one_snippet(start, end, snippet):
    t = snippet_targets([video((start, end, "swim"))], CLASSES, 10)
    np.testing.assert_array_equal(t.fg[0], block(10, snippet, snippet + 1))
    assert t.cls[0, snippet] == 2
    np.testing.assert_array_equal(t.masks[0, snippet], block(10, snippet, snippet + 1))


def test_segment_beyond_duration_is_clipped():
    t = snippet_targets([video((7.2, 14.0, "jump"))], CLASSES, 10)
    np.testing.assert_array_equal(t.fg[0], block(10, 7, 10))


def test_overlap_shorter_instance_wins_and_masks_stay_per_instance():
    # long "run" covers snippets 1..8, short "jump" covers 4..5 inside it
    t = snippet_targets([video((1.0, 9.0, "run"), (4.0, 6.0, "jump"))], CLASSES, 10)
    np.testing.assert_array_equal(t.cls[0], [3, 1, 1, 1, 0, 0, 1, 1, 1, 3])
    np.testing.assert_array_equal(t.fg[0], [0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    for row in (1, 2, 3, 6, 7, 8):
        np.testing.assert_array_equal(t.masks[0, row], block(10, 1, 9))  # the long instance's whole mask
    for row in (4, 5):
        np.testing.assert_array_equal(t.masks[0, row], block(10, 4, 6))
    assert not t.masks[0, [0, 9]].any()
    # the listed order does not matter
    swapped = snippet_targets([video((4.0, 6.0, "jump"), (1.0, 9.0, "run"))], CLASSES, 10)
    np.testing.assert_array_equal(swapped.cls, t.cls)
    np.testing.assert_array_equal(swapped.masks, t.masks)


def test_partial_overlap_and_equal_length_tie_goes_to_the_first_listed():
    # [2, 6) "swim" and [4, 8) "jump": same length; snippets 4, 5 go to the first listed
    t = snippet_targets([video((2.0, 6.0, "swim"), (4.0, 8.0, "jump"))], CLASSES, 10)
    np.testing.assert_array_equal(t.cls[0], [3, 3, 2, 2, 2, 2, 0, 0, 3, 3])
    np.testing.assert_array_equal(t.masks[0, 5], block(10, 2, 6))
    np.testing.assert_array_equal(t.masks[0, 6], block(10, 4, 8))
    t2 = snippet_targets([video((4.0, 8.0, "jump"), (2.0, 6.0, "swim"))], CLASSES, 10)
    np.testing.assert_array_equal(t2.cls[0], [3, 3, 2, 2, 0, 0, 0, 0, 3, 3])


def test_several_videos_and_an_empty_one():
    vids = [video((0.0, 10.0, "jump"), vid="a"), video(vid="b"), video((0.0, 1.0, "run"), duration=2.0, vid="c")]
    t = snippet_targets(vids, CLASSES, 4)
    assert t.cls.shape == (3, 4) and t.masks.shape == (3, 4, 4) and len(t) == 3
    np.testing.assert_array_equal(t.cls, [[0, 0, 0, 0], [3, 3, 3, 3], [1, 1, 3, 3]])
    np.testing.assert_array_equal(t.masks[0], np.ones((4, 4)))
    assert not t.masks[1].any()


def test_unknown_label_names_video_and_label():
    with pytest.raises(TargetError, match=r"video v7: label 'fly' is not in the class index") as info:
        snippet_targets([video((1.0, 2.0, "fly"), vid="v7")], CLASSES, 10)
    assert "\n" not in str(info.value)


def test_missing_duration_names_the_video():
    with pytest.raises(TargetError, match="video x1: duration is None"):
        snippet_targets([video((1.0, 2.0, "run"), duration=None, vid="x1")], CLASSES, 10)


def test_class_index_must_be_dense():
    with pytest.raises(TargetError, match="0..1"):
        snippet_targets([], {"a": 0, "b": 2}, 10)


def test_real_activitynet_validation_targets_are_consistent(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader's counted warnings are tested with the reader
        anno = load_annotations(shared_data / "activitynet" / "activity_net.v1-3.reconstructed.json")
    videos = [v for v in anno.subset("validation") if v.duration is not None]
    t = snippet_targets(videos, {c: i for i, c in enumerate(anno.classes)}, 100)
    assert t.cls.shape == (len(videos), 100) and t.masks.shape == (len(videos), 100, 100)
    for n, v in enumerate(videos):
        for inst in v.instances:  # every instance is foreground somewhere
            lo, hi = instance_snippets(inst.start, inst.end, v.duration, 100)
            assert t.fg[n, lo:hi].all(), (v.id, inst)
    diag = np.diagonal(t.masks, axis1=1, axis2=2)
    np.testing.assert_array_equal(diag, t.fg)  # an action snippet lies in its own instance's mask
    assert not t.masks[t.fg == 0].any()  # background rows are zero
    np.testing.assert_array_equal(t.fg, t.cls != 200)
