"""CLIP image features from raw videos: ``python -m benchmark extract-features``.

Per video: frames sampled at a fixed rate (``fps``: frame k shows time (k + 0.5) / fps, k < duration ·
fps) or a fixed count (``frames``: N times evenly spread the same way), each the frame on screen at
that time; converted to RGB (``channel_order="bgr"`` only reproduces features made with the OpenCV
BGR bug of the reference CLIP extractor of this line of work, where frames reach CLIP with red and
blue swapped); preprocessed by the open_clip model's own evaluation transform (resize, centre crop,
normalisation); encoded by the image tower in batches (bf16 autocast on CUDA); optionally
L2-normalised. Output ``[T_raw, D]`` float32 per video, as ``<prefix><id>.npy`` files or datasets of one
HDF5 file: the layouts :mod:`benchmark.data.features` reads. ``extraction.json`` beside them records
the model, weights, sampling, channel order, library versions and each video's frame times.

Decoding: PyAV. Its wheels bundle FFmpeg, so it installs here and anywhere without a system FFmpeg
(torchcodec needs the system's FFmpeg libraries; decord's last release is from 2021). Frames are
decoded sequentially, not by seeking: a frame "at time t" is then exactly the one displayed at t,
whatever the container's keyframe index says, at the cost of decoding every frame. Decoding runs in a
thread pool (FFmpeg releases the GIL) up to 2 × workers videos ahead of the model, so the model does
not wait on the decoder and memory stays bounded. Several devices (``cuda:0,cuda:1``): one process per
device, each with its own decoding threads, taking every n-th video; the parent process alone writes the
outputs and the sidecar, so there is one writer whatever the format.

Resume: a video whose output exists is skipped (outputs are written to a temporary name and renamed,
so a half-written file never counts). A video that cannot be decoded is logged with its reason; the
others continue, and the run ends with a summary and exit code 1.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from benchmark.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
SIDECAR = "extraction.json"


class ExtractionError(InputError):
    """Bad extraction arguments (not a bad video: those are isolated and reported)."""


@dataclass(frozen=True)
class Sampling:
    fps: float | None = None  # frames per second of video
    frames: int | None = None  # or a fixed number of frames per video
    channel_order: str = "rgb"  # "bgr": reproduce the OpenCV BGR bug, nothing else

    def __post_init__(self):
        if (self.fps is None) == (self.frames is None):
            raise ExtractionError("give exactly one of --fps and --frames")
        if (self.fps is not None and not self.fps > 0) or (self.frames is not None and self.frames < 1):
            raise ExtractionError(f"--fps must be > 0 and --frames >= 1, got {self.fps or self.frames}")
        if self.channel_order not in ("rgb", "bgr"):
            raise ExtractionError(f"--channel-order must be rgb or bgr, got {self.channel_order!r}")

    def times(self, duration: float) -> np.ndarray:
        """The sampled times (seconds) of a video of ``duration`` seconds; at least one."""
        n = self.frames if self.frames is not None else max(1, int(np.floor(duration * self.fps + 1e-9)))
        step = duration / n if self.frames is not None else 1.0 / self.fps
        return (np.arange(n) + 0.5) * step


def read_frames(path: Path, sampling: Sampling) -> tuple[np.ndarray, np.ndarray]:
    """([N, H, W, 3] uint8 frames in ``sampling.channel_order``, [N] the times of the frames taken)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        duration = _duration(container, stream)
        targets = sampling.times(duration)
        frames, times, previous, k = [], [], None, 0
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else float(frame.time)
            while k < len(targets) and targets[k] < t and previous is not None:  # `previous` is on screen then
                frames.append(previous[0]), times.append(previous[1])
                k += 1
            if k == len(targets):
                break
            previous = (frame.to_ndarray(format="rgb24"), t)
        while k < len(targets) and previous is not None:  # after the last frame: the last frame
            frames.append(previous[0]), times.append(previous[1])
            k += 1
    if not frames:
        raise ValueError("no decodable frame")
    out = np.stack(frames)
    return (out[..., ::-1].copy() if sampling.channel_order == "bgr" else out), np.array(times)


def _duration(container, stream) -> float:
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    raise ValueError("the container gives no duration")


@dataclass(frozen=True)
class Options:
    model: str = "ViT-B-16"
    pretrained: str = "openai"
    sampling: Sampling = Sampling(fps=1.0)
    fmt: str = "npy"  # npy | h5
    prefix: str = "v_"  # output name = prefix + video id (the file stem, without an existing prefix)
    normalise: bool = False  # L2-normalise each frame's feature
    device: str = "cpu"  # or several, comma-separated: one process each
    batch_size: int = 64
    workers: int = 2  # decoding threads


def video_list(source: Path) -> list[Path]:
    """The videos of a folder (by suffix), or of a text file listing one path per line."""
    if source.is_dir():
        videos = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    elif source.is_file():
        lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
        videos = [Path(line) if Path(line).is_absolute() else source.parent / line for line in lines]
    else:
        raise ExtractionError(f"{source}: no such folder or list of videos")
    if not videos:
        raise ExtractionError(f"{source}: no videos ({', '.join(VIDEO_SUFFIXES)})")
    return videos


def output_name(video: Path, prefix: str) -> str:
    stem = video.stem
    return stem if stem.startswith(prefix) else prefix + stem


def extract(videos: list[Path], out: Path, options: Options, log=print) -> dict:
    """Extract every video not done yet; returns the summary (done, skipped, failed: {name: reason}).

    ``options.device`` may list several devices (``cuda:0,cuda:1``): one process per device then takes
    every n-th video, and this process alone writes the outputs and ``extraction.json``."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    sidecar = _read_sidecar(out, options)
    done = set(sidecar["videos"]) if options.fmt == "h5" else {p.stem for p in out.glob("*.npy")}
    todo = [v for v in videos if output_name(v, options.prefix) not in done]
    summary = {"done": 0, "skipped": len(videos) - len(todo), "failed": {}}
    if not todo:
        return summary
    devices = [d.strip() for d in options.device.split(",") if d.strip()]
    encoded = encode_videos(todo, options) if len(devices) == 1 else _from_devices(todo, options, devices)
    start = time.perf_counter()
    for video, result in tqdm(encoded, total=len(todo), unit="video"):
        name = output_name(video, options.prefix)
        if isinstance(result, str):
            summary["failed"][name] = result
            log(f"failed: {video}: {result}")
            continue
        features, times = result
        _write(out, name, features, options.fmt)
        sidecar["videos"][name] = {"frames": len(times), "times": [round(float(t), 6) for t in times]}
        _write_sidecar(out, sidecar)
        summary["done"] += 1
    summary["seconds"] = time.perf_counter() - start
    return summary


def encode_videos(videos: list[Path], options: Options):
    """(video, ([T, D] float32 features, [T] times) or the reason it failed), in order, on ``options.device``."""
    import torch
    from PIL import Image

    from benchmark.text.clip import load_clip

    model, preprocess, _ = load_clip(options.model, options.pretrained, options.device)
    model.eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if options.device.startswith("cuda") else _null()

    def decode(video: Path):
        try:
            return read_frames(video, options.sampling)
        except Exception as e:  # a corrupt or unreadable video: isolated, reported
            return f"{type(e).__name__}: {' '.join(str(e).split()) or 'unreadable'}"

    with ThreadPoolExecutor(max(1, options.workers)) as pool:
        for video, decoded in _ahead(pool, decode, videos, 2 * max(1, options.workers)):
            if isinstance(decoded, str):
                yield video, decoded
                continue
            frames, times = decoded
            pixels = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
            chunks = []
            with torch.no_grad(), autocast:
                for batch in pixels.split(options.batch_size):
                    chunks.append(model.encode_image(batch.to(options.device)).float())
            features = torch.cat(chunks)
            if options.normalise:
                features = torch.nn.functional.normalize(features, dim=-1)
            yield video, (features.cpu().numpy().astype(np.float32), times)


def _device_worker(index: int, videos: list[Path], options: Options, queue, threads: int) -> None:
    """One device's process: its videos' results on ``queue`` as (index, video, result), then (index, None, None);
    (index, None, reason) if it cannot go on (e.g. the model does not load)."""
    try:
        if not options.device.startswith("cuda"):
            import torch

            torch.set_num_threads(threads)  # CPU processes share the cores
        for video, result in encode_videos(videos, options):
            queue.put((index, str(video), result))
    except Exception as e:
        queue.put((index, None, f"{type(e).__name__}: {e}"))
        return
    queue.put((index, None, None))


def _from_devices(videos: list[Path], options: Options, devices: list[str]):
    """encode_videos over one process per device (video i on device i mod n), results as they come. A process
    that dies takes only its unfinished videos with it: they are reported failed, naming the device."""
    import multiprocessing
    from queue import Empty

    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    queue = context.Queue(maxsize=4 * len(devices))
    left = {i: deque(videos[i::len(devices)]) for i in range(len(devices))}
    processes = [context.Process(target=_device_worker, daemon=True,
                                 args=(i, list(left[i]), replace(options, device=device), queue,
                                       max(1, (os.cpu_count() or 1) // len(devices))))
                 for i, device in enumerate(devices)]
    for p in processes:
        p.start()
    running = set(left)
    try:
        while running:
            try:
                i, video, result = queue.get(timeout=2.0)
            except Empty:
                dead = [i for i in running if not processes[i].is_alive()]
                if dead and queue.empty():  # a process that exits has flushed its queue: nothing more will come
                    for i in dead:
                        running.discard(i)
                        reason = f"the process on {devices[i]} died (exit code {processes[i].exitcode})"
                        while left[i]:
                            yield left[i].popleft(), reason
                continue
            if video is None:
                running.discard(i)
                if result is not None:
                    raise ExtractionError(f"extract-features on {devices[i]}: {result}")
                continue
            yield left[i].popleft(), result
    finally:
        for p in processes:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()


def _ahead(pool: ThreadPoolExecutor, fn, items: list, depth: int):
    """(item, fn(item)) in order, with at most ``depth`` items being decoded ahead (memory stays bounded)."""
    pending: deque = deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) > depth:
            item_, future = pending.popleft()
            yield item_, future.result()
    while pending:
        item_, future = pending.popleft()
        yield item_, future.result()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _write(out: Path, name: str, features: np.ndarray, fmt: str) -> None:
    if fmt == "npy":
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, features)
        os.replace(tmp, out / f"{name}.npy")
        return
    import h5py

    with h5py.File(out / "features.h5", "a") as f:
        if name in f:
            del f[name]
        f.create_dataset(name, data=features)  # the sidecar lists it only after this returns


def _settings(options: Options) -> dict:
    versions = {}
    for package in ("open_clip_torch", "torch", "av", "pillow", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"model": options.model, "pretrained": options.pretrained, "sampling": asdict(options.sampling),
            "frame_time": "the frame on screen at (k + 0.5) / fps, or at (k + 0.5) * duration / frames",
            "normalise": options.normalise, "format": options.fmt, "prefix": options.prefix, "versions": versions}


def _read_sidecar(out: Path, options: Options) -> dict:
    """The folder's record; extracting into a folder made with other settings is refused (one line)."""
    path = out / SIDECAR
    settings = _settings(options)
    if not path.is_file():
        return {"settings": settings, "videos": {}}
    sidecar = json.loads(path.read_text())
    keys = ("model", "pretrained", "sampling", "normalise", "format", "prefix")
    changed = [k for k in keys if sidecar["settings"].get(k) != settings[k]]
    if changed:
        raise ExtractionError(f"{path}: the folder holds features made with other settings ({', '.join(changed)}); "
                              f"extract into another folder")
    return sidecar


def _write_sidecar(out: Path, sidecar: dict) -> None:
    tmp = out / f".{SIDECAR}.tmp"
    tmp.write_text(json.dumps(sidecar, indent=1))
    os.replace(tmp, out / SIDECAR)


def describe_extraction(features: str | Path) -> str | None:
    """One line on how a feature folder (or HDF5 file) was extracted, from its ``extraction.json``; None
    without one. The run records it in every job's notes."""
    features = Path(features)
    path = (features if features.is_dir() else features.parent) / SIDECAR
    if not path.is_file():
        return None
    try:
        s = json.loads(path.read_text())["settings"]
        sampling = s["sampling"]
        rate = f"{sampling['fps']:g} frames/s" if sampling.get("fps") else f"{sampling['frames']} frames a video"
        order = "RGB" if sampling["channel_order"] == "rgb" else "BGR (reproducing the OpenCV bug: red and blue swapped)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ExtractionError(f"{path}: unreadable extraction record ({type(e).__name__}: {e})") from None
    return (f"features extracted by extract-features: {s['model']} ({s['pretrained']}), {rate}, {order}"
            f"{', L2-normalised' if s.get('normalise') else ''}")
