"""The synthetic benchmark's hidden world, and the stand-in CLIP pretrained on it.

The generator (:mod:`benchmark.data.synthetic`) draws its videos from *concepts*, never from a
method's text: this module is where they live, and only the generator imports it. Nothing here is
written to disk except the pretrained text tower, which knows the concepts only as CLIP knows the
visual world, through what it learned from phrasings of names.

World. Every action name is a verb phrase, a verb of :data:`VERBS` and an object of
:data:`OBJECTS` ("riding a horse"): the vocabulary is all 24 × 24 = 576 such names. Each verb,
each object and each (verb, object) pair draws a random unit vector in the joint space, and

    concept(v, o) = norm(w_verb · verb_v + w_object · object_o + w_idiom · idiom_vo)

so the world is compositional, like language: names that share a verb or an object are related
(cos ≈ w_verb² / Σw² for a shared verb: 0.55 with the defaults), and most of an unseen name is
predictable from its words seen in other names; the idiom part is what a name means beyond its
words. All of it is drawn from ``WorldConfig.seed``: one world (and one stand-in CLIP) serves every
benchmark of that seed, as one real CLIP serves every dataset; the benchmark's own seed draws its
classes, domain shift and videos.

Stand-in CLIP. A tiny open_clip model (:mod:`benchmark.text.tiny`; CLIP's BPE vocabulary and text
transformer) whose text tower is pretrained contrastively, LiT-style, to map phrasings of every
name of the vocabulary onto the name's concept (the locked "image" side: web images of an action
sit on its concept, so CLIP's joint space *is* the concept space; the benchmark's video features are
a domain-shifted view of it, :mod:`benchmark.data.synthetic`). It sees
:data:`PRETRAINING_TEMPLATES` (2304 captions and 16 titles) × all 576 names, as CLIP's web
pretraining saw ActivityNet's names in many captions. Zero-shot withholds the detector's training
videos of unseen classes, not the words. :data:`HELD_OUT_TEMPLATES` are never used in pretraining:
they test whether the tower's prior generalises to new phrasings, as a new prompt does with real
CLIP. The tower is pretrained once per :func:`tower_tag` (deterministically: one thread, fixed seed;
about 20 s on an idle core, 400 steps of 128 phrasings), cached under ``$XDG_CACHE_HOME/zstad-bench/towers`` and copied into each benchmark folder, which
methods load like real weights.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from benchmark.text.clip import ClipTextTower, TextEncoderConfig
from benchmark.text.tiny import (build_tiny_clip, checkpoint_bytes, phrasing_tokens, pretrain_text_tower,
                                 save_tiny_clip, tiny_clip_config)

_FORMAT = 1  # bump when concepts() or the pretraining recipe changes: cached towers are then rebuilt

VERBS = (
    "washing", "painting", "cutting", "throwing", "carrying", "cleaning", "riding", "pushing",
    "climbing", "folding", "polishing", "repairing", "shaking", "spinning", "kicking", "juggling",
    "brushing", "wrapping", "lifting", "decorating", "building", "sanding", "rolling", "balancing",
)
OBJECTS = (
    "a bicycle", "the dog", "a fence", "the car", "a ball", "the windows", "a carpet", "a cake",
    "a kayak", "the hair", "a rope", "a ladder", "the shoes", "a table", "a guitar", "the lawn",
    "a box", "a horse", "the dishes", "a surfboard", "a tire", "the curtains", "a hat", "a hoop",
)
VOCABULARY = tuple(f"{v} {o}" for v in VERBS for o in OBJECTS)

# Phrasings the stand-in CLIP is pretrained on, in two families drawn equally often: captions of
# someone doing the action (every prefix × subject × suffix, 2304 of them, so that the tower learns
# which words carry the action and which are context, as web captions teach CLIP) and bare names and
# titles. Methods' default template ("a video of a person {}.") is among the captions, as such
# captions are on the web; the generator uses none of them.
_PREFIXES = ("", "a video of ", "a photo of ", "footage of ", "a clip of ", "watch ", "funny: ", "a blurry picture of ",
             "look at ", "here is ", "amazing! ", "my favourite video: ")
_SUBJECTS = ("a person", "someone", "a man", "a woman", "a child", "a group of people", "a teenager", "my friend",
             "an old man", "a girl", "a boy", "the team")
_SUFFIXES = (".", "", " outdoors.", " in the park.", " at the beach.", " in the kitchen!",
             " while talking to the camera.", " after school.", " in the garden.", " slowly.", " at night", " with friends.", " in the rain.",
             " for the first time", " again!", " in a small town.")
CAPTIONS = tuple(f"{p}{s} {{}}{x}" for p, s, x in itertools.product(_PREFIXES, _SUBJECTS, _SUFFIXES))
TITLES = ("{}", "{}.", "a video of {}.", "{} video", "how to do {}", "{} tutorial", "{} at home", "{} in slow motion",
          "i love {}", "the art of {}", "a photo of a {}.", "an image of {}.", "best of {} 2019", "{} for beginners",
          "{}: tips and tricks", "learn {} in ten minutes")
PRETRAINING_TEMPLATES = CAPTIONS + TITLES
# Never in pretraining: new phrasings; the first two rearrange words pretraining saw (plus a comma), the
# other two bring words it never saw.
HELD_OUT_TEMPLATES = (
    "a man is {} in the video.",
    "{} outdoors, a photo.",
    "there is somebody {} in this recording.",
    "a close-up shot of a student {} on a sunny day.",
)

# The pretraining stats report these (bump _FORMAT when changing them: the stats are cached with the tower).
_ALIGNMENT_TEMPLATES = ("a video of a person {}.", "{}", *HELD_OUT_TEMPLATES)


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0  # the concept vectors and the tower's initialisation and pretraining batches
    embed_dim: int = 64  # the joint space: concepts, CLIP text and (shifted) video features all live here
    verb: float = 1.0  # w_verb: weight of the verb part of a concept
    object: float = 0.8  # w_object: weight of the object part
    idiom: float = 0.4  # w_idiom: the part of a name's meaning not predictable from its words
    # the stand-in CLIP's text tower and its pretraining
    width: int = 64
    layers: int = 1
    heads: int = 4
    steps: int = 400
    batch_size: int = 128
    lr: float = 2e-3


def concepts(names: Sequence[str], cfg: WorldConfig) -> np.ndarray:
    """[K, embed_dim] unit concept vectors of ``names`` (each a name of :data:`VOCABULARY`)."""
    rng = np.random.default_rng([cfg.seed, 7])  # its own stream: independent of any benchmark seed's draws
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    verbs = unit(rng.standard_normal((len(VERBS), cfg.embed_dim)))
    objects = unit(rng.standard_normal((len(OBJECTS), cfg.embed_dim)))
    idioms = unit(rng.standard_normal((len(VERBS), len(OBJECTS), cfg.embed_dim)))
    index = {name: divmod(i, len(OBJECTS)) for i, name in enumerate(VOCABULARY)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ValueError(f"not a name of the synthetic world: {unknown[0]!r}")
    parts = [cfg.verb * verbs[v] + cfg.object * objects[o] + cfg.idiom * idioms[v, o] for v, o in map(index.get, names)]
    return unit(np.stack(parts)) if parts else np.zeros((0, cfg.embed_dim))


def tower_tag(cfg: WorldConfig) -> str:
    """Names the pretrained tower of ``cfg`` (its checkpoint is ``<model name>-<tag>.pt``): a hash of the
    world config, the phrasings, the vocabulary and the torch / open_clip versions."""
    key = {"format": _FORMAT, "world": asdict(cfg), "templates": [CAPTIONS, TITLES], "vocabulary": VOCABULARY,
           "torch": torch.__version__, "open_clip": open_clip.__version__}
    return f"world{cfg.seed}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]}"


def pretrained_text_encoder(directory: str | Path, cfg: WorldConfig, cache_dir: str | Path | None = None,
                            ) -> tuple[TextEncoderConfig, dict]:
    """The stand-in CLIP of ``cfg``'s world, copied into ``directory``: (its config, pretraining stats).

    Pretrained once per :func:`tower_tag` and cached (``cache_dir``, default
    ``$XDG_CACHE_HOME/zstad-bench/towers``).
    """
    name, model_cfg = tiny_clip_config(cfg.embed_dim, cfg.width, cfg.layers, cfg.heads)
    tag = tower_tag(cfg)
    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    cached = root / f"{name}-{tag}"
    stats_path = cached / "pretraining.json"
    if not stats_path.is_file():
        model = build_tiny_clip(model_cfg, cfg.seed)
        loss = pretrain_text_tower(model, VOCABULARY, (CAPTIONS, TITLES), concepts(VOCABULARY, cfg),
                                   cfg.steps, cfg.batch_size, cfg.lr, cfg.seed)
        save_tiny_clip(cached, name, model_cfg, checkpoint_bytes(model), tag)
        stats = {"final_loss": round(loss, 4), "logit_scale": round(float(model.logit_scale.detach().exp()), 2),
                 **_alignment(model, cfg)}
        tmp = stats_path.with_name(f".{stats_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stats, indent=1))
        os.replace(tmp, stats_path)  # written last: its presence marks a complete cached tower
    text_cfg = save_tiny_clip(directory, name, model_cfg, (cached / f"{name}-{tag}.pt").read_bytes(), tag)
    return text_cfg, json.loads(stats_path.read_text())


def _alignment(model: open_clip.CLIP, cfg: WorldConfig) -> dict:
    """How well the tower's text lands on the concepts over the whole vocabulary, per template of
    _ALIGNMENT_TEMPLATES: mean cosine, and top-1 of the 576-way retrieval of the name's concept."""
    target = torch.as_tensor(concepts(VOCABULARY, cfg), dtype=torch.float32)
    tokenizer = open_clip.SimpleTokenizer()
    tower = ClipTextTower(model, tokenizer).eval()
    out = {}
    for template in _ALIGNMENT_TEMPLATES:
        tokens = phrasing_tokens(tokenizer, [template], VOCABULARY)
        with torch.no_grad():
            text = F.normalize(tower.encode_embeddings(tower.embed_tokens(tokens), tower.eot_index(tokens)), dim=-1)
        top1 = ((text @ target.T).argmax(1) == torch.arange(len(VOCABULARY))).float().mean()
        out[template] = {"cosine": round(float((text * target).sum(1).mean()), 4), "top1": round(float(top1), 4)}
    return {"alignment": out}


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "zstad-bench" / "towers"
