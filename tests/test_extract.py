"""``extract-features`` on small generated videos (no real videos or weights here)."""
from __future__ import annotations

import json

import numpy as np
import pytest

av = pytest.importorskip("av")

from benchmark.data.extract import Options, Sampling, extract, read_frames  # noqa: E402
from benchmark.data.features import open_feature_store  # noqa: E402
from benchmark.text.tiny import make_tiny_clip  # noqa: E402

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]  # one second each


def write_video(path, seconds=4, rate=10, size=(64, 48), codec="mpeg4"):
    """``seconds`` seconds at ``rate`` frames/s, second s filled with COLOURS[s]."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for k in range(seconds * rate):
            image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            image[:] = COLOURS[(k // rate) % len(COLOURS)]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("suffix, codec", [(".mp4", "mpeg4"), (".avi", "mpeg4"), (".mkv", "mpeg4")])
def test_frames_are_rgb_at_the_sampled_times(tmp_path, suffix, codec):
    video = write_video(tmp_path / f"a{suffix}", codec=codec)
    frames, times = read_frames(video, Sampling(fps=2))
    assert frames.shape == (8, 48, 64, 3) and frames.dtype == np.uint8
    assert np.allclose(times, np.arange(8) * 0.5 + 0.2, atol=0.051)  # the frame on screen at 0.25, 0.75, ...: 0.2, 0.7, ...
    mean = frames.reshape(8, -1, 3).mean(axis=1)
    expected = np.repeat(np.array(COLOURS, dtype=float), 2, axis=0)
    assert np.abs(mean - expected).max() < 12  # red is red: channel 0 of an RGB frame
    bgr, _ = read_frames(video, Sampling(fps=2, channel_order="bgr"))
    assert np.array_equal(bgr, frames[..., ::-1])
    fixed, fixed_times = read_frames(video, Sampling(frames=3))
    assert len(fixed) == 3 and np.allclose(fixed_times, [0.6, 1.9, 3.2], atol=0.11)


def test_extract_end_to_end_isolates_bad_videos_and_resumes(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b"):
        write_video(videos / f"{name}.mp4")
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    tower = make_tiny_clip(tmp_path / "clip", seed=0)
    options = Options(tower.model, tower.pretrained, Sampling(fps=1), batch_size=3, workers=2)
    logged = []
    summary = extract(sorted(videos.iterdir()), tmp_path / "out", options, log=logged.append)
    assert summary["done"] == 2 and set(summary["failed"]) == {"v_empty", "v_corrupt"} and len(logged) == 2
    store = open_feature_store(tmp_path / "out")
    a = store.read("a")
    assert a.shape == (4, 64) and a.dtype == np.float32 and np.isfinite(a).all()
    assert not np.allclose(a[0], a[1])  # red and green seconds differ
    sidecar = json.loads((tmp_path / "out" / "extraction.json").read_text())
    assert sidecar["settings"]["sampling"] == {"fps": 1, "frames": None, "channel_order": "rgb"}
    assert sidecar["videos"]["v_a"]["frames"] == 4 and sidecar["settings"]["versions"]["av"]
    again = extract(sorted(videos.iterdir()), tmp_path / "out", options, log=logged.append)
    assert again["done"] == 0 and again["skipped"] == 2 and set(again["failed"]) == {"v_empty", "v_corrupt"}
    assert np.array_equal(open_feature_store(tmp_path / "out").read("a"), a)
    bgr = Options(tower.model, tower.pretrained, Sampling(fps=1, channel_order="bgr"))
    with pytest.raises(Exception, match="other settings"):
        extract(sorted(videos.iterdir()), tmp_path / "out", bgr)


def test_run_all_consumes_an_extracted_folder(tmp_path):
    """8 classes, 2 training + 1 validation video each (4 s, one colour a second): extracted at 2 frames/s with
    the tiny tower, then the smoke profile of zs_activitynet (one method, 75/25 split 0) reads the folder and its record."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    classes = [f"activity {c}" for c in "abcdefgh"]
    videos, database = tmp_path / "videos", {}
    videos.mkdir()
    for c, label in enumerate(classes):
        for k, subset in enumerate(("training", "training", "validation")):
            vid = f"vid{c}{k}"
            write_video(videos / f"{vid}.mp4", rate=5)
            database[vid] = {"subset": subset, "duration": 4.0, "url": "",
                             "annotations": [{"segment": [1.0 + 0.2 * k, 3.0], "label": label}]}
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps({"version": "test", "taxonomy": [], "database": database}))
    tower = make_tiny_clip(tmp_path / "clip", seed=0)
    summary = extract(sorted(videos.iterdir()), tmp_path / "features", Options(tower.model, tower.pretrained, Sampling(fps=2)))
    assert summary["done"] == 24 and not summary["failed"]
    done = subprocess.run([sys.executable, str(root / "run_all.py"), "--suite", "zs_activitynet", "--profile", "smoke",
                           "--annotations", str(annotations), "--features", str(tmp_path / "features"),
                           "--clip-model", tower.model, "--clip-pretrained", tower.pretrained, "--only", "clip_training_free/*/75/25/*",
                           "--workers", "2", "--results-dir", str(tmp_path / "results"),
                           "--reports-dir", str(tmp_path / "reports")], capture_output=True, text=True, timeout=900, cwd=root)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "zs_activitynet").glob("*/record.json")]
    assert records and all(r["status"] == "ok" for r in records)
    assert all("features extracted by extract-features: " in " ".join(r["extra"]["notes"]) and "2 frames/s, RGB"
               in " ".join(r["extra"]["notes"]) for r in records)


def test_the_command_reports_failures_in_its_exit_code(tmp_path, capsys):
    from benchmark.cli import main

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "good.mp4", seconds=2)
    (videos / "bad.mp4").write_bytes(b"not a video")
    tower = make_tiny_clip(tmp_path / "clip", seed=0)
    argv = ["extract-features", "--videos", str(videos), "--out", str(tmp_path / "out"), "--frames", "3",
            "--model", tower.model, "--pretrained", tower.pretrained, "--prefix", ""]
    assert main(argv) == 1
    out = capsys.readouterr()
    assert "1 extracted, 0 already done, 1 failed (bad)" in out.out and "bad.mp4" in out.out + out.err
    assert open_feature_store(tmp_path / "out").read("good").shape == (3, 64)
    (videos / "bad.mp4").unlink()
    assert main(argv) == 0 and "0 extracted, 1 already done, 0 failed" in capsys.readouterr().out


def test_one_process_per_device_gives_the_same_features(tmp_path):
    """Two CPU "devices" stand for two GPUs: the same outputs, sidecar and failures as one process."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name, seconds in (("a", 2), ("b", 3), ("c", 4)):
        write_video(videos / f"{name}.mp4", seconds=seconds)
    (videos / "bad.mp4").write_bytes(b"not a video")
    tower = make_tiny_clip(tmp_path / "clip", seed=0)
    one = Options(tower.model, tower.pretrained, Sampling(fps=2), fmt="h5")
    two = Options(tower.model, tower.pretrained, Sampling(fps=2), fmt="h5", device="cpu,cpu")
    first = extract(sorted(videos.iterdir()), tmp_path / "one", one, log=lambda _: None)
    second = extract(sorted(videos.iterdir()), tmp_path / "two", two, log=lambda _: None)
    assert first["done"] == second["done"] == 3 and set(first["failed"]) == set(second["failed"]) == {"v_bad"}
    a, b = open_feature_store(tmp_path / "one" / "features.h5"), open_feature_store(tmp_path / "two" / "features.h5")
    for name in "abc":
        assert np.allclose(a.read(name), b.read(name), atol=1e-6) and len(a.read(name)) == {"a": 4, "b": 6, "c": 8}[name]
    sidecars = [json.loads((tmp_path / d / "extraction.json").read_text())["videos"] for d in ("one", "two")]
    assert sidecars[0] == sidecars[1]


def test_a_device_process_that_cannot_start_is_named(tmp_path):
    write_video(tmp_path / "a.mp4", seconds=1)
    write_video(tmp_path / "b.mp4", seconds=1)
    tower = make_tiny_clip(tmp_path / "clip", seed=0)
    options = Options(tower.model, str(tmp_path / "missing.pt"), Sampling(fps=1), device="cpu,cpu")
    with pytest.raises(Exception, match=r"extract-features on cpu: .*missing\.pt"):
        extract([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "out", options)
    assert not list((tmp_path / "out").glob("*.npy"))


def test_a_device_process_that_dies_fails_only_its_unfinished_videos(tmp_path):
    """b.mp4 is a named pipe nobody writes to, so the second process hangs opening it; once a.mp4 is written,
    the test kills both processes. a.mp4 stays extracted, b.mp4 is reported failed, naming the device."""
    import multiprocessing
    import os
    import signal
    import threading
    import time

    write_video(tmp_path / "a.mp4", seconds=1)
    os.mkfifo(tmp_path / "b.mp4")
    tower = make_tiny_clip(tmp_path / "clip", seed=0)

    def kill_when_a_is_written():
        deadline = time.monotonic() + 120
        while not (tmp_path / "out" / "v_a.npy").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_a_is_written, daemon=True)
    killer.start()
    options = Options(tower.model, tower.pretrained, Sampling(fps=1), device="cpu,cpu")

    def hung(*_):
        raise AssertionError("extract did not notice the dead process")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(240)
    try:
        summary = extract([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "out", options, log=lambda _: None)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    killer.join()
    assert summary["done"] == 1 and summary["failed"] == {"v_b": "the process on cpu died (exit code -9)"}
    assert open_feature_store(tmp_path / "out").read("a").shape == (1, 64)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_match_cpu_within_bf16(tmp_path):
    """On a GPU machine: bf16 autocast on CUDA gives the CPU float32 features up to bf16 rounding."""
    write_video(tmp_path / "a.mp4", seconds=3)
    tower = make_tiny_clip(tmp_path / "clip", seed=0)
    features = {}
    for device in ("cpu", "cuda"):
        options = Options(tower.model, tower.pretrained, Sampling(fps=2), device=device, normalise=True)
        extract([tmp_path / "a.mp4"], tmp_path / device, options)
        features[device] = open_feature_store(tmp_path / device).read("a")
    cosine = (features["cpu"] * features["cuda"]).sum(axis=1)
    assert features["cuda"].dtype == np.float32 and cosine.min() > 0.99
