"""What every method's training loop needs: seeding, in-memory batches, device and precision."""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for batch order.

    On CPU this makes training bit-for-bit repeatable (the harness tests it); on GPU some kernels
    stay non-deterministic, which we accept rather than slowing every run down.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def minibatches(n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True):
    """Index tensors over an in-memory dataset of ``n`` items: no per-step file I/O."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def device_of(context) -> torch.device:
    return torch.device(getattr(context, "device", "cpu") or "cpu")


def autocast(device: torch.device):
    """bf16 autocast on GPU; full precision on CPU (bf16 on CPU is slow and changes results)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def as_tensor(array, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """Whole-dataset array -> tensor on the training device once (zero-copy on CPU)."""
    return torch.as_tensor(np.asarray(array), dtype=dtype).to(device)


@contextlib.contextmanager
def one_thread():
    """Run the block on one torch thread: for the box-level methods' small batches (vectors or ~20 tokens of
    width 64) a second thread only waits (10-25x slower on a busy 2-core box); the setting is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
