"""STALE training throughput and peak memory: ``python -m benchmark.perf.bench_stale``.

Two settings, on random features of the real shape (no data, no weights, no download):
- ``synthetic``: the embedded default profile, 750 training videos, T=100, D=64, 75 seen classes,
  the tiny text tower, STALE's default config (and the same steps computing every mask row instead
  of a sample of ``mask_rows``); also the time of one whole fit + predict (250 test videos, 25 unseen
  classes; the fit runs the convergence rule, so its length depends on the random data);
- ``activitynet``: an ActivityNet-sized model, T=100, D=512, 150 seen classes, a ViT-B/16-sized
  text tower with random weights (``open_clip.create_model("ViT-B-16", pretrained=None)``), the
  paper's hyper-parameters (``recipe: paper``, ``Stale.PAPER["activitynet"]``).

Each setting runs in its own process, so peak memory (max RSS on CPU, max allocated on GPU) is its
own. Throughput = training videos per second over timed steps after warm-up steps.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import torch

SETTINGS = {
    "synthetic": {"train_videos": 750, "test_videos": 250, "T": 100, "D": 64, "seen": 75, "unseen": 25,
                  "tower": "tiny", "steps": 10},
    "activitynet": {"train_videos": 300, "test_videos": 0, "T": 100, "D": 512, "seen": 150, "unseen": 50,
                    "tower": "ViT-B-16", "steps": 3},
}


def tower_for(kind: str, device: str, directory: str):
    from benchmark.text.clip import ClipTextTower, load_text_tower
    from benchmark.text.tiny import make_tiny_clip

    if kind == "tiny":
        text_cfg = make_tiny_clip(directory)
        return load_text_tower(text_cfg, device), text_cfg
    import open_clip

    model = open_clip.create_model(kind, pretrained=None, device=device)  # random weights, no download
    return ClipTextTower(model, open_clip.get_tokenizer(kind)).eval(), None


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(setting: str, steps: int, warmup: int, device: str) -> dict:
    from benchmark.harness.registry import MethodContext, apply_hparams
    from benchmark.perf.bench_b2 import random_views
    from methods.modules.training import as_tensor, seed_everything
    from methods.stale import Stale, StaleConfig, build_model, make_optimizer, train_step

    spec = SETTINGS[setting]
    dev = torch.device(device)
    baseline = peak_memory_mb(dev)  # after the imports (torch + open_clip alone are several hundred MB of RSS)
    recipe = "default" if setting == "synthetic" else "paper"
    cfg = apply_hparams("stale", StaleConfig(), {"recipe": recipe}, "activitynet")
    train, test = random_views(*(spec[k] for k in ("train_videos", "test_videos", "seen", "unseen", "T", "D")))
    result = {"setting": setting, "device": device, "torch_threads": torch.get_num_threads(), **spec,
              "batch_size": cfg.batch_size, "config": "default" if setting == "synthetic" else "PAPER['activitynet']"}
    with tempfile.TemporaryDirectory() as tmp:
        seed_everything(0)
        tower, text_cfg = tower_for(spec["tower"], device, tmp)
        model = build_model(cfg, tower, train.classes, spec["D"])
        optimizer = make_optimizer(cfg, model)
        model.train()
        x = as_tensor(train.features, dev)
        cls = as_tensor(train.targets.cls, dev, torch.long)
        fg = as_tensor(train.targets.fg, dev)
        masks = as_tensor(train.targets.masks, dev, torch.uint8)
        generator = torch.Generator().manual_seed(0)
        batches = [torch.randperm(len(x), generator=generator)[:cfg.batch_size] for _ in range(warmup + steps)]
        for i, idx in enumerate(batches):
            if i == warmup:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            train_step(cfg, model, optimizer, x[idx], cls[idx], fg[idx], masks[idx])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        result.update(train_videos_per_s=round(steps * cfg.batch_size / elapsed, 1), step_s=round(elapsed / steps, 3),
                      params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))
        if cfg.mask_rows:  # the same steps computing every mask row (training samples mask_rows of T)
            every = replace(cfg, mask_rows=0)
            start = time.perf_counter()
            for idx in batches[warmup:]:
                train_step(every, model, optimizer, x[idx], cls[idx], fg[idx], masks[idx])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            result["step_s_all_mask_rows"] = round((time.perf_counter() - start) / steps, 3)
        if text_cfg is not None:  # one whole job with the default config, as the suite runs it
            context = MethodContext(device=device, seed=0, text_encoder=text_cfg,
                                    log=lambda line: None)
            method = Stale(cfg, context)
            start, cpu = time.perf_counter(), time.process_time()
            method.fit(train)
            fitted, fitted_cpu = time.perf_counter(), time.process_time()
            method.predict(test)
            result.update(fit_s=round(fitted - start, 2), predict_s=round(time.perf_counter() - fitted, 2),
                          fit_predict_cpu_s=round(time.process_time() - cpu, 2), fit_cpu_s=round(fitted_cpu - cpu, 2))
    result.update(peak_memory_mb=round(peak_memory_mb(dev), 1), memory_after_imports_mb=round(baseline, 1))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), action="append", help="default: all")
    parser.add_argument("--steps", type=int, help="timed training steps (default: 10 synthetic, 3 activitynet)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the suite runs one job per core)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:  # one setting, in this process: print its JSON
        setting = args.setting[0]
        print(json.dumps(run(setting, args.steps or SETTINGS[setting]["steps"], args.warmup, args.device)))
        return
    for setting in args.setting or list(SETTINGS):
        command = [sys.executable, "-m", "benchmark.perf.bench_stale", "--child", "--setting", setting,
                   "--steps", str(args.steps or SETTINGS[setting]["steps"]), "--warmup", str(args.warmup),
                   "--device", args.device, "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"bench_stale {setting} failed:\n{done.stderr.strip()}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        line = (f"{setting:12s} {result['device']} x{result['torch_threads']}  batch {result['batch_size']}: "
                f"{result['train_videos_per_s']} train videos/s ({result['step_s']} s/step), "
                f"peak memory {result['peak_memory_mb']} MB ({result['memory_after_imports_mb']} MB after imports)")
        if "step_s_all_mask_rows" in result:
            line += f"; every mask row {result['step_s_all_mask_rows']} s/step"
        if "fit_s" in result:
            line += (f"; one fit+predict ({result['train_videos']} train / {result['test_videos']} test videos): "
                     f"fit {result['fit_s']} s + predict {result['predict_s']} s wall, "
                     f"{result['fit_predict_cpu_s']} s CPU")
        print(line)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
