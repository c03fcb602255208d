"""CLIP text towers through open_clip, and cached frozen class-name embeddings.

One code path for real weights and for the tiny stand-in the tests and the synthetic benchmark use
(:mod:`benchmark.text.tiny`): ``open_clip.create_model(name, pretrained=tag_or_file)``, after which
only the text tower is kept.

- ``TextEncoderConfig.model`` is an open_clip model name (``ViT-B-16``) or the path of an open_clip
  model-config JSON; the JSON is registered with open_clip on load, so any process that has the
  file can load the model.
- ``TextEncoderConfig.pretrained`` is an open_clip tag (``openai``) or the path of a local
  checkpoint. A tag is served from the local open_clip / Hugging Face cache when the weights are
  there. Otherwise nothing reaches for the network unless the user opts in with
  ``ZSTAD_ALLOW_DOWNLOAD=1`` (and is not ``HF_HUB_OFFLINE``): loading stops at once with a one-line
  :class:`TextEncoderError` naming the missing weights and both ways to provide them.

Note for OpenAI weights given as a *file*: they were trained with QuickGELU, so name the model
``ViT-B-16-quickgelu``; with the ``openai`` tag this is done automatically.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import open_clip
import torch
from torch import nn

from benchmark.errors import InputError
from benchmark.text.prompts import HAND_CRAFTED_TEMPLATES, hand_crafted_embeddings

_CACHE_FORMAT = 1  # bump when the computation of class_embeddings changes
DOWNLOAD_ENV = "ZSTAD_ALLOW_DOWNLOAD"  # the only way this project reaches for the network
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")


class TextEncoderError(InputError):
    """A text encoder that cannot be loaded; the message is one line saying what to do."""


@dataclass(frozen=True)
class TextEncoderConfig:
    model: str = "ViT-B-16"  # open_clip model name, or path to an open_clip model-config JSON
    pretrained: str = "openai"  # open_clip tag, or path to a local checkpoint file
    templates: tuple[str, ...] = HAND_CRAFTED_TEMPLATES  # each holds one "{}" for the class name

    def __post_init__(self):
        object.__setattr__(self, "templates", tuple(self.templates))  # YAML gives lists
        if not self.templates:
            raise TextEncoderError("TextEncoderConfig.templates is empty")
        for t in self.templates:
            try:
                ok = t.count("{}") == 1 and t.format("x") == t.replace("{}", "x")
            except (IndexError, KeyError, ValueError):
                ok = False
            if not ok:
                raise TextEncoderError(f"prompt template {t!r} must contain exactly one '{{}}' and no other braces")


class ClipTextTower(nn.Module):
    """The text half of an open_clip CLIP model, split at the token-embedding lookup.

    ``encode_text(t) == encode_embeddings(embed_tokens(t), eot_index(t))``: learnable prompts
    (:class:`benchmark.text.prompts.PromptLearner`) replace some rows of ``embed_tokens`` and run
    the rest of the tower unchanged. ``logit_scale`` is CLIP's learned log temperature, kept as a
    buffer (a constant of the pre-trained model, not a text-tower weight).
    """

    def __init__(self, clip_model: nn.Module, tokenizer):
        super().__init__()
        # open_clip's CLIP keeps the text tower's parts on the model; CustomTextCLIP under .text
        text = clip_model if hasattr(clip_model, "token_embedding") else getattr(clip_model, "text", None)
        if text is None or not hasattr(text, "token_embedding") or getattr(text, "cls_emb", None) is not None:
            raise TextEncoderError(
                f"{type(clip_model).__name__}: only open_clip's standard CLIP text transformer is supported"
            )
        self.pool_type = getattr(text, "text_pool_type", None) or getattr(text, "pool_type", "argmax")
        self.eos_id = getattr(text, "text_eos_id", None) or getattr(text, "eos_id", None)
        if self.pool_type not in ("argmax", "eos"):
            raise TextEncoderError(f"text pooling {self.pool_type!r} is not supported (only 'argmax' and 'eos')")
        self.tokenizer = tokenizer
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer("attn_mask", text.attn_mask, persistent=False)
        self.register_buffer("logit_scale", clip_model.logit_scale.detach().clone())

        self.context_length = self.positional_embedding.shape[0]
        self.width = self.token_embedding.embedding_dim
        if self.text_projection is None:
            self.embed_dim = self.width
        elif isinstance(self.text_projection, nn.Linear):
            self.embed_dim = self.text_projection.out_features
        else:
            self.embed_dim = self.text_projection.shape[1]

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, context_length] token ids: SOT, BPE tokens, EOT, zero padding."""
        return self.tokenizer(list(texts)).to(self.device)

    def eot_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N] position of the end-of-text token, whose output represents the sequence."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)  # EOT has the largest id in CLIP's vocabulary
        return (tokens == self.eos_id).int().argmax(dim=-1)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, L] ids -> [N, L, width] token embeddings (no positions yet)."""
        return self.token_embedding(tokens)

    def encode_embeddings(self, x: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """[N, L, width] token embeddings -> [N, embed_dim] text features, as open_clip's encode_text.

        With CLIP's causal attention nothing after the last EOT token can change the result, so the
        sequence is cut there: on short prompts this makes the tower several times faster.
        """
        if self.attn_mask is not None:
            x = x[:, : int(eot_index.max()) + 1]
        length = x.shape[1]
        cast_dtype = self.transformer.get_cast_dtype()
        x = x.to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        x = self.ln_final(self.transformer(x, attn_mask=mask))
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, embed_dim] text features, not normalised (like open_clip)."""
        tokens = self.tokenize(texts)
        return self.encode_embeddings(self.embed_tokens(tokens), self.eot_index(tokens))


def load_clip(model: str, pretrained: str, device: str | torch.device = "cpu"):
    """(open_clip model, its evaluation image transform, its name) under this module's weight rules: a model
    name or config JSON, a tag from the local cache (downloaded only with ZSTAD_ALLOW_DOWNLOAD=1) or a file."""
    name = _register_model(model)
    weights, quick_gelu = _resolve_weights(name, pretrained)
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights, device=device,
                                                                    force_quick_gelu=quick_gelu)
    except Exception as e:  # torch.load / load_state_dict / download errors are many lines long
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TextEncoderError(f"cannot load {name} weights from {weights}: {first}") from e
    return clip, preprocess, name


def load_text_tower(cfg: TextEncoderConfig, device: str | torch.device = "cpu") -> ClipTextTower:
    """Build the open_clip model named by ``cfg``, keep its text tower and tokenizer, drop the rest."""
    model, _, name = load_clip(cfg.model, cfg.pretrained, device)
    tower = ClipTextTower(model, open_clip.get_tokenizer(name))
    del model  # the vision tower goes with it
    return tower.eval()


def class_embeddings(cfg: TextEncoderConfig, class_names: Sequence[str], cache_dir: str | Path | None = None) -> np.ndarray:
    """[K, embed_dim] float32 frozen class embeddings: template ensemble, L2-normalised.

    Each template is filled with each class name, encoded and normalised; the templates are
    averaged per class and the mean is normalised again (CLIP's prompt ensembling). Results are
    cached as ``.npy`` in ``cache_dir`` (default ``$XDG_CACHE_HOME/zstad-bench/text``, i.e.
    ``~/.cache/...``), keyed on the model, the checkpoint identity (tag, or path + size + mtime), the
    templates, the names and open_clip's version; a cache hit does not build the model.
    """
    names = [str(n) for n in class_names]
    key = _cache_key(cfg, names)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    path = root / f"{digest}.npy"
    if path.is_file():
        return np.load(path)
    tower = load_text_tower(cfg)
    emb = hand_crafted_embeddings(tower, names, cfg.templates).cpu().numpy().astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: np.save(f, emb))
    _atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(key, indent=1).encode()))
    return emb


def _register_model(model: str) -> str:
    """The open_clip name for ``model``; a config JSON is added to open_clip's registry first."""
    if model.endswith(".json") or Path(model).expanduser().is_file():
        path = Path(model).expanduser()
        if not path.is_file():
            raise TextEncoderError(f"open_clip model config not found: {path}")
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TextEncoderError(f"{path}: not a readable JSON model config ({e})") from None
        if not all(k in config for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise TextEncoderError(f"{path}: an open_clip model config needs embed_dim, vision_cfg and text_cfg")
        if open_clip.get_model_config(path.stem) != config:
            open_clip.add_model_config(path)
        return path.stem
    name = model.replace("/", "-")  # open_clip's own spelling rule (ViT-B/16 -> ViT-B-16)
    if open_clip.get_model_config(name) is None:
        raise TextEncoderError(
            f"unknown open_clip model {model!r}: give a name from open_clip.list_models() "
            "or the path of an open_clip model-config JSON"
        )
    return name


def _resolve_weights(name: str, pretrained: str) -> tuple[str, bool]:
    """(checkpoint file or tag for create_model, force_quick_gelu); never touches the network offline."""
    if Path(pretrained).expanduser().is_file():
        return str(Path(pretrained).expanduser()), False
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not tag_cfg:
        if pretrained.endswith(_CHECKPOINT_SUFFIXES) or os.sep in pretrained:
            raise TextEncoderError(f"checkpoint not found: {pretrained}")
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise TextEncoderError(
            f"{pretrained!r} is neither a checkpoint file nor an open_clip tag of {name} "
            f"(tags: {', '.join(tags) or 'none'})"
        )
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    cached = _cached_weights(tag_cfg)
    if cached:
        return cached, quick_gelu
    if os.environ.get(DOWNLOAD_ENV) == "1" and not _offline():
        return pretrained, quick_gelu  # open_clip downloads it
    raise TextEncoderError(
        f"CLIP weights {name}/{pretrained} are not in the local cache: set {DOWNLOAD_ENV}=1 to download "
        f"them where there is internet, or give a local checkpoint file (run_all.py --clip-pretrained FILE; TextEncoderConfig.pretrained)"
    )


def _cached_weights(tag_cfg: dict) -> str | None:
    """The local file open_clip would use for a tag, if it is already downloaded."""
    if tag_cfg.get("file"):
        return tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or open_clip.constants.HF_WEIGHTS_NAME
        candidates = [filename]
        if filename == open_clip.constants.HF_WEIGHTS_NAME:
            candidates.insert(0, open_clip.constants.HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for candidate in candidates:
            found = try_to_load_from_cache(repo, candidate)
            if isinstance(found, str):
                return found
    if tag_cfg.get("url"):
        local = Path("~/.cache/clip").expanduser() / os.path.basename(tag_cfg["url"])
        if local.is_file():
            return str(local)
    return None


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return flag or bool(constants.HF_HUB_OFFLINE)


def _cache_key(cfg: TextEncoderConfig, names: list[str]) -> dict:
    model_path = Path(cfg.model).expanduser()
    if model_path.is_file():
        model = {"config": model_path.stem, "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest()}
    else:
        model = {"name": cfg.model}
    ckpt = Path(cfg.pretrained).expanduser()
    if ckpt.is_file():
        stat = ckpt.stat()
        weights = {"path": str(ckpt.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    else:
        weights = {"tag": cfg.pretrained}
    return {
        "format": _CACHE_FORMAT,
        "open_clip": open_clip.__version__,
        "model": model,
        "weights": weights,
        "templates": list(cfg.templates),
        "class_names": names,
    }


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "zstad-bench" / "text"


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file, so concurrent runs never read half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)
