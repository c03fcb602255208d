"""Suites: YAML validation, profiles, expansion into deduplicated jobs, key stability."""
from __future__ import annotations

from pathlib import Path

import yaml
import pytest

from benchmark.harness import registry
from benchmark.harness.report import paper_values
from benchmark.harness.suite import (SuiteError, cells, code_version, data_identity, job_key, load_suite, plan,
                                     spec_hash, sha256, canonical_json)
from harness_toy import write_suite


@pytest.fixture(autouse=True)
def toy_only(monkeypatch):
    """Only the toy method is registered: plans do not depend on what other helpers put in methods/."""
    import harness_toy  # noqa: F401

    monkeypatch.setattr(registry, "_METHODS", {"toy": registry._METHODS["toy"]})
    monkeypatch.setattr(registry, "_DISCOVERED", {"methods"})
    monkeypatch.setenv("ZSTAD_CODE_VERSION", "test")


# --- the real suite --------------------------------------------------------------------------

def test_zs_activitynet_profiles_expand_to_the_papers_tables():
    smoke, default = load_suite("zs_activitynet", "smoke"), load_suite("zs_activitynet", "default")
    assert [t.name for t in default.tables] == [
        "table1_zero_shot", "table2_closed_set", "table3_error_propagation", "table4_representation_masking",
        "table5_text_encoder", "table6_temporal_model", "table3b_error_decomposition", "proposals_unseen",
        "tifad_ablations", "protocol_audit_since_stale", "protocol_audit"]
    assert smoke.data == {"source": "synthetic", "synthetic": {"profile": "smoke", "seed": 0}, "real": {"feature_format": "clip_vitb16"}}
    assert smoke.table("table1_zero_shot").indices == (0,) and default.table("table1_zero_shot").indices == tuple(range(10))
    # the ablations run the first 5 of the profile's splits ({first: 5}): all of smoke's one
    for name in ("table4_representation_masking", "table5_text_encoder", "table6_temporal_model", "protocol_audit"):
        assert (default.table(name).indices, smoke.table(name).indices) == (tuple(range(5)), (0,))
    for name in ("tifad_ablations", "protocol_audit_since_stale"):  # the slowest method's: the first 3
        assert (default.table(name).indices, smoke.table(name).indices) == (tuple(range(3)), (0,))
    jobs = plan(default)
    t1 = [j for j in jobs if j.spec["method"] == "stale" and j.spec["variant"] == "default"
          and j.spec["protocol"] == default.protocol]
    assert sorted((j.spec["setting"], j.spec["split"]["index"]) for j in t1) == sorted(
        [("closed", 0)] + [(s, i) for s in ("75/25", "50/50") for i in range(10)])
    assert len({j.key for j in jobs}) == len(jobs)


SUITES = sorted(p.stem for p in (Path(registry.__file__).parents[1] / "suites").glob("*.yaml"))


@pytest.mark.parametrize("name", SUITES)
def test_every_paper_entry_of_every_suite_exists_in_its_reference_file(name):
    suite = load_suite(name, "default")
    reference = yaml.safe_load(suite.paper_reference.read_text())
    for table, row, setting, _ in cells(suite):
        if row.paper:
            values = paper_values(reference, row.paper, setting, suite.dataset)
            assert values is not None and len(values) == len(table.paper_metrics), (table.name, row.label)
            if isinstance(row.paper[0], tuple):  # one path per metric: each must reach a number
                assert all(v is not None for v in values), (table.name, row.label, values)


def test_paper_paths_index_lists_and_can_give_one_path_per_metric(tmp_path):
    reference = {"t2": {"Base": [69.3, 71.5, 71.9], "Novel": [57.0, 57.0, 57.2]},
                 "t3": [{"mAP": [13.55, 26.02]}, {"mAP": [70.03, 45.67]}]}
    assert paper_values(reference, ("t3", 1, "mAP"), "s", "d") == [70.03, 45.67]
    assert paper_values(reference, (("t2", "Base", 2), ("t2", "Novel", -1)), "s", "d") == [71.9, 57.2]
    assert paper_values(reference, (("t2", "Base", 5), ("t2", "Novel", 0)), "s", "d") == [None, 57.0]  # out of range
    assert paper_values(reference, ("t2", 0), "s", "d") is None  # an index into a mapping
    with pytest.raises(SuiteError, match=r"rows\[0\]\.paper: expected a key path"):
        load_suite(write_suite(tmp_path / "s.yaml", rows=[{"method": "toy", "paper": [["a"], "b"]}]))


def test_paper_profile_needs_real_data_and_lists(tmp_path):
    with pytest.raises(SuiteError) as e:
        load_suite("zs_activitynet", "paper")
    assert "\n" not in str(e.value) and "zs_activitynet.yaml: data.real:" in str(e.value)
    ann = tmp_path / "gt.json"
    ann.write_text("{}")
    (tmp_path / "lists").mkdir()
    over = {"data": {"source": "real", "real": {"annotations": str(ann), "features": str(tmp_path)}},
            "splits": {"lists": "imported", "lists_dir": str(tmp_path / "lists")}}
    suite = load_suite("zs_activitynet", "paper", over)
    job = plan(suite)[0]
    assert job.spec["data"]["annotations"] == str(ann) and job.spec["hparams"] == {"recipe": "paper"}
    before = job.key
    ann.write_text('{"changed": 1}')  # same path, other bytes: another data identity, another job
    assert plan(load_suite("zs_activitynet", "paper", over))[0].key != before


# --- expansion, dedup, keys ------------------------------------------------------------------

def test_identical_configs_under_two_names_run_once(tmp_path):
    path = write_suite(tmp_path / "s.yaml", variants={"wide": {"hidden": 16}, "same": {"hidden": 8}},
                       settings=("75/25", "50/50", "closed"))
    jobs = plan(load_suite(path))
    # 2 configurations x (3 + 3 splits + 1 closed-set run)
    assert len(jobs) == 14
    assert len({j.key for j in jobs}) == 14
    merged = next(j for j in jobs if j.label == "toy/default/75/25/split0/seed0")
    assert merged.labels == ("toy/default/75/25/split0/seed0", "toy/same/75/25/split0/seed0")
    assert {j.spec["split"]["index"] for j in jobs if j.spec["setting"] == "closed"} == {0}


def test_key_depends_on_config_data_and_code_not_on_names(tmp_path, monkeypatch):
    key = lambda p, **kw: {j.label: j for j in plan(load_suite(write_suite(tmp_path / p, **kw)))}
    base = key("a.yaml", variants={"wide": {"hidden": 16}})
    assert key("a.yaml", variants={"wide": {"hidden": 16}}).keys() == base.keys()
    again = key("b.yaml", variants={"wide": {"hidden": 16}})
    assert {l: j.key for l, j in again.items()} == {l: j.key for l, j in base.items()}  # stable
    renamed = key("c.yaml", variants={"broad": {"hidden": 16}})
    assert renamed["toy/broad/75/25/split1/seed0"].key == base["toy/wide/75/25/split1/seed0"].key
    other = key("d.yaml", variants={"wide": {"hidden": 32}})
    assert other["toy/wide/75/25/split1/seed0"].key != base["toy/wide/75/25/split1/seed0"].key
    proto = key("e.yaml", variants={"wide": {"hidden": 16}}, protocol={"tiou": "0.5,0.75,0.95"})
    assert proto["toy/default/75/25/split0/seed0"].key != base["toy/default/75/25/split0/seed0"].key
    monkeypatch.setenv("ZSTAD_CODE_VERSION", "other")
    recoded = key("a.yaml", variants={"wide": {"hidden": 16}})["toy/wide/75/25/split1/seed0"]
    assert recoded.key != base["toy/wide/75/25/split1/seed0"].key
    assert recoded.spec_hash == base["toy/wide/75/25/split1/seed0"].spec_hash  # reports still find it


def test_key_normalisation_is_pinned():
    """A change in how specs are hashed would orphan every stored result: it must be deliberate."""
    spec = {"dataset": "d", "data": {"source": "synthetic", "profile": "smoke", "seed": 0}, "setting": "75/25",
            "split": {"index": 2, "lists": "generated", "seed": 0}, "method": "m", "variant": "any name",
            "overrides": {"x": 1}, "config": {"x": 1, "y": [0.5]}, "seed": 0, "hparams": {}, "protocol": {}}
    h = spec_hash(spec, data_identity(spec))
    assert h == sha256(canonical_json({k: v for k, v in spec.items() if k not in ("variant", "overrides")})
                       + '\nsynthetic:{"profile":"smoke","seed":0}')
    assert job_key(h, "v1") == sha256(f"{h}\nv1")[:16]
    assert job_key(h, "v1") == "2a1b8e05b2ce1e97"


def test_unregistered_methods_are_planned_but_not_available(tmp_path):
    path = write_suite(tmp_path / "s.yaml", rows=[{"method": "toy"}, {"method": "ghost"}], methods={
        "toy": {}, "ghost": {"variants": {"big": {"size": 3}}}})
    jobs = plan(load_suite(path))
    assert {j.spec["method"]: j.available for j in jobs} == {"toy": True, "ghost": False}
    assert all(j.spec["config"] is None for j in jobs if j.spec["method"] == "ghost")


# --- validation: one line naming the file and the key ----------------------------------------

@pytest.mark.parametrize("change, fragment", [
    ({"colour": "red"}, "top level: unknown key 'colour'"),
    ({"splits": {"settings": ["80/20"]}}, "splits.settings: '80/20' is not one of"),
    ({"rows": [{"method": "toy", "variant": "nope"}]}, "tables.t1.rows[0].variant: method 'toy' has no variant 'nope'"),
    ({"rows": [{"method": "ghost"}]}, "tables.t1.rows[0].method: 'ghost' is not in methods"),
    ({"data": {"source": "tape"}}, "data.source: 'tape' is not one of synthetic, real"),
    ({"splits": {"lists": "imported"}}, "splits.lists_dir: imported split lists need a folder"),
    ({"seeds": [0, -1]}, "seeds: expected a non-empty list of non-negative integers"),
])
def test_bad_suites_fail_with_one_line_naming_file_and_key(tmp_path, change, fragment):
    rows = change.pop("rows", None)
    path = write_suite(tmp_path / "bad.yaml", rows=rows, **change)
    with pytest.raises(SuiteError) as e:
        plan(load_suite(path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path)) and fragment in msg, msg


def test_unknown_profile_and_variant_key(tmp_path):
    path = write_suite(tmp_path / "s.yaml", variants={"typo": {"hiden": 3}})
    with pytest.raises(SuiteError, match="no profile 'paper'"):
        load_suite(path, "paper")
    with pytest.raises(registry.ConfigError, match="method 'toy', variant 'typo': unknown config key 'hiden'"):
        plan(load_suite(path))


def test_profiles_deep_merge(tmp_path):
    path = write_suite(tmp_path / "s.yaml", hparams={"epochs": 5, "lr": 0.1},
                       profiles={"smoke": {"hparams": {"epochs": 1}, "splits": {"indices": [1]}}, "default": {}})
    suite = load_suite(path, "smoke")
    assert suite.hparams == {"epochs": 1, "lr": 0.1}
    assert suite.splits["settings"] == ["75/25"] and suite.table("t1").indices == (1,)


# --- code version ----------------------------------------------------------------------------

def test_code_version_follows_code_but_not_suites_or_plots(tmp_path, monkeypatch):
    monkeypatch.delenv("ZSTAD_CODE_VERSION")
    for rel in ("benchmark/a.py", "benchmark/suites/s.yaml", "benchmark/evaluation/plots.py", "methods/m.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    v1 = code_version(tmp_path)
    (tmp_path / "benchmark/suites/s.yaml").write_text("changed: true\n")
    (tmp_path / "benchmark/evaluation/plots.py").write_text("x = 2\n")  # draws figures, changes no number
    (tmp_path / "benchmark/__pycache__").mkdir()
    (tmp_path / "benchmark/__pycache__/a.cpython-311.pyc").write_bytes(b"\0")
    assert code_version(tmp_path) == v1
    (tmp_path / "methods/m.py").write_text("x = 2\n")  # an uncommitted edit is a new version
    assert code_version(tmp_path) != v1
    monkeypatch.setenv("ZSTAD_CODE_VERSION", "pinned")
    assert code_version(tmp_path) == "pinned"
