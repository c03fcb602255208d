"""Bad input stops every entry point with one line and exit code 2, a dry run exactly as a run.

The cases of the issue "Bad input fails fast, in one line, on every entry point": a binary
annotation file, a text tower whose weights are not on this machine, the flags and data a dry run
used to wave through, and unusable feature files caught before the first job.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import benchmark
import methods
import run_all
from benchmark import cli
from benchmark.errors import InputError, error_line
from benchmark.text.tiny import make_tiny_clip

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f"action {c}" for c in "abcdefgh"]


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bin") / "not_text.json"
    path.write_bytes(bytes(range(256)) * 4)
    return path


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    """A small ActivityNet-format dataset (8 classes, 24 training / 16 validation videos), 64-d
    v_<id>.npy features and a 64-d text tower from a local checkpoint."""
    root = tmp_path_factory.mktemp("layout")
    rng = np.random.default_rng(0)
    database = {}
    for subset, per_class in (("training", 3), ("validation", 2)):
        for c, name in enumerate(CLASSES):
            for i in range(per_class):
                database[f"{subset[0]}{c}{i}"] = {"subset": subset, "duration": 60.0,
                                                  "annotations": [{"segment": [10.0, 40.0], "label": name}]}
    (root / "annotations.json").write_text(json.dumps({"version": "test", "taxonomy": [], "database": database}))
    (root / "features").mkdir()
    for vid in database:
        np.save(root / "features" / f"v_{vid}.npy", rng.standard_normal((int(rng.integers(20, 80)), 64)).astype(np.float32))
    clip = make_tiny_clip(root / "clip", seed=0, embed_dim=64)
    return root, clip


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ------------------------------------------------------------------ every command, one line

def bad_arguments(tmp_path: Path, binary: Path) -> dict[str, list[str]]:
    """A bad argument for every subcommand of ``python -m benchmark``."""
    good_gt = str(ROOT.parent / "shared" / "data" / "thumos14" / "thumos14.json")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    return {
        "dataset-info": ["--annotations", str(binary)],
        "make-splits": ["--annotations", str(binary), "--dataset", "X", "--out", str(tmp_path)],
        "import-splits": ["--annotations", good_gt, "--lists", str(tmp_path / "none"), "--dataset", "THUMOS14"],
        "synth": ["--out", str(a_file)],  # a file where the benchmark's folder should go
        "evaluate": ["--gt", good_gt, "--pred", str(binary), "--subset", "Test"],
        "evaluate-boxes": ["--gt", str(tmp_path / "missing.csv"), "--pred", str(binary)],
        "proposal-recall": ["--gt", str(tmp_path / "missing.json"), "--pred", str(binary), "--subset", "Test"],
        "run": ["--suite", "zs_activitynet", "--profile", "smoke", "--gpus", "x,y", "--dry-run",
                "--results-dir", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "p")],
        "report": ["--suite", "no_such_suite", "--results-dir", str(tmp_path / "r")],
        "score": ["--suite", "zs_thumos14", "--profile", "smoke", "--name", "x", "--predictions", str(a_file),
                  "--results-dir", str(tmp_path / "r")],  # a file where the predictions folder should be
        "export": ["--suite", "zs_thumos14", "--method", "stale", "--out", str(tmp_path / "e"),
                   "--results-dir", str(tmp_path / "r")],  # nothing has run

        "extract-features": ["--videos", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--fps", "1"],
        "list-methods": ["--no-such-flag"],  # takes no input: only argparse can refuse it
    }


def test_every_subcommand_answers_a_bad_argument_in_one_line(tmp_path, binary, capsys):
    subcommands = cli.build_parser()._subparsers._group_actions[0].choices
    cases = bad_arguments(tmp_path, binary)
    assert set(cases) == set(subcommands), "a new subcommand needs a bad-argument case here"
    for command, argv in cases.items():
        try:
            code = cli.main([command, *argv])
        except SystemExit as e:  # argparse's own refusal: usage + one error line
            code = e.code
            assert command == "list-methods", command
            err = capsys.readouterr().err
            assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("python -m benchmark: error: unrecognized arguments")
        else:
            one_error_line(capsys.readouterr().err)
        assert code == 2, command


def test_binary_annotation_file_is_one_line_in_a_fresh_process(binary):
    done = subprocess.run([sys.executable, "-m", "benchmark", "dataset-info", "--annotations", str(binary)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert one_error_line(done.stderr) == f"error: {binary}: not a UTF-8 JSON file (undecodable byte at offset 128)"


def test_every_error_type_of_the_project_is_an_input_error():
    """So that run_command prints it in one line: a new error class cannot leak a traceback."""
    found = []
    for package in (benchmark, methods):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name == "benchmark.__main__":
                continue
            module = importlib.import_module(info.name)
            found += [obj for obj in vars(module).values()
                      if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == module.__name__]
    assert len(found) >= 9  # InputError, the readers', the suite's, the text tower's ...
    assert [e.__qualname__ for e in found if not issubclass(e, InputError)] == []


def test_error_line_is_one_line():
    assert error_line(InputError("a\nb")) == "a; b"
    assert error_line(FileNotFoundError(2, "No such file or directory", "/x/y")) == "/x/y: No such file or directory"
    assert error_line(KeyError("k")) == "KeyError: 'k'"


# ------------------------------------------------------------------ run_all.py and its dry run

def run_all_py(tmp_path: Path, *flags: str) -> int:
    return run_all.main(["--suite", "zs_activitynet", "--profile", "smoke", "--only", "clip_training_free/*",
                         "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports"), *flags])


def benchmark_run(tmp_path: Path, *flags: str) -> int:
    """``python -m benchmark run``: run_all.py's flags and the SLURM and timeout ones."""
    return cli.main(["run", "--suite", "zs_activitynet", "--profile", "smoke", "--only", "clip_training_free/*",
                     "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports"), *flags])


def layout_flags(root: Path, clip=None, features: Path | None = None) -> list[str]:
    flags = ["--annotations", str(root / "annotations.json"), "--features", str(features or root / "features")]
    return flags + (["--clip-model", clip.model, "--clip-pretrained", clip.pretrained] if clip else [])


def assert_same_stop(tmp_path, capsys, flags, expected: str, entry=run_all_py) -> str:
    """A dry run and a run stop on the same line, exit 2, and no job has run. Returns the line."""
    outcomes = []
    for dry in (["--dry-run"], []):
        code = entry(tmp_path, *flags, *dry)
        outcomes.append((code, capsys.readouterr().err))
    for code, err in outcomes:
        assert code == 2 and expected in one_error_line(err), err
    assert outcomes[0][1] == outcomes[1][1]
    assert not list((tmp_path / "results").glob("*/*/record.json"))
    return one_error_line(outcomes[0][1])


def test_missing_text_tower_weights_are_one_line(tmp_path, capsys, real_layout, monkeypatch):
    monkeypatch.delenv("ZSTAD_ALLOW_DOWNLOAD", raising=False)
    root, _ = real_layout
    assert_same_stop(tmp_path, capsys, layout_flags(root), "ViT-B-16/openai")


@pytest.mark.parametrize("flags, expected", [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--gpus", "x,y"], "--gpus x,y: not a GPU id or UUID: 'x', 'y'"),
    (["--gpus", "0,0"], "an id repeats"),
    (["--data-root", "/nonexistent/data"], "annotations not found at /nonexistent/data/activity_net.v1-3.min.json"),
    (["--backend", "slurm"], "sbatch is not on the PATH"),
])
def test_dry_run_checks_what_a_run_checks(tmp_path, capsys, flags, expected):
    assert_same_stop(tmp_path, capsys, flags, expected)


@pytest.mark.parametrize("flags, expected", [
    (["--backend", "slurm", "--submitit-cluster", "local", "--mem-gb", "-1"], "slurm setting mem_gb: expected a number >= 0.001"),
    (["--backend", "slurm", "--submitit-cluster", "local", "--time-min", "0"], "slurm setting time_min: expected an integer >= 1"),
    (["--timeout", "0"], "--timeout must be positive"),
])
def test_dry_run_checks_slurm_and_timeout_settings(tmp_path, capsys, flags, expected):
    assert_same_stop(tmp_path, capsys, flags, expected, entry=benchmark_run)


def test_empty_feature_folder_stops_the_dry_run(tmp_path, capsys, real_layout):
    root, clip = real_layout
    (tmp_path / "empty").mkdir()
    assert_same_stop(tmp_path, capsys, layout_flags(root, clip, tmp_path / "empty"), "no .npy or .csv feature files")


def test_unusable_features_are_named_before_any_job(tmp_path, capsys, real_layout):
    """NaN and truncated files among the features every job reads: one line naming them, no job run."""
    root, clip = real_layout
    features = tmp_path / "features"
    features.mkdir()
    for f in (root / "features").iterdir():
        (features / f.name).write_bytes(f.read_bytes())
    np.save(features / "v_t00.npy", np.full((30, 64), np.nan, np.float32))
    np.save(features / "v_v71.npy", np.full((30, 64), np.inf, np.float32))
    (features / "v_t31.npy").write_bytes((features / "v_t31.npy").read_bytes()[:100])
    line = assert_same_stop(tmp_path, capsys, layout_flags(root, clip, features), "3 of 40 videos have unusable features")
    for name in ("v_t00.npy: video t00: 1920 of 1920 values are NaN", "v_t31.npy: video t31: unreadable .npy",
                 "v_v71.npy: video v71: 1920 of 1920 values are NaN or inf"):
        assert name in line


def test_features_of_another_dimension_than_the_text_tower_stop_the_run(tmp_path, capsys, real_layout):
    """The training-free reference compares snippets with text embeddings as they are: 64-d features
    and a 32-d tower cannot work, and that is known before any job."""
    root, _ = real_layout
    clip = make_tiny_clip(tmp_path / "clip32", seed=0, embed_dim=32)
    line = assert_same_stop(tmp_path, capsys, layout_flags(root, clip), "clip_training_free: features are 64-d")
    assert "b1_bmn_clip: features are 64-d but the text encoder's space is 32-d" in line


def test_a_valid_dry_run_passes_and_runs_nothing(tmp_path, capsys, real_layout):
    root, clip = real_layout
    code = run_all_py(tmp_path, *layout_flags(root, clip), "--dry-run")
    assert code == 0, capsys.readouterr().err
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").glob("*/*/record.json"))


def test_best_epoch_on_test_for_a_method_that_does_not_report_epochs_stops_the_run(tmp_path, capsys):
    """The audit switch scores every epoch's model through ``context.epoch_end``: a method whose ``fit`` never calls
    it (B-II) would give no such row, which a run says before any job, naming the method."""
    suites = Path(run_all.__file__).parent / "benchmark/suites"
    suite = yaml.safe_load((suites / "zs_activitynet.yaml").read_text())
    suite["paper_reference"] = str(suites / suite["paper_reference"])
    suite["tables"]["protocol_audit"]["rows"].append({"label": "B-II, best epoch on test", "method": "b2_denseclip",
                                                      "protocol": {"best_epoch_on_test": True}})
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    code = run_all.main(["--suite", str(path), "--profile", "smoke", "--only", "b2_denseclip/*", "--dry-run",
                         "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports")])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "b2_denseclip: protocol best_epoch_on_test needs a method that reports its epochs" in line
