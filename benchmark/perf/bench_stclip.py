"""Throughput of ST-CLIP reduced (``methods/stclip.py``) on one thread: a training step and a predicted frame.

    python -m benchmark.perf.bench_stclip [--profile jhmdb_smoke] [--steps 40] [--repeat 2] [--module FILE]

On the generated J-HMDB-shaped benchmark (``ensure_synthetic_stad(.cache/synthetic_stad, profile, seed=0)``,
the views of the method tests: generated 15/6 class split 0, official split 1), for the default config and for
``interest_tokens: 0.39`` (the AVA setting):

- ms per training step (gather + forward + backward + SGD, the real ``fit``): the CPU time of a fit of
  ``--steps`` more steps than a short one (both under rule ``epochs`` with ``iterations``, so no held-out
  evaluations), divided by ``--steps``; the setup they share (features, text, model) cancels;
- ms per predicted frame: the CPU time of ``predict`` on the test view with GT boxes (one box a person)
  and with the top-3 detected boxes a frame, divided by its frames (the whole call: frames, text, model).

Times are the process's CPU time (robust to other jobs on the machine), the best of ``--repeat`` runs, on one
torch thread as the method runs. ``--module FILE`` times another copy of the module instead (e.g.
``git show HEAD:methods/stclip.py > /tmp/stclip_old.py``), for before / after figures.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import torch

CACHE = Path(".cache")
CONFIGS = {"default": {}, "interest_tokens=0.39": {"interest_tokens": 0.39}}


def load_module(path: str | None):
    """methods.stclip, or the file at ``path`` in its place (imported under the same name, before anything else
    imports it, so the method registry sees one class)."""
    if path:
        spec = importlib.util.spec_from_file_location("methods.stclip", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["methods.stclip"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("methods.stclip")


def views(profile: str) -> dict:
    """The training view and the two test views of tests/test_stad_methods_stclip.py."""
    from benchmark.data.box_views import box_test_view, box_train_view
    from benchmark.data.splits import generate_splits
    from benchmark.harness import stad
    from benchmark.harness.registry import MethodContext
    from benchmark.text.clip import TextEncoderConfig

    dataset = {"jhmdb": "jhmdb", "ucf": "ucf101_24"}[profile.split("_")[0]]
    facts = stad.dataset_facts(dataset, {"source": "synthetic", "synthetic": {"profile": profile, "seed": 0}})
    ann, detections, store = stad.open_data(facts)  # detections named by the annotations' video ids
    split = generate_splits(profile, ann.labels, 15 / 21, n=1)[0]
    train, test = ann.splits[0]
    context = MethodContext(text_encoder=TextEncoderConfig(**facts["text_encoder"]), cache_dir=CACHE / "text",
                            log=lambda line: None)
    return {"train": box_train_view(ann, split, train, features=store),
            "GT boxes": box_test_view(ann, split, test, features=store),
            "top-3 detected": box_test_view(ann, split, test, boxes=detections, rule="top3", features=store),
            "context": context}


def cpu_seconds(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def frames_of(view) -> int:
    return len(set(zip(view.boxes.video.tolist(), view.boxes.frame.tolist())))


def bench(module, data: dict, name: str, overrides: dict, steps: int, repeat: int) -> str:
    from benchmark.harness.registry import make_config

    def fitted(iterations: int):
        schedule = {"convergence": {"rule": "epochs"}, "iterations": iterations, "warmup_iters": 1}
        method = module.STClip(make_config("stclip", {**overrides, **schedule}), data["context"])
        method.fit(data["train"])
        return method

    short, long = 5, 5 + steps
    fitted(short)  # warm-up: features, text embeddings and kernels loaded once
    step_ms = 1000 * (cpu_seconds(lambda: fitted(long), repeat) - cpu_seconds(lambda: fitted(short), repeat)) / steps
    method = fitted(short)
    parts = [f"{name:22s} train {step_ms:6.1f} ms/step"]
    for view_name in ("GT boxes", "top-3 detected"):
        view = data[view_name]
        method.predict(view)  # warm-up
        seconds = cpu_seconds(lambda: method.predict(view), repeat)
        parts.append(f"predict ({view_name}, {frames_of(view)} frames, {len(view.boxes)} boxes) "
                     f"{1000 * seconds / frames_of(view):.2f} ms/frame")
    return "; ".join(parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="jhmdb_smoke", help="synthetic STAD profile (default: jhmdb_smoke)")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement; the fastest counts")
    parser.add_argument("--module", help="time this copy of methods/stclip.py instead of the package's")
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append", help="default: all")
    args = parser.parse_args(argv)
    module = load_module(args.module)
    data = views(args.profile)
    torch.manual_seed(0)
    print(f"{args.module or module.__file__} on {args.profile}, 1 thread (as fit / predict run), "
          f"load average {os.getloadavg()[0]:.1f} at start")
    for name in args.config or list(CONFIGS):
        print(bench(module, data, name, CONFIGS[name], args.steps, args.repeat), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
