"""Throughput of ``extract-features`` on this machine: decoding alone, and decoding + the image tower.

    python -m benchmark.perf.bench_extract [--seconds 15] [--size 320x240] [--rate 30] [--videos 2] [--fps 1]

Generated videos (PyAV, mpeg4, one colour a second) in a temporary folder. Printed, one run: frames
decoded per second (every frame of the video is decoded; sampled frames are what the model sees),
then sampled frames per second through decode + preprocessing + model, on CPU, with the tiny stand-in
tower and with a ViT-B/16-sized tower of random weights (saved to a temporary checkpoint: same
architecture and cost as the released one), and the process's peak resident memory.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def write_video(path: Path, seconds: int, rate: int, size: tuple[int, int]) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        colours = np.random.default_rng(0).integers(0, 256, (seconds, 3))
        for k in range(seconds * rate):
            image = np.empty((size[1], size[0], 3), dtype=np.uint8)
            image[:] = colours[k // rate]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main(argv=None) -> None:
    import open_clip
    import torch

    from benchmark.data.extract import Options, Sampling, extract, read_frames
    from benchmark.text.tiny import make_tiny_clip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--rate", type=int, default=30, help="frames per second of the generated videos")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--fps", type=float, default=1.0, help="sampled frames per second of video")
    args = parser.parse_args(argv)
    size = tuple(int(x) for x in args.size.split("x"))
    torch.set_num_threads(max(1, torch.get_num_threads()))

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        videos = [write_video(root / f"video{k}.mp4", args.seconds, args.rate, size) for k in range(args.videos)]
        total = args.videos * args.seconds * args.rate
        print(f"case: {args.videos} videos x {args.seconds} s, {size[0]}x{size[1]} at {args.rate} frames/s (mpeg4), "
              f"sampled at {args.fps:g} frames/s; {torch.get_num_threads()} torch threads")
        start = time.perf_counter()
        sampled = sum(len(read_frames(v, Sampling(fps=args.fps))[0]) for v in videos)
        seconds = time.perf_counter() - start
        print(f"decoding alone: {total / seconds:.0f} frames decoded/s ({sampled / seconds:.1f} sampled frames/s)")

        tiny = make_tiny_clip(root / "tiny", seed=0)
        vit = root / "vit_b_16_random.pt"
        torch.save(open_clip.create_model("ViT-B-16").state_dict(), vit)
        for name, model, weights in (("tiny tower", tiny.model, tiny.pretrained), ("ViT-B/16-sized tower", "ViT-B-16", str(vit))):
            options = Options(model, weights, Sampling(fps=args.fps), batch_size=32, workers=2)
            start = time.perf_counter()
            summary = extract(videos, root / f"out_{name.split()[0]}", options, log=lambda line: None)
            seconds = time.perf_counter() - start
            print(f"decode + model, {name}: {sampled / seconds:.1f} sampled frames/s ({summary['done']} videos, {seconds:.1f} s "
                  f"including the model's loading)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
