"""Method plugins: a base class, a registration decorator, discovery of ``methods/``.

A method is one class in one file of the ``methods`` package::

    @register_method("stale")
    class Stale(Method):
        @dataclass(frozen=True)
        class Config:
            masking: str = "maskformer"
            num_queries: int = 20

        def fit(self, train_view): ...
        def predict(self, test_view): ...

A suite variant is a dict of overrides of ``Config``'s defaults (``make_config``); an unknown key is
a one-line error naming the method, the variant and the key. The suite's profile hyper-parameters
(``hparams``: ``recipe: default | paper`` and suite-wide keys such as ``epochs``) then go over the
variant's config (``apply_hparams``): ``recipe: paper`` applies the class's ``PAPER`` overrides.
Methods never read ``hparams`` themselves. Views are opaque here: they are defined by
``benchmark.data.zero_shot`` (TrainView, TestView) and handed through untouched.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from benchmark.errors import InputError
from benchmark.harness.compute import Ledger

if TYPE_CHECKING:  # benchmark.text.clip loads open_clip and torch: not needed to register methods
    from benchmark.text.clip import TextEncoderConfig

# ActivityNet result format: {video_id: [{"segment": [start_s, end_s], "label": name, "score": x}]}
Detections = dict[str, list[dict]]

HOOKS = ("proposals", "classify_segments", "oracle_detections")
RECIPES = ("default", "paper")
PAPER_DATASETS = ("activitynet", "thumos14")  # a PAPER keyed by these names holds one recipe per dataset


class ConfigError(InputError):
    """A bad method name or variant override; the message is one line."""


@dataclass(frozen=True)
class MethodContext:
    """What a method gets besides its config. ``log`` writes one line to the job's log."""

    device: str = "cpu"
    seed: int = 0
    text_encoder: TextEncoderConfig | None = None  # the run's text encoder
    cache_dir: Path | None = None  # per-run cache shared by jobs (e.g. text embeddings)
    job_dir: Path | None = None
    log: Callable[[str], None] = print
    ledger: Ledger = field(default_factory=Ledger)  # shared artifacts charge their cost here
    # called with the epoch number at the end of every training epoch, by methods whose ``reports_epochs`` is
    # True (they hand it to methods.modules.convergence.train); the protocol audit's "best epoch on the test
    # split" row sets it to score the model of each epoch on the test classes. It must only observe.
    epoch_end: Callable[[int], None] | None = None


class Method:
    """Base class of every method plugin.

    Required: ``fit(train_view)`` and ``predict(test_view) -> Detections``.
    Optional hooks, for the analyses (error propagation, oracles):
    - ``proposals(test_view) -> {video_id: [{"segment": [s, e], "score": x}]}`` (class-agnostic);
    - ``classify_segments(test_view, segments) -> Detections`` for given ``{video_id: [[s, e], ...]}``;
    - ``oracle_detections(test_view) -> {name: Detections}``: the method's own oracles on the test
      ground truth (e.g. STALE with ground-truth action masks), scored under ``<name>/``.
    ``capabilities()`` says which hooks a class implements; ``check_features`` what features it can use.

    ``PAPER``: the paper's recipe as overrides of ``Config`` (nested dataclass fields as dicts or as
    instances), or one such dict per dataset (``{"activitynet": {...}, "thumos14": {...}}``);
    ``recipe: paper`` applies it (``apply_hparams``).

    ``trains``: False for a training-free method (``fit`` only reads the class names); the scheduler runs
    such jobs last.

    ``reports_epochs``: True when ``fit`` calls ``context.epoch_end`` at the end of every epoch (the
    ``best_epoch_on_test`` protocol switch needs it).
    """

    name: ClassVar[str] = ""
    PAPER: ClassVar[dict] = {}
    trains: ClassVar[bool] = True
    reports_epochs: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config, context: MethodContext):
        self.config = config
        self.context = context

    def fit(self, train_view) -> None:
        raise NotImplementedError

    def predict(self, test_view) -> Detections:
        raise NotImplementedError

    def proposals(self, test_view) -> dict[str, list[dict]]:
        raise NotImplementedError(f"{self.name}: no class-agnostic proposals")

    def classify_segments(self, test_view, segments: dict[str, list[list[float]]]) -> Detections:
        raise NotImplementedError(f"{self.name}: cannot classify given segments")

    @classmethod
    def check_features(cls, config, feature_dim: int, text_dim: int) -> None:
        """Raise :class:`ConfigError` if snippet features of ``feature_dim`` cannot work with ``config``
        (e.g. features compared with text embeddings as they are need ``feature_dim == text_dim``).
        Called for every planned job before any job starts, and by the method itself."""

    def oracle_detections(self, test_view) -> dict[str, Detections]:
        raise NotImplementedError(f"{self.name}: no oracle of its own")

    @classmethod
    def capabilities(cls) -> frozenset[str]:
        """The optional hooks this class overrides."""
        return frozenset(h for h in HOOKS if getattr(cls, h) is not getattr(Method, h))


_METHODS: dict[str, type[Method]] = {}
_DISCOVERED: set[str] = set()


def register_method(name: str):
    """Class decorator: make ``cls`` available as ``name`` in suites."""

    def wrap(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}): {cls!r} is not a Method subclass")
        config = cls.__dict__.get("Config", cls.Config)
        if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):
            raise TypeError(f"@register_method({name!r}): {cls.__name__}.Config must be a frozen dataclass")
        old = _METHODS.get(name)
        # Re-registering the same class (a module imported twice, e.g. as __main__) is harmless.
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"method {name!r} registered twice: {old.__module__}.{old.__qualname__} and "
                             f"{cls.__module__}.{cls.__qualname__}")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def discover(package: str = "methods") -> None:
    """Import every module of ``package`` once, so their ``@register_method`` run."""
    if package in _DISCOVERED:
        return
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{info.name}")
    _DISCOVERED.add(package)


def get_method(name: str, package: str = "methods") -> type[Method]:
    if name not in _METHODS:
        discover(package)
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; registered: {', '.join(sorted(_METHODS)) or 'none'}")
    return _METHODS[name]


def is_registered(name: str, package: str = "methods") -> bool:
    if name not in _METHODS:
        discover(package)
    return name in _METHODS


def list_methods(package: str = "methods") -> dict[str, type[Method]]:
    discover(package)
    return dict(sorted(_METHODS.items()))


def make_config(method: str, overrides: dict | None = None, variant: str = "default"):
    """The method's default ``Config`` with a variant's ``overrides`` applied (nested for dataclass fields)."""
    cls = get_method(method)
    return _override(cls.Config(), overrides or {}, f"method {method!r}, variant {variant!r}", "")


def apply_hparams(method: str, config, hparams: dict, dataset: str | None = None):
    """The profile's hyper-parameters over a variant's ``config``.

    ``recipe`` (default | paper): ``paper`` applies the class's ``PAPER`` overrides (its entry for
    ``dataset`` when ``PAPER`` is keyed by dataset; a method without ``PAPER`` keeps its defaults).
    Every other key sets every field of that name, at the top level or in a nested dataclass config
    (``epochs`` reaches B-I's ``bmn.epochs`` and STALE's ``epochs`` alike). hparams are suite-wide and
    not every method has every key, so a key that names no field anywhere is ignored.
    """
    hparams = dict(hparams or {})
    recipe = hparams.pop("recipe", "default")
    if recipe not in RECIPES:
        raise ConfigError(f"method {method!r}: unknown recipe {recipe!r} ({' | '.join(RECIPES)})")
    if recipe == "paper":
        config = _override(config, _paper(method, dataset), f"method {method!r}, recipe 'paper'", "")
    return _set_everywhere(config, hparams, f"method {method!r}, hparams", "")


def _paper(method: str, dataset: str | None = None) -> dict:
    """The class's ``PAPER`` for ``dataset`` as plain overrides (dataclass instances become dicts)."""
    paper = get_method(method).PAPER
    if paper and set(paper) <= set(PAPER_DATASETS):
        if dataset not in paper:
            raise ConfigError(f"method {method!r}: recipe 'paper' is per dataset ({', '.join(paper)}), "
                              f"got dataset {dataset!r}")
        paper = paper[dataset]
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in paper.items()}


def _set_everywhere(config, values: dict, where: str, prefix: str):
    """Set every field named in ``values``, in ``config`` and in its nested dataclass configs."""
    changes = {}
    for f in dataclasses.fields(config):
        current = getattr(config, f.name)
        if f.name in values:
            changes[f.name] = (_override(current, values[f.name], where, f"{prefix}{f.name}.")
                               if dataclasses.is_dataclass(current)
                               else _coerce(current, values[f.name], where, prefix + f.name))
        elif dataclasses.is_dataclass(current):
            changes[f.name] = _set_everywhere(current, values, where, f"{prefix}{f.name}.")
    return dataclasses.replace(config, **changes)


def config_dict(config) -> dict:
    """A config as plain JSON-able data (tuples become lists), for job specs and records."""
    return dataclasses.asdict(config)


def _override(config, overrides: dict, where: str, prefix: str):
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: overrides of {prefix.rstrip('.') or 'the config'} must be a mapping, got {overrides!r}")
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown config key {prefix + key!r} (known: {', '.join(fields)})")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _override(current, value, where, f"{prefix}{key}.")
        else:
            changes[key] = _coerce(current, value, where, prefix + key)
    return dataclasses.replace(config, **changes)


def _coerce(default: Any, value: Any, where: str, key: str) -> Any:
    """YAML -> field type for the cases YAML gets wrong: '1e-4' is a string, lists for tuples."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float) and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            ok = False
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        return tuple(value) if isinstance(value, (list, tuple)) else _fail(where, key, default, value)
    else:
        ok = isinstance(value, type(default))
    return value if ok else _fail(where, key, default, value)


def _fail(where: str, key: str, default: Any, value: Any):
    raise ConfigError(f"{where}: config key {key!r} expects {type(default).__name__} like {default!r}, got {value!r}")
