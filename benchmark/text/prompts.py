"""CLIP prompting shared by the methods: hand-crafted prompts (B-I) and CoOp learnable prompts
(STALE Eq. 2, EffPrompt).

CoOp (Zhou et al., IJCV 2022) replaces the words of a hand-written prompt by learnable vectors in
the token-embedding space. STALE (§3.2, Eq. 2) feeds the text encoder F_lan = [G_p; G_e^k]:
N̂ learnable contexts G_p followed by the embedding G_e^k of the k-th class name, plus a learnable
background embedding G_e^bg appended as class K+1.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from benchmark.text.clip import ClipTextTower

_PLACEHOLDER = "X"  # one BPE token; its embeddings are replaced by the learnable contexts

# Equal footing for the methods (AUDIT.md G1): one place for how class names become text by default.
# Every hand-crafted-prompt method (B-I, the training-free reference, STALE's ``hand_crafted``) reads
# its templates from ``TextEncoderConfig.templates``, whose default is HAND_CRAFTED_TEMPLATES; every
# learned-prompt method (STALE, EffPrompt, B-II) defaults its ``n_ctx`` / ``ctx_init`` to N_CTX /
# CTX_INIT: the same N_CTX random contexts (CoOp's generic initialisation), or, when CTX_INIT holds
# words, those words' embeddings. The synthetic benchmark's generator uses none of them.
HAND_CRAFTED_TEMPLATES = ("a video of a person {}.",)
N_CTX = 4
CTX_INIT = ""


def natural_name(name: str) -> str:
    """A dataset's label string as words: ``brush_hair`` -> ``brush hair``, ``SoccerJuggling`` -> ``soccer
    juggling``; other names (``kick (an object)``) unchanged. ST-CLIP prompts with the raw strings
    (``as_in_code``); this is the ``natural`` switch."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name.replace("_", " "))
    return words.lower() if words != name else name


@torch.no_grad()
def hand_crafted_embeddings(tower: ClipTextTower, names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """[K, embed_dim] L2-normalised class embeddings from hand-written templates (no learning).

    Each template filled with each name is encoded and normalised; the K×T features are averaged
    over templates and normalised again (CLIP's prompt ensembling).
    """
    per_template = [F.normalize(tower.encode_text([t.format(n) for n in names]), dim=-1) for t in templates]
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)


class PromptLearner(nn.Module):
    """Learnable prompts [SOS][ctx_1..ctx_n][name tokens][.][EOT] for K classes, one tower pass.

    - ``ctx``: ``n_ctx`` vectors of the token-embedding width, shared by all classes (CoOp's
      unified context). Initialised N(0, 0.02²), or from the token embeddings of ``ctx_init``
      (e.g. ``"a video of a person"``), whose token count then sets ``n_ctx``.
    - ``background`` (``with_background=True``): STALE's G_e^bg is a learnable *output* embedding,
      an ``embed_dim`` vector appended after the text encoder as class K (index ``-1``), as in the
      released STALE code: there is no name to put through the encoder, and a free output vector
      can move anywhere in the joint space. Initialised N(0, 1/embed_dim) (norm ≈ 1): only its
      direction matters once features are L2-normalised before the similarity (STALE Eq. 7).
    - ``fine_tune_text``: when False the tower is frozen (``requires_grad=False`` on all its
      parameters), yet gradients still flow *through* it to ``ctx``; when True its weights train
      too (STALE's default "CLIP-text fine-tuned"). This sets ``requires_grad`` on the tower
      object itself, which is shared with whoever else holds it.

    ``forward()`` returns [K(+1), embed_dim] *unnormalised* text features. The tower is a
    submodule, so it moves with ``.to()`` and is part of ``state_dict()``.
    """

    def __init__(
        self,
        tower: ClipTextTower,
        class_names: Sequence[str],
        n_ctx: int | None = None,
        ctx_init: str | None = None,
        with_background: bool = False,
        fine_tune_text: bool = False,
    ):
        super().__init__()
        self.tower = tower
        self.fine_tune_text = fine_tune_text
        tower.requires_grad_(fine_tune_text)

        if ctx_init:
            tokens = tower.tokenize([ctx_init])
            n_init = int(tower.eot_index(tokens)[0]) - 1
            if n_ctx is not None and n_ctx != n_init:
                raise ValueError(f"n_ctx={n_ctx} but ctx_init {ctx_init!r} has {n_init} tokens")
            with torch.no_grad():
                ctx = tower.embed_tokens(tokens)[0, 1 : 1 + n_init].clone()
        else:
            n_ctx = 16 if n_ctx is None else n_ctx  # CoOp's default context length
            if n_ctx < 1:
                raise ValueError(f"n_ctx must be >= 1, got {n_ctx}")
            ctx = torch.randn(n_ctx, tower.width, device=tower.device) * 0.02
        self.ctx = nn.Parameter(ctx)
        self.n_ctx = self.ctx.shape[0]

        if with_background:
            self.background = nn.Parameter(torch.randn(tower.embed_dim, device=tower.device) * tower.embed_dim**-0.5)
        else:
            self.background = None
        self.set_class_names(class_names)

    def set_class_names(self, names: Sequence[str]) -> None:
        """Switch the class set (seen classes in training, unseen at test); the contexts stay."""
        names = tuple(str(n) for n in names)
        if not names:
            raise ValueError("PromptLearner needs at least one class name")
        placeholders = " ".join([_PLACEHOLDER] * self.n_ctx)
        tokens = self.tower.tokenize([f"{placeholders} {n}." for n in names])
        too_long = (tokens[:, -1] != 0).nonzero().flatten().tolist()  # the tokenizer truncated these
        if too_long:
            raise ValueError(
                f"prompt for class {names[too_long[0]]!r} with {self.n_ctx} contexts does not fit "
                f"the text encoder's {self.tower.context_length} tokens"
            )
        self.class_names = names
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("eot", self.tower.eot_index(tokens), persistent=False)

    @property
    def num_classes(self) -> int:
        """K, the number of named classes (the background row, if any, is extra)."""
        return len(self.class_names)

    def forward(self) -> torch.Tensor:
        """[K(+1), embed_dim]: the K prompted classes, then the background embedding if any."""
        x = self.tower.embed_tokens(self.tokens)  # [K, L, width]; looked up here so a fine-tuned embedding trains
        ctx = self.ctx.unsqueeze(0).expand(x.shape[0], -1, -1)
        x = torch.cat([x[:, :1], ctx, x[:, 1 + self.n_ctx :]], dim=1)  # STALE Eq. 2: [G_p; G_e^k]
        features = self.tower.encode_embeddings(x, self.eot)
        if self.background is not None:
            features = torch.cat([features, self.background.unsqueeze(0)], dim=0)
        return features
