"""A tiny seeded open_clip model: the tests' text encoder and the synthetic benchmark's.

No CLIP weights exist on the machines this project is built on. :func:`make_tiny_clip` writes an
open_clip model-config JSON and a checkpoint of a randomly initialised model, which then load
through exactly the code path real weights take (:func:`benchmark.text.clip.load_text_tower`).
Its text tower keeps CLIP's 49408-token vocabulary and 77-token context, so open_clip's bundled
BPE tokenizer works offline; its vision tower is a token one-block ViT on 16-pixel images.

The synthetic benchmark's text encoder is the same kind of model with a language prior:
:func:`pretrain_text_tower` trains its text tower contrastively on phrasings of names against
fixed target embeddings (the hidden world of :mod:`benchmark.data.world`, which calls it; nothing
here knows that world). The random towers below are the tests' and the "no prior" control.

Shape choice (measured on the 200 ActivityNet class names in "a video of a person {}." over
seeds 0-11; see :func:`embedding_diversity`): a random text transformer pools the EOT token as a
near-uniform attention average over the prompt, so the shared template words dominate and
embeddings crowd into a cone, the more so the deeper it is (rank collapse, Dong et al. 2021).
One layer with 16 heads (head width 4, i.e. 16 independent random mixings of the tokens) instead
of CLIP-like 2 layers × 4 heads: mean pairwise cosine 0.870 -> 0.627 at seed 0, and over seeds
0-11 0.803 (0.655-0.881) -> 0.713 (0.570-0.812); near-duplicate pairs (cosine > 0.95) 4.7% ->
0.8%; effective rank 21.3 -> 24.8 (of 64).
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from benchmark.text.clip import ClipTextTower, TextEncoderConfig

VOCAB_SIZE = 49408  # CLIP's BPE vocabulary: open_clip's bundled tokenizer needs it
CONTEXT_LENGTH = 77


def tiny_clip_config(embed_dim: int = 64, width: int = 64, layers: int = 1, heads: int = 16) -> tuple[str, dict]:
    """(name, open_clip model config) of a tiny CLIP; the name encodes the architecture, so two shapes
    never share a name in open_clip's registry."""
    if width % heads:
        raise ValueError(f"width {width} is not divisible by heads {heads}")
    name = f"zstad-tiny-clip-e{embed_dim}-w{width}-l{layers}-h{heads}"
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 16, "patch_size": 16, "width": 32, "head_width": 32, "layers": 1},
        "text_cfg": {
            "context_length": CONTEXT_LENGTH,
            "vocab_size": VOCAB_SIZE,
            "width": width,
            "heads": heads,
            "layers": layers,
        },
    }
    return name, model_cfg


def build_tiny_clip(model_cfg: dict, seed: int) -> open_clip.CLIP:
    """The randomly initialised open_clip model of ``model_cfg``; the caller's RNG stream is left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(**model_cfg)


def save_tiny_clip(directory: str | Path, name: str, model_cfg: dict, checkpoint: bytes, tag: str) -> TextEncoderConfig:
    """Write ``<name>.json`` and ``<name>-<tag>.pt`` into ``directory``; return a config for them.

    A file already on disk with the same bytes is left untouched, so caches keyed on its
    modification time stay valid.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"{name}.json"
    _write_if_changed(config_path, json.dumps(model_cfg, indent=2).encode())
    checkpoint_path = directory / f"{name}-{tag}.pt"
    _write_if_changed(checkpoint_path, checkpoint)
    return TextEncoderConfig(model=str(config_path), pretrained=str(checkpoint_path))


def checkpoint_bytes(model: torch.nn.Module) -> bytes:
    """``torch.save`` of the state dict, byte-identical for identical weights: saved to a buffer, the
    archive's inner folder name does not depend on a file name."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def make_tiny_clip(
    directory: str | Path,
    seed: int = 0,
    embed_dim: int = 64,
    width: int = 64,
    layers: int = 1,
    heads: int = 16,
) -> TextEncoderConfig:
    """A randomly initialised tiny CLIP: ``<name>.json`` and ``<name>-seed<seed>.pt`` in ``directory``.

    The same seed gives the same weights byte for byte.
    """
    name, model_cfg = tiny_clip_config(embed_dim, width, layers, heads)
    model = build_tiny_clip(model_cfg, seed)
    return save_tiny_clip(directory, name, model_cfg, checkpoint_bytes(model), f"seed{seed}")


class Phrasings:
    """Token ids of every template filled with every name, without tokenizing each phrasing.

    CLIP's BPE encodes word by word (its pattern splits words and punctuation before merging), so a
    phrasing's tokens are its template's tokens around the name's: each template part and each name
    is encoded once, and any (template, name) row is assembled from them. Tens of thousands of
    templates × hundreds of names then cost a second, not the minutes of tokenizing every phrasing.
    """

    def __init__(self, tokenizer, templates: Sequence[str], names: Sequence[str]):
        self.sot, self.eot = tokenizer.sot_token_id, tokenizer.eot_token_id
        self.parts = [tuple(tokenizer.encode(part) for part in t.split("{}")) for t in templates]
        self.names = [tokenizer.encode(n) for n in names]
        self.vocabulary = sorted({0, self.sot, self.eot}.union(*(p + s for p, s in self.parts), *self.names))  # 0 pads

    def tokens(self, template: Sequence[int], name: Sequence[int]) -> torch.Tensor:
        """[len(template), L] token ids of phrasings (template[i], name[i]), cut after the longest's EOT."""
        rows = [[self.sot, *self.parts[t][0], *self.names[n], *self.parts[t][1], self.eot]
                for t, n in zip(template, name)]
        length = max(map(len, rows))
        if length > CONTEXT_LENGTH:
            raise ValueError(f"a phrasing has {length} tokens, more than the context length {CONTEXT_LENGTH}")
        out = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return torch.from_numpy(out)


def phrasing_tokens(tokenizer, templates: Sequence[str], names: Sequence[str]) -> torch.Tensor:
    """[len(templates) * len(names), L] token ids of every template filled with every name (template-major)."""
    template, name = np.divmod(np.arange(len(templates) * len(names)), len(names))
    return Phrasings(tokenizer, templates, names).tokens(template, name)


def pretrain_text_tower(
    model: open_clip.CLIP,
    names: Sequence[str],
    template_groups: Sequence[Sequence[str]],
    targets: np.ndarray,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> float:
    """Contrastive pretraining of ``model``'s text tower, in place, against fixed target embeddings.

    LiT-style ("locked-image tuning", Zhai et al., CVPR 2022): the image side is locked, here to
    ``targets`` [len(names), embed_dim] (one per name), and only the text tower and CLIP's logit
    scale train. A step draws ``batch_size`` (template, name) phrasings at random, each template from a
    group drawn uniformly (so a small group, e.g. bare names, is seen as often as a large caption
    grammar), and applies CLIP's InfoNCE text-to-image loss against *every* target (all names are
    negatives):

        L = -log softmax_j(s · cos(text(template_i, name_i), target_j))[name_i]

    Adam without weight decay, one-cycle schedule. Only the token embeddings of tokens the phrasings
    use can move (every other row has zero gradient, and Adam leaves a parameter with zero gradient
    where it is), so those rows train as a small table written back at the end: mathematically the
    same as training the 49408-row table, many times faster. One thread and deterministic algorithms,
    so the same seed gives the same weights byte for byte. Returns the last step's loss.
    """
    tokenizer = open_clip.SimpleTokenizer(context_length=CONTEXT_LENGTH)
    tower = ClipTextTower(model, tokenizer)
    templates = [t for group in template_groups for t in group]
    phrasings = Phrasings(tokenizer, templates, names)
    sizes = torch.tensor([len(group) for group in template_groups])
    offsets = torch.cumsum(sizes, 0) - sizes
    used = torch.tensor(phrasings.vocabulary)
    compact = torch.full((VOCAB_SIZE,), -1, dtype=torch.long)
    compact[used] = torch.arange(len(used))
    target = F.normalize(torch.as_tensor(targets, dtype=torch.float32), dim=-1)

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            embedding = torch.nn.Parameter(tower.token_embedding.weight.detach()[used].clone())
            log_scale = torch.nn.Parameter(model.logit_scale.detach().clone())
            weights = [p for n, p in tower.named_parameters() if not n.startswith("token_embedding")]
            optimizer = torch.optim.Adam([*weights, embedding, log_scale], lr=lr)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
            tower.train()
            for _ in range(steps):
                group = torch.randint(len(sizes), (batch_size,), generator=generator)
                template = offsets[group] + (torch.rand(batch_size, generator=generator) * sizes[group]).long()
                name = torch.randint(len(names), (batch_size,), generator=generator)
                tokens = phrasings.tokens(template.tolist(), name.tolist())
                text = tower.encode_embeddings(F.embedding(compact[tokens], embedding), tower.eot_index(tokens))
                scale = log_scale.exp().clamp(max=100.0)  # CLIP clips its learned temperature at 100
                logits = scale * F.normalize(text, dim=-1) @ target.T
                loss = F.cross_entropy(logits, name)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
            with torch.no_grad():
                tower.token_embedding.weight[used] = embedding
                model.logit_scale.copy_(log_scale.clamp(max=float(np.log(100.0))))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    model.eval()
    return float(loss.detach())


def embedding_diversity(embeddings: np.ndarray) -> dict[str, float]:
    """How distinct K embeddings are: pairwise cosine (mean/min/max over pairs) and effective rank.

    Effective rank (Roy & Vetterli 2007) is exp of the entropy of the normalised singular values
    of the row-normalised matrix: 1 when all rows are parallel, up to min(K, dim).
    """
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    cos = (e @ e.T)[np.triu_indices(len(e), k=1)]
    s = np.linalg.svd(e, compute_uv=False)
    p = s[s > 0] / s.sum()
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "max_cosine": float(cos.max()),
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
    }


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # parallel writers of one directory
    tmp.write_bytes(data)
    tmp.replace(path)
