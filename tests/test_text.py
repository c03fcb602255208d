"""Text encoders and prompts, on the tiny seeded open_clip model loaded through the real code path."""
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import huggingface_hub
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from benchmark.text import clip as clip_module
from benchmark.text.clip import TextEncoderConfig, TextEncoderError, class_embeddings, load_text_tower
from benchmark.text.prompts import PromptLearner, hand_crafted_embeddings
from benchmark.text.tiny import embedding_diversity, make_tiny_clip

NAMES = ["Surfing", "Playing squash", "Cleaning windows", "Making a sandwich", "Zumba"]
UNSEEN = ["Hurling", "Knitting", "Using the balance beam"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt fails, as on a machine without internet."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "getproxies", dict)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TextEncoderConfig:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tower(tiny):
    return load_text_tower(tiny)  # fresh per test: PromptLearner sets requires_grad on it


def test_tiny_model_loads_from_its_files_in_a_fresh_process(tiny, tmp_path):
    """Another process, with only the config JSON and checkpoint, offline, gets the same bytes."""
    script = textwrap.dedent(
        """
        import socket, sys
        from pathlib import Path
        import numpy as np, open_clip, torch
        def refuse(*a, **k):
            raise OSError("network disabled")
        socket.socket.connect = refuse
        from benchmark.text.clip import TextEncoderConfig, load_text_tower
        assert Path(sys.argv[1]).stem not in open_clip.list_models()
        tower = load_text_tower(TextEncoderConfig(model=sys.argv[1], pretrained=sys.argv[2]))
        with torch.no_grad():
            np.save(sys.argv[3], tower.encode_text(["a video of a person surfing."]).numpy())
        """
    )
    out = tmp_path / "emb.npy"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-c", script, tiny.model, tiny.pretrained, str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with torch.no_grad():
        here = load_text_tower(tiny).encode_text(["a video of a person surfing."]).numpy()
    assert np.load(out).tobytes() == here.tobytes()


def test_make_tiny_clip_is_deterministic_and_keeps_identical_files(tmp_path):
    a = make_tiny_clip(tmp_path / "a", seed=0)
    b = make_tiny_clip(tmp_path / "b", seed=0)
    c = make_tiny_clip(tmp_path / "c", seed=1)
    read = lambda p: open(p, "rb").read()  # noqa: E731
    assert read(a.pretrained) == read(b.pretrained) != read(c.pretrained)
    mtime = os.stat(a.pretrained).st_mtime_ns
    assert make_tiny_clip(tmp_path / "a", seed=0) == a
    assert os.stat(a.pretrained).st_mtime_ns == mtime  # caches keyed on mtime stay valid


def test_tower_matches_open_clip_encode_text(tiny, tower):
    model = open_clip.create_model(clip_module._register_model(tiny.model), pretrained=tiny.pretrained)
    texts = ["a video of a person surfing.", "zumba", "a video of a person using the balance beam."]
    tokens = tower.tokenize(texts)
    assert tokens.shape == (3, 77) and tokens.dtype == torch.long
    assert (tower.context_length, tower.width, tower.embed_dim) == (77, 64, 64)
    assert float(tower.logit_scale) == float(model.logit_scale.detach())
    assert not any(name.startswith("visual") for name, _ in tower.named_parameters())
    with torch.no_grad():
        expected = model.encode_text(tokens)
        split = tower.encode_embeddings(tower.embed_tokens(tokens), tokens.argmax(dim=-1))
        torch.testing.assert_close(split, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(tower.encode_text(texts), expected, atol=1e-5, rtol=0)


def test_class_embeddings_ensemble_templates_and_hit_the_cache(tiny, tmp_path, monkeypatch):
    cfg = TextEncoderConfig(tiny.model, tiny.pretrained, templates=["a video of a person {}.", "{}"])
    first = class_embeddings(cfg, NAMES, cache_dir=tmp_path)
    assert first.shape == (5, 64) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-6)
    tower = load_text_tower(tiny)
    with torch.no_grad():
        per_template = [F.normalize(tower.encode_text([t.format(n) for n in NAMES]), dim=-1) for t in cfg.templates]
    np.testing.assert_allclose(first, F.normalize(per_template[0] + per_template[1], dim=-1).numpy(), atol=1e-6)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built despite a cached result")

    monkeypatch.setattr(clip_module, "load_text_tower", no_model)
    assert class_embeddings(cfg, NAMES, cache_dir=tmp_path).tobytes() == first.tobytes()
    for other in (
        (cfg, NAMES[:4]),
        (TextEncoderConfig(tiny.model, tiny.pretrained, templates=("{}",)), NAMES),
    ):
        with pytest.raises(AssertionError, match="model was built"):
            class_embeddings(*other, cache_dir=tmp_path)
    os.utime(cfg.pretrained, ns=(1, 1))  # a rewritten checkpoint is a different model
    with pytest.raises(AssertionError, match="model was built"):
        class_embeddings(cfg, NAMES, cache_dir=tmp_path)


def test_tiny_embeddings_tell_the_activitynet_classes_apart(tiny, shared_data, tmp_path):
    lines = (shared_data / "activitynet" / "action_name.csv").read_text().splitlines()
    assert lines[0] == "action"
    names = [n.strip() for n in lines[1:] if n.strip()]
    emb = class_embeddings(tiny, names, cache_dir=tmp_path)
    d = embedding_diversity(emb)
    assert len(names) == 200
    assert d["mean_cosine"] < 0.8 and d["max_cosine"] < 0.99 and d["effective_rank"] > 20, d


def test_embedding_diversity_hand_computed():
    d = embedding_diversity(np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]))
    assert d["min_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert d["max_cosine"] == pytest.approx(2**-0.5)
    assert d["mean_cosine"] == pytest.approx(2 * 2**-0.5 / 3)
    assert embedding_diversity(np.eye(3))["effective_rank"] == pytest.approx(3.0)
    assert embedding_diversity(np.ones((4, 3)))["effective_rank"] == pytest.approx(1.0)


def test_prompt_with_hand_crafted_context_reproduces_the_hand_crafted_prompt(tower):
    """ctx initialised from "a video of a person" makes exactly the B-I prompt: the splice is right."""
    learner = PromptLearner(tower, NAMES, ctx_init="a video of a person")
    assert learner.n_ctx == 5 and learner.ctx.shape == (5, 64)
    with torch.no_grad():
        prompted = F.normalize(learner(), dim=-1)
    hand = hand_crafted_embeddings(tower, NAMES, ["a video of a person {}."])
    torch.testing.assert_close(prompted, hand, atol=1e-5, rtol=0)


def test_prompt_learner_shapes_and_background(tower):
    torch.manual_seed(0)
    learner = PromptLearner(tower, NAMES, n_ctx=4, with_background=True)
    out = learner()
    assert out.shape == (6, 64) and learner.num_classes == 5
    assert torch.equal(out[-1], learner.background)  # background is an output embedding
    assert learner.ctx.std().item() == pytest.approx(0.02, rel=0.3)
    assert PromptLearner(tower, NAMES, n_ctx=4)().shape == (5, 64)
    with pytest.raises(ValueError, match="has 5 tokens"):
        PromptLearner(tower, NAMES, n_ctx=3, ctx_init="a video of a person")
    with pytest.raises(ValueError, match="does not fit"):
        PromptLearner(tower, ["very " * 80 + "long"], n_ctx=4)


@pytest.mark.parametrize("fine_tune_text", [False, True])
def test_gradients_reach_context_always_and_tower_only_when_fine_tuned(tower, fine_tune_text):
    learner = PromptLearner(tower, NAMES, n_ctx=4, with_background=True, fine_tune_text=fine_tune_text)
    learner().pow(2).sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert learner.background.grad is not None and learner.background.grad.abs().sum() > 0
    tower_params = dict(tower.named_parameters())
    assert all(p.requires_grad == fine_tune_text for p in tower_params.values())
    if fine_tune_text:
        for name in ("token_embedding.weight", "positional_embedding", "text_projection"):
            assert tower_params[name].grad.abs().sum() > 0, name
        assert all(p.grad is not None for p in tower_params.values())
    else:
        assert all(p.grad is None for p in tower_params.values())
    assert set(learner.parameters()) >= {learner.ctx, learner.background}


def test_set_class_names_switches_classes_and_keeps_context(tower):
    learner = PromptLearner(tower, NAMES, n_ctx=4, with_background=True)
    ctx = learner.ctx
    with torch.no_grad():
        seen = learner()
        learner.set_class_names(UNSEEN)
        unseen = learner()
        learner.set_class_names(NAMES)
        again = learner()
    assert unseen.shape == (4, 64) and learner.ctx is ctx
    assert torch.equal(seen, again)
    with torch.no_grad():
        direct = PromptLearner(tower, UNSEEN, n_ctx=4)
        direct.ctx.copy_(ctx)
        torch.testing.assert_close(unseen[:3], direct(), atol=1e-5, rtol=0)


def test_missing_checkpoint_unknown_model_and_bad_checkpoint_fail_clearly(tiny, tmp_path):
    cases = [
        (TextEncoderConfig(tiny.model, str(tmp_path / "nope.pt")), "checkpoint not found"),
        (TextEncoderConfig("ViT-Nonexistent-99", tiny.pretrained), "unknown open_clip model 'ViT-Nonexistent-99'"),
        (TextEncoderConfig(str(tmp_path / "missing.json"), tiny.pretrained), "model config not found"),
        (TextEncoderConfig(tiny.model, "no-such-tag"), "neither a checkpoint file nor an open_clip tag"),
    ]
    other = make_tiny_clip(tmp_path / "narrow", width=32, heads=4)
    cases.append((TextEncoderConfig(tiny.model, other.pretrained), "cannot load zstad-tiny-clip"))
    for cfg, message in cases:
        with pytest.raises(TextEncoderError, match=message) as err:
            load_text_tower(cfg)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="exactly one"):
        TextEncoderConfig(templates=("a video of {} doing {}",))


@pytest.mark.parametrize("offline", [True, False])
def test_tag_without_local_weights_fails_fast_without_reaching_the_network(tmp_path, monkeypatch, offline):
    """Without the explicit download opt-in, a missing tag never reaches for the network."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setenv("HOME", str(tmp_path))  # nor in ~/.cache/clip
    monkeypatch.delenv("ZSTAD_ALLOW_DOWNLOAD", raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    start = time.monotonic()
    with pytest.raises(TextEncoderError, match="ViT-B-16/openai .*ZSTAD_ALLOW_DOWNLOAD=1.*local checkpoint") as err:
        load_text_tower(TextEncoderConfig("ViT-B-16", "openai"))
    assert time.monotonic() - start < 5
    assert "\n" not in str(err.value)


def test_cached_tag_resolves_to_the_local_file_with_openai_quickgelu(tmp_path, monkeypatch):
    """A tag whose weights are in the Hugging Face cache loads from there, never from the network."""
    repo = tmp_path / "hf" / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    weights = repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"stand-in")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # OpenAI's CLIP was trained with QuickGELU; the ViT-B-16 config says GELU, so it is forced
    assert clip_module._resolve_weights("ViT-B-16", "openai") == (str(weights), True)


def test_every_method_starts_from_the_same_prompts():
    """Equal footing: the learned-prompt methods share one default initialisation and the hand-crafted
    ones one default template set, both set in benchmark.text.prompts."""
    from benchmark.harness.registry import make_config
    from benchmark.text.prompts import CTX_INIT, HAND_CRAFTED_TEMPLATES, N_CTX

    for method in ("stale", "effprompt", "b2_denseclip"):
        config = make_config(method)
        assert (config.n_ctx, config.ctx_init) == (N_CTX, CTX_INIT), method
    # B-I, the training-free reference and STALE's hand_crafted variant embed TextEncoderConfig.templates
    assert TextEncoderConfig().templates == HAND_CRAFTED_TEMPLATES
