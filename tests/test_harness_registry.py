"""Method registry: registration, variant overrides (one-line errors), profile hyper-parameters, hooks, discovery."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from benchmark.harness import registry
from benchmark.harness.cli import main
from benchmark.harness.registry import (ConfigError, Method, apply_hparams, get_method, list_methods, make_config,
                                        register_method)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Registrations made here vanish after the test; methods/ is not imported (other helpers' code)."""
    import harness_toy  # noqa: F401  (registers "toy")

    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(registry, "_DISCOVERED", {"methods"})


def _register(name: str):
    @dataclass(frozen=True)
    class Decoder:
        layers: int = 1
        epochs: int = 2

    @register_method(name)
    class Fake(Method):
        @dataclass(frozen=True)
        class Config:
            lr: float = 1e-3
            num_queries: int = 20
            masking: str = "maskformer"
            thresholds: tuple[float, ...] = (0.1, 0.5)
            fine_tune: bool = True
            init: str | None = None
            decoder: Decoder = field(default_factory=Decoder)
            epochs: int = 10

        def fit(self, train_view):
            pass

        def predict(self, test_view):
            return {}

        def classify_segments(self, test_view, segments):
            return {}

    return Fake


def test_variant_overrides_give_a_new_frozen_config():
    _register("fake")
    cfg = make_config("fake", {"lr": "1e-4", "num_queries": 5, "thresholds": [0.3], "decoder": {"layers": 3},
                               "init": "a video of"}, variant="q5")
    assert (cfg.lr, cfg.num_queries, cfg.thresholds, cfg.decoder.layers, cfg.init) == (1e-4, 5, (0.3,), 3, "a video of")
    assert isinstance(cfg.lr, float)  # YAML reads 1e-4 as a string
    assert make_config("fake").num_queries == 20  # defaults untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0


@pytest.mark.parametrize("overrides, key", [({"num_querys": 5}, "num_querys"), ({"decoder": {"width": 2}}, "decoder.width")])
def test_unknown_key_is_a_one_line_error_naming_method_variant_and_key(overrides, key):
    _register("fake")
    with pytest.raises(ConfigError) as e:
        make_config("fake", overrides, variant="maskformer_q5")
    msg = str(e.value)
    assert "\n" not in msg
    assert "'fake'" in msg and "'maskformer_q5'" in msg and f"'{key}'" in msg


@pytest.mark.parametrize("overrides", [{"num_queries": "many"}, {"fine_tune": 1}, {"masking": 3}, {"lr": "fast"}])
def test_wrong_type_is_rejected(overrides):
    _register("fake")
    with pytest.raises(ConfigError, match=list(overrides)[0]):
        make_config("fake", overrides)


def test_paper_recipe_applies_the_class_overrides_nested_fields_included():
    fake = _register("fake")
    default = make_config("fake")
    fake.PAPER = {"num_queries": 5, "decoder": dataclasses.replace(default.decoder, layers=3)}  # an instance
    cfg = apply_hparams("fake", default, {"recipe": "paper"})
    assert (cfg.num_queries, cfg.decoder.layers, cfg.lr) == (5, 3, default.lr)
    fake.PAPER = {"decoder": {"layers": 4}}  # or a dict
    assert apply_hparams("fake", default, {"recipe": "paper"}).decoder.layers == 4
    assert apply_hparams("fake", default, {"recipe": "default"}) == apply_hparams("fake", default, {}) == default


def test_paper_recipe_per_dataset():
    fake = _register("fake")
    fake.PAPER = {"activitynet": {"lr": 1e-4}, "thumos14": {"lr": 1e-5, "num_queries": 7}}
    cfg = apply_hparams("fake", make_config("fake"), {"recipe": "paper"}, "thumos14")
    assert (cfg.lr, cfg.num_queries) == (1e-5, 7)
    assert apply_hparams("fake", make_config("fake"), {"recipe": "paper"}, "activitynet").lr == 1e-4
    with pytest.raises(ConfigError, match="per dataset"):
        apply_hparams("fake", make_config("fake"), {"recipe": "paper"}, "synthetic")


def test_a_suite_wide_key_sets_every_field_of_its_name():
    _register("fake")
    cfg = apply_hparams("fake", make_config("fake", {"decoder": {"layers": 3}}),
                        {"recipe": "paper", "epochs": 1, "lr": "1e-4"})  # no PAPER: recipe paper keeps defaults
    assert (cfg.epochs, cfg.decoder.epochs, cfg.decoder.layers, cfg.lr) == (1, 1, 3, 1e-4)
    assert isinstance(cfg.lr, float)
    with pytest.raises(ConfigError, match="decoder.epochs"):
        apply_hparams("fake", make_config("fake"), {"epochs": "many"})


def test_unknown_recipe_is_a_one_line_error():
    _register("fake")
    with pytest.raises(ConfigError) as e:
        apply_hparams("fake", make_config("fake"), {"recipe": "fast"})
    assert "\n" not in str(e.value) and "'fake'" in str(e.value) and "'fast'" in str(e.value)


def test_a_key_naming_no_field_is_ignored():
    _register("fake")
    assert apply_hparams("fake", make_config("fake"), {"warmup": 5, "schedule": "cosine"}) == make_config("fake")


def test_config_must_be_a_frozen_dataclass():
    with pytest.raises(TypeError, match="frozen dataclass"):
        @register_method("mutable")
        class Mutable(Method):
            @dataclass
            class Config:
                lr: float = 0.1


def test_a_name_cannot_be_taken_twice():
    _register("fake")
    with pytest.raises(ValueError, match="registered twice"):
        @register_method("fake")
        class Other(Method):
            pass


def test_capabilities_list_the_overridden_hooks():
    assert Method.capabilities() == frozenset()
    assert _register("fake").capabilities() == {"classify_segments"}
    assert get_method("toy").capabilities() == {"proposals"}


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown method 'nope'.*toy"):
        get_method("nope")


def test_discovery_imports_every_module_of_the_package(tmp_path, monkeypatch):
    pkg = tmp_path / "zz_methods"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("alpha", "beta"):
        (pkg / f"{name}.py").write_text(
            "from dataclasses import dataclass\n"
            "from benchmark.harness.registry import Method, register_method\n"
            f"@register_method('zz_{name}')\n"
            f"class M(Method):\n"
            "    @dataclass(frozen=True)\n"
            "    class Config:\n"
            "        x: int = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"zz_alpha", "zz_beta"} <= set(list_methods("zz_methods"))
    assert get_method("zz_beta").__module__ == "zz_methods.beta"


def test_list_methods_command(capsys):
    assert main(["list-methods"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "proposals" in out and "behaviour='ok'" in out
