"""The synthetic benchmark's hidden world and its stand-in CLIP (benchmark/data/world.py): a fair test bed.

The checks of AUDIT.md "Is the synthetic benchmark a fair test bed": no prompt template is privileged,
the text tower has a language prior, nothing a method can load holds the concepts. Measured on the
development benchmark (seed 1), never on the suite's seed.
"""
from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import open_clip
import pytest

from benchmark.data.annotations import load_annotations
from benchmark.data.features import open_feature_store
from benchmark.data.splits import generate_splits
from benchmark.data.synthetic import PROFILES, generate, load_manifest
from benchmark.data.world import (HELD_OUT_TEMPLATES, PRETRAINING_TEMPLATES, TITLES, VOCABULARY, WorldConfig, concepts,
                                  pretrained_text_encoder)
from benchmark.text.clip import TextEncoderConfig, load_text_tower
from benchmark.text.prompts import HAND_CRAFTED_TEMPLATES, hand_crafted_embeddings
from benchmark.text.tiny import make_tiny_clip, phrasing_tokens
from synthetic_views import development_benchmark

REPO = Path(__file__).resolve().parents[1]
SPLITS = range(6)  # 75/25 class splits of the development benchmark the accuracies are averaged over: one
# split's 25 classes are coarse (a class flipping moves top-1 by ~4 points; a random 0.3-norm nudge of the
# concepts themselves moves one split's top-1 by 3-10 points)
# every method's default template, the bare name, a pretraining caption, and phrasings never pretrained on
TEMPLATES = (*HAND_CRAFTED_TEMPLATES, "{}", "a photo of a {}.", *HELD_OUT_TEMPLATES)


@pytest.fixture(scope="module")
def dev():
    """The development benchmark's unseen-class GT segments as mean raw features, per 75/25 split."""
    root = development_benchmark()
    annotations = load_annotations(root / "annotations.json")
    store = open_feature_store(root / "features")
    features, labels = [], []
    for video in annotations.subset("validation"):
        x = store.read(video.id)
        times = (np.arange(len(x)) + 0.5) / len(x) * video.duration  # raw row i covers the i-th slice of the video
        for instance in video.instances:
            inside = (times >= instance.start) & (times <= instance.end)
            features.append(x[inside].mean(0) if inside.any() else x[np.abs(times - instance.start).argmin()])
            labels.append(instance.label)
    splits = generate_splits("synthetic", annotations.classes, 0.75, n=max(SPLITS) + 1, seed=0)
    return root, load_manifest(root), np.stack(features), np.array(labels), [splits[i].unseen for i in SPLITS]


def zero_shot_top1(dev, text_cfg: TextEncoderConfig, template: str) -> float:
    """Mean over SPLITS of the top-1 of unseen-class GT segments: mean raw feature vs each unseen class's
    L2-normalised text embedding (no training: the frozen tower alone)."""
    _, _, features, labels, splits = dev
    tower = load_text_tower(text_cfg)
    accuracies = []
    for unseen in splits:
        text = hand_crafted_embeddings(tower, unseen, [template]).numpy()
        keep = np.isin(labels, unseen)
        predicted = np.asarray(unseen)[(features[keep] @ text.T).argmax(1)]
        accuracies.append(np.mean(predicted == labels[keep]))
    return float(np.mean(accuracies))


def test_no_template_is_privileged(dev):
    """With the frozen stand-in tower, every template names unseen classes about equally well (real CLIP
    moves a few points across templates), each far above chance: the generator holds no method's key."""
    _, manifest, _, _, splits = dev
    assert not set(HELD_OUT_TEMPLATES) & set(PRETRAINING_TEMPLATES)
    top1 = {t: zero_shot_top1(dev, TextEncoderConfig(**manifest["text_encoder"]), t) for t in TEMPLATES}
    print("zero-shot top-1 of unseen GT segments by template:", {t: round(100 * a, 1) for t, a in top1.items()})
    chance = 1 / len(splits[0])
    assert max(top1.values()) - min(top1.values()) <= 0.05, top1
    assert min(top1.values()) >= 3 * chance, top1


def test_the_pretrained_tower_has_a_language_prior(dev, tmp_path):
    """Pretraining, not the architecture, names the unseen classes: the same tower with random weights is
    at least twice worse."""
    world = WorldConfig()
    random_cfg = make_tiny_clip(tmp_path, seed=0, embed_dim=world.embed_dim, width=world.width, layers=world.layers,
                                heads=world.heads)
    assert Path(random_cfg.model).name == Path(dev[1]["text_encoder"]["model"]).name  # the same architecture
    pretrained = zero_shot_top1(dev, TextEncoderConfig(**dev[1]["text_encoder"]), HAND_CRAFTED_TEMPLATES[0])
    random = zero_shot_top1(dev, random_cfg, HAND_CRAFTED_TEMPLATES[0])
    print(f"zero-shot top-1: pretrained tower {100 * pretrained:.1f}, random weights {100 * random:.1f}")
    assert pretrained >= 2 * random


def test_pretraining_is_deterministic_and_aligns_phrasings_to_concepts(tmp_path):
    cfg = WorldConfig(steps=30, batch_size=32)
    a, stats = pretrained_text_encoder(tmp_path / "a", cfg, cache_dir=tmp_path / "cache_a")
    b, _ = pretrained_text_encoder(tmp_path / "b", cfg, cache_dir=tmp_path / "cache_b")  # pretrained again
    c, _ = pretrained_text_encoder(tmp_path / "c", replace(cfg, seed=1), cache_dir=tmp_path / "cache_a")
    read = lambda p: Path(p).read_bytes()  # noqa: E731
    assert read(a.pretrained) == read(b.pretrained) != read(c.pretrained)
    assert Path(a.pretrained).name == Path(b.pretrained).name != Path(c.pretrained).name
    assert set(stats["alignment"]) == {"a video of a person {}.", "{}", *HELD_OUT_TEMPLATES}
    assert stats["alignment"]["{}"]["top1"] > 10 / len(VOCABULARY)  # 30 steps: well under way


def test_default_world_tower_names_every_phrasing(dev):
    """The benchmark's tower, over the whole vocabulary (576-way): held-out phrasings land near their concept too."""
    alignment = dev[1]["pretraining"]["alignment"]
    assert all(a["top1"] > 0.9 and a["cosine"] > 0.65 for a in alignment.values()), alignment


def test_phrasing_tokens_equal_the_tokenizer():
    tokenizer = open_clip.SimpleTokenizer()
    templates, names = (*PRETRAINING_TEMPLATES[::11], *TITLES, *HELD_OUT_TEMPLATES), VOCABULARY[::37]
    spliced = phrasing_tokens(tokenizer, templates, names)
    direct = tokenizer([t.format(n) for t in templates for n in names])
    assert (direct[:, spliced.shape[1]:] == 0).all()
    assert (spliced == direct[:, : spliced.shape[1]]).all()


def test_compositional_world():
    """Names sharing a verb or an object have related concepts; unrelated names are near orthogonal."""
    cfg = WorldConfig()
    c = concepts(["riding a horse", "riding a bicycle", "washing a horse", "folding the curtains"], cfg)
    cos = c @ c.T
    total = cfg.verb**2 + cfg.object**2 + cfg.idiom**2
    assert cos[0, 1] == pytest.approx(cfg.verb**2 / total, abs=0.25)
    assert cos[0, 2] == pytest.approx(cfg.object**2 / total, abs=0.25)
    assert abs(cos[0, 3]) < 0.35
    with pytest.raises(ValueError, match="not a name of the synthetic world"):
        concepts(["surfing"], cfg)


def test_no_file_a_method_can_load_holds_the_concepts(tmp_path):
    """Neither the benchmark folder (annotations, features, text tower, manifest) nor the cached tower
    contains a concept vector, in any float width; the manifest has no vector-valued field."""
    cfg = replace(PROFILES["smoke"], train_videos=8, val_videos=4, seed=3)
    root = generate(tmp_path / "bench", cfg)
    manifest = json.loads((root / "synthetic.json").read_text())
    world = WorldConfig(seed=cfg.world_seed, embed_dim=cfg.embed_dim)
    vectors = concepts(manifest["classes"], world)  # the vectors the generator used
    needles = [row.astype(dtype).tobytes()[:64] for row in vectors for dtype in (np.float16, np.float32, np.float64)]
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n in data for n in needles), path

    def vector_fields(node):
        if isinstance(node, dict):
            return [f for v in node.values() for f in vector_fields(v)]
        if isinstance(node, list):
            numeric = len(node) >= 16 and all(isinstance(x, (int, float)) for x in node)
            return [node] if numeric else [f for v in node for f in vector_fields(v)]
        return []

    assert vector_fields(manifest) == []


def test_only_the_generator_imports_the_world():
    """No method or harness module can reach the concepts: benchmark.data.world is imported by the
    generators alone, the temporal and the box-level one (scan of every import in the source tree)."""
    importers = []
    for path in sorted([*(REPO / "benchmark").rglob("*.py"), *(REPO / "methods").rglob("*.py"), REPO / "run_all.py"]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                modules = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            if "benchmark.data.world" in modules:
                importers.append(path.relative_to(REPO).as_posix())
    assert sorted(set(importers)) == ["benchmark/data/synthetic.py", "benchmark/data/synthetic_stad.py"]
