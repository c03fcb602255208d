import os
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest

from benchmark.data.features import (CsvDirStore, FeatureError, H5Store, NpyDirStore, ScannedFeatures, load_features,
                                     open_feature_store, rescale, scan_features)

RNG = np.random.default_rng(0)


def raises_one_line(*fragments):
    """pytest.raises(FeatureError) that also checks the message is one line and names each fragment."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(FeatureError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self.ctx.__exit__(*exc)
            msg = str(self.info.value)
            assert "\n" not in msg, msg
            for f in fragments:
                assert str(f) in msg, (f, msg)
            return suppressed

    return _Check()


def write_npy_dir(root, arrays: dict[str, np.ndarray]):
    root.mkdir(exist_ok=True)
    for name, x in arrays.items():
        np.save(root / f"{name}.npy", x)
    return root


def write_csv(path, x, header=True):
    with open(path, "w") as f:
        if header:
            f.write(",".join(f"f{i}" for i in range(x.shape[1])) + "\n")
        for row in x:
            f.write(",".join(repr(float(v)) for v in row) + "\n")


# ---------------------------------------------------------------- stores


def test_npy_store_reads_every_float_dtype_as_float32(tmp_path):
    x = RNG.standard_normal((7, 4))
    store = NpyDirStore(write_npy_dir(tmp_path / "f", {f"v_{d}": x.astype(d) for d in ("float16", "float32", "float64")}))
    assert store.ids() == ["float16", "float32", "float64"]
    for d in ("float16", "float32", "float64"):
        y = store.read(d)
        assert y.dtype == np.float32 and y.shape == (7, 4)
        np.testing.assert_array_equal(y, x.astype(d).astype(np.float32))


def test_prefixed_store_maps_ids_including_real_ids_starting_with_v(tmp_path):
    # the ActivityNet CLIP release: every file is v_<id>; the real id "v_real" is stored as v_v_real
    a, b = np.ones((3, 2)), np.full((3, 2), 2.0)
    store = NpyDirStore(write_npy_dir(tmp_path / "f", {"v_abc": a, "v_v_real": b}))
    assert store.prefixed and store.ids() == ["abc", "v_real"]
    np.testing.assert_array_equal(store.read("abc"), a)
    np.testing.assert_array_equal(store.read("v_real"), b)
    assert "v_abc" not in store  # id "v_abc" would be the file v_v_abc: no fallback to video abc's file


def test_unprefixed_store_reads_ids_as_they_are(tmp_path):
    a, b = np.ones((3, 2)), np.full((3, 2), 2.0)
    store = NpyDirStore(write_npy_dir(tmp_path / "f", {"video_test_0000004": a, "v_real": b}))
    assert not store.prefixed and store.ids() == ["v_real", "video_test_0000004"]
    np.testing.assert_array_equal(store.read("video_test_0000004"), a)
    np.testing.assert_array_equal(store.read("v_real"), b)
    assert "real" not in store
    with raises_one_line(store.source, "real", "no v_ prefix"):
        store.read("real")


def test_h5_store(tmp_path):
    x = RNG.standard_normal((5, 3))
    path = tmp_path / "feats.h5"
    with h5py.File(path, "w") as f:
        f["v_abc"] = x
        f["v_def"] = x.astype(np.float16)
        f.create_group("v_group")  # not a dataset: ignored
    with H5Store(path) as store:
        assert store.ids() == ["abc", "def"]
        np.testing.assert_allclose(store.read("abc"), x.astype(np.float32))
        assert store.read("def").dtype == np.float32


def test_csv_store_reads_bsn_csv_mean_100(tmp_path):
    x = RNG.standard_normal((100, 6)).astype(np.float32)
    (tmp_path / "csv").mkdir()
    write_csv(tmp_path / "csv" / "v___c8enCfzqw.csv", x)
    store = CsvDirStore(tmp_path / "csv")
    assert store.ids() == ["__c8enCfzqw"]
    y = store.read("__c8enCfzqw")
    assert y.shape == (100, 6) and y.dtype == np.float32
    np.testing.assert_array_equal(y, x)


def test_csv_without_header_or_with_text_is_an_error(tmp_path):
    (tmp_path / "csv").mkdir()
    write_csv(tmp_path / "csv" / "noheader.csv", np.ones((4, 3)), header=False)
    (tmp_path / "csv" / "text.csv").write_text("a,b\n1.0,oops\n")
    store = CsvDirStore(tmp_path / "csv")
    with raises_one_line("noheader.csv", "video noheader", "expected a header row"):
        store.read("noheader")
    with raises_one_line("text.csv", "video text", "unreadable CSV", "could not convert"):
        store.read("text")


def test_open_feature_store_detects_the_layout(tmp_path):
    write_npy_dir(tmp_path / "npy", {"a": np.ones((2, 2))})
    (tmp_path / "csv").mkdir()
    write_csv(tmp_path / "csv" / "a.csv", np.ones((2, 2)))
    with h5py.File(tmp_path / "f.hdf5", "w") as f:
        f["a"] = np.ones((2, 2))
    assert type(open_feature_store(tmp_path / "npy")) is NpyDirStore
    assert type(open_feature_store(tmp_path / "csv")) is CsvDirStore
    h5 = open_feature_store(tmp_path / "f.hdf5")
    assert type(h5) is H5Store
    h5.close()

    write_csv(tmp_path / "npy" / "b.csv", np.ones((2, 2)))
    with raises_one_line("npy", "both"):
        open_feature_store(tmp_path / "npy")
    (tmp_path / "empty").mkdir()
    with raises_one_line("empty", "no .npy or .csv"):
        open_feature_store(tmp_path / "empty")
    with raises_one_line("nowhere"):
        open_feature_store(tmp_path / "nowhere")
    with raises_one_line("a.npy", "HDF5"):
        open_feature_store(tmp_path / "npy" / "a.npy")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all")
    with raises_one_line("bad.h5", "not a readable HDF5"):
        open_feature_store(tmp_path / "bad.h5")


# ---------------------------------------------------------------- rescale


def test_rescale_identity_when_lengths_match():
    x = RNG.standard_normal((9, 5)).astype(np.float32)
    np.testing.assert_array_equal(rescale(x, 9), x)


def test_rescale_downsampled_ramp_stays_linear():
    x = np.arange(150, dtype=np.float64)[:, None] * [1.0, -2.0]
    y = rescale(x, 100)
    # output i sits at raw position (i + 0.5) * 1.5 - 0.5
    expected = ((np.arange(100) + 0.5) * 1.5 - 0.5)[:, None] * [1.0, -2.0]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-4)


def test_rescale_upsampled_ramp_is_linear_inside_and_flat_at_the_ends():
    y = rescale(np.array([[0.0], [1.0], [2.0], [3.0]]), 8)[:, 0]
    np.testing.assert_allclose(y, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)


def test_rescale_single_row_repeats_it():
    np.testing.assert_array_equal(rescale(np.array([[1.0, 2.0]]), 4), [[1, 2]] * 4)


@pytest.mark.parametrize("t_raw,T", [(150, 100), (37, 100), (3000, 256), (100, 100), (2, 7)])
def test_rescale_matches_torch_interpolate_as_used_by_stale(t_raw, T):
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((t_raw, 6)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x.T[None].copy()), size=T, mode="linear", align_corners=False)
    np.testing.assert_allclose(rescale(x, T), ref[0].numpy().T, atol=1e-5)


def test_rescale_rejects_empty_input():
    with pytest.raises(ValueError, match="T_raw >= 1"):
        rescale(np.zeros((0, 3)), 5)


# ---------------------------------------------------------------- load_features


@pytest.fixture
def anet_dir(tmp_path):
    arrays = {"v_a": RNG.standard_normal((150, 8)).astype(np.float32),
              "v_b": RNG.standard_normal((97, 8)),
              "v_c": RNG.standard_normal((230, 8)).astype(np.float16),
              "v_v_d": RNG.standard_normal((100, 8)).astype(np.float32)}
    return write_npy_dir(tmp_path / "feats", arrays), arrays


def test_load_features_stacks_rescaled_videos_in_order(anet_dir):
    root, arrays = anet_dir
    store = NpyDirStore(root)
    out = load_features(store, ["c", "v_d", "a"], 100)
    assert out.shape == (3, 100, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], rescale(arrays["v_c"], 100))
    np.testing.assert_array_equal(out[1], arrays["v_v_d"])
    np.testing.assert_array_equal(out[2], rescale(arrays["v_a"], 100))
    np.testing.assert_array_equal(load_features(store, ["c", "v_d", "a"], 100, n_jobs=2), out)


def test_load_features_from_h5_and_csv(tmp_path):
    x = RNG.standard_normal((12, 3)).astype(np.float32)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["vid"] = x
    (tmp_path / "csv").mkdir()
    write_csv(tmp_path / "csv" / "vid.csv", x)
    with open_feature_store(tmp_path / "f.h5") as h5:
        np.testing.assert_allclose(load_features(h5, ["vid"], 6)[0], rescale(x, 6))
    np.testing.assert_allclose(load_features(open_feature_store(tmp_path / "csv"), ["vid"], 6)[0], rescale(x, 6), atol=1e-6)


def test_missing_videos_are_counted_and_listed_in_one_line(anet_dir):
    store = NpyDirStore(anet_dir[0])
    wanted = ["a"] + [f"gone{i}" for i in range(8)]
    with raises_one_line(store.source, "8 of 9 videos", "gone0", "gone4", "v_<id>") as info:
        load_features(store, wanted, 100)
    assert "gone5" not in str(info.value)


@pytest.mark.parametrize("bad,fragments", [
    (np.array([[0.0, np.nan], [1.0, 2.0]]), ["NaN or inf", "1 of 4"]),
    (np.array([[0.0, np.inf], [-np.inf, 2.0]]), ["NaN or inf", "2 of 4"]),
    (np.array([[1e39, 0.0], [1.0, 2.0]]), ["NaN or inf", "as float32"]),  # overflows float32
    (np.zeros((0, 2)), ["T_raw = 0"]),
    (np.zeros(2), ["[T_raw, D]", "(2,)"]),
    (np.zeros((3, 2, 1)), ["[T_raw, D]", "(3, 2, 1)"]),
    (np.zeros((3, 0)), ["D = 0"]),
    (np.array([["x", "y"]]), ["numeric", "<U1"]),
])
def test_bad_features_name_the_file_and_video(tmp_path, bad, fragments):
    root = write_npy_dir(tmp_path / "f", {"v_good": np.ones((4, 2)), "v_bad": bad})
    with raises_one_line(root / "v_bad.npy", "video bad", *fragments):
        load_features(NpyDirStore(root), ["good", "bad"], 5)


def test_bad_h5_dataset_names_file_and_dataset(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["good"] = np.ones((4, 2))
        f["bad"] = np.array([[np.nan, 1.0]])
        f["scalar"] = 3.0
    with H5Store(tmp_path / "f.h5") as store:
        with raises_one_line("f.h5:/bad", "video bad", "NaN"):
            load_features(store, ["good", "bad"], 5)
        with raises_one_line("f.h5:/scalar", "video scalar", "shape ()"):
            load_features(store, ["good", "scalar"], 5)


def test_empty_csv_files_name_the_file(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "empty.csv").write_text("")
    (tmp_path / "csv" / "header_only.csv").write_text("f0,f1\n")
    store = CsvDirStore(tmp_path / "csv")
    with raises_one_line("empty.csv", "video empty", "unreadable CSV"):
        load_features(store, ["empty"], 5)
    with raises_one_line("header_only.csv", "video header_only", "T_raw = 0"):
        load_features(store, ["header_only"], 5)


def test_inconsistent_feature_dimension(tmp_path):
    root = write_npy_dir(tmp_path / "f", {"a": np.ones((4, 3)), "b": np.ones((4, 3)), "c": np.ones((4, 5))})
    for n_jobs in (1, 2):
        with raises_one_line(root, "video c", "D = 5", "video a has D = 3"):
            load_features(NpyDirStore(root), ["a", "b", "c"], 5, n_jobs=n_jobs)


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY garbage", None])
def test_corrupt_npy_is_named(tmp_path, content):
    root = write_npy_dir(tmp_path / "f", {"a": np.ones((4, 3)), "b": np.ones((40, 30))})
    path = root / "b.npy"
    # None: a real file cut short, as by an interrupted copy
    path.write_bytes(path.read_bytes()[:200] if content is None else content)
    with raises_one_line(path, "video b", "unreadable .npy"):
        load_features(NpyDirStore(root), ["a", "b"], 5)


def test_file_removed_after_listing_is_named(tmp_path):
    root = write_npy_dir(tmp_path / "f", {"a": np.ones((4, 3)), "b": np.ones((4, 3))})
    store = NpyDirStore(root)
    (root / "b.npy").unlink()
    with raises_one_line(root / "b.npy", "video b", "FileNotFoundError"):
        load_features(store, ["a", "b"], 5)
    with raises_one_line(root / "b.npy", "cannot stat"):
        load_features(store, ["a", "b"], 5, cache_dir=tmp_path / "cache")


def test_pickled_object_array_is_refused(tmp_path):
    root = tmp_path / "f"
    root.mkdir()
    np.save(root / "a.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with raises_one_line(root / "a.npy", "video a", "unreadable .npy", "allow_pickle"):
        load_features(NpyDirStore(root), ["a"], 5)


def test_single_row_videos_are_repeated_with_one_counted_warning(tmp_path):
    root = write_npy_dir(tmp_path / "f", {"a": np.ones((4, 2)), "b": np.array([[3.0, 4.0]]), "c": np.array([[5.0, 6.0]])})
    with pytest.warns(UserWarning, match=r"2 videos have one feature row \(T_raw = 1\).*T = 6: b, c") as record:
        out = load_features(NpyDirStore(root), ["a", "b", "c"], 6, cache_dir=tmp_path / "cache")
    assert len(record) == 1
    np.testing.assert_array_equal(out[1], [[3.0, 4.0]] * 6)
    # the cache keeps the count, so a warm run still says it
    with pytest.warns(UserWarning, match="2 videos have one feature row"):
        load_features(NpyDirStore(root), ["a", "b", "c"], 6, cache_dir=tmp_path / "cache")


def test_empty_request_is_an_error(anet_dir):
    with raises_one_line("no videos"):
        load_features(NpyDirStore(anet_dir[0]), [], 100)


# ---------------------------------------------------------------- cache


class CountingReads:
    def __init__(self, monkeypatch):
        self.n = 0
        load = NpyDirStore._load

        def counted(store, name):
            self.n += 1
            return load(store, name)

        monkeypatch.setattr(NpyDirStore, "_load", counted)


def test_warm_load_reads_no_raw_file(anet_dir, tmp_path, monkeypatch):
    root, _ = anet_dir
    reads = CountingReads(monkeypatch)
    ids = ["a", "b", "c", "v_d"]
    cold = load_features(NpyDirStore(root), ids, 100, cache_dir=tmp_path / "cache")
    assert reads.n == 4
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    warm = load_features(NpyDirStore(root), ids, 100, cache_dir=tmp_path / "cache")
    assert reads.n == 4
    np.testing.assert_array_equal(warm, cold)
    # a different T or id list is a different entry
    load_features(NpyDirStore(root), ids[:2], 100, cache_dir=tmp_path / "cache")
    assert reads.n == 6


def test_warm_load_survives_unreadable_raw_files(anet_dir, tmp_path, monkeypatch):
    root, _ = anet_dir
    cold = load_features(NpyDirStore(root), ["a", "b"], 50, cache_dir=tmp_path / "cache")

    def refuse(store, name):
        raise AssertionError(f"raw file {name} opened on a cache hit")

    monkeypatch.setattr(NpyDirStore, "_load", refuse)
    np.testing.assert_array_equal(load_features(NpyDirStore(root), ["a", "b"], 50, cache_dir=tmp_path / "cache"), cold)


def test_changed_file_invalidates_the_cache_and_drops_the_old_entry(anet_dir, tmp_path, monkeypatch):
    root, arrays = anet_dir
    cache = tmp_path / "cache"
    load_features(NpyDirStore(root), ["a", "b"], 50, cache_dir=cache)
    old = set(cache.iterdir())
    np.save(root / "v_a.npy", arrays["v_a"] * 2)
    st = os.stat(root / "v_a.npy")
    os.utime(root / "v_a.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size: mtime must decide
    reads = CountingReads(monkeypatch)
    out = load_features(NpyDirStore(root), ["a", "b"], 50, cache_dir=cache)
    assert reads.n == 2
    np.testing.assert_allclose(out[0], rescale(arrays["v_a"] * 2, 50))
    new = set(cache.iterdir())
    assert len(new) == 2 and not (old & new)


def test_corrupt_cache_is_rebuilt_with_a_warning(anet_dir, tmp_path):
    root, _ = anet_dir
    cache = tmp_path / "cache"
    cold = load_features(NpyDirStore(root), ["a", "b"], 50, cache_dir=cache)
    (entry,) = cache.glob("*.npy")
    entry.write_bytes(b"junk")
    with pytest.warns(UserWarning, match="unreadable feature cache"):
        again = load_features(NpyDirStore(root), ["a", "b"], 50, cache_dir=cache)
    np.testing.assert_array_equal(again, cold)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_features(NpyDirStore(root), ["a", "b"], 50, cache_dir=cache)


def test_h5_cache_key_follows_the_file(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.ones((4, 2))
    with H5Store(path) as s:
        key = s.fingerprint(["a"])
        assert s.fingerprint(["a"]) == key
    with h5py.File(path, "a") as f:
        f["b"] = np.ones((4, 2))
    with H5Store(path) as s:
        assert s.fingerprint(["a"]) != key


def test_no_progress_bar_when_not_a_tty(anet_dir, capsys):
    load_features(NpyDirStore(anet_dir[0]), ["a", "b"], 10)
    assert capsys.readouterr().err == ""


def test_modules_do_not_import_torch():
    code = "import sys, benchmark.data.features, benchmark.data.targets; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_features_script_runs_small(tmp_path, capsys):
    from benchmark.perf import bench_features

    bench_features.main(["--videos", "6", "--dim", "4", "--T", "10", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "(6, 10, 4)" in out and "cold (empty harness cache)" in out and "warm (cache hit)" in out
    bench_features.main(["--videos", "6", "--dim", "4", "--T", "10", "--out", str(tmp_path)])
    assert "reusing" in capsys.readouterr().out


# ---------------------------------------------------------------- the run's scan


def test_scan_serves_each_view_exactly_what_load_features_gives(tmp_path):
    arrays = {f"v_{i}": RNG.standard_normal((int(RNG.integers(1, 40)), 6)).astype(np.float32) for i in range(12)}
    store = NpyDirStore(write_npy_dir(tmp_path / "f", arrays))
    scan = ScannedFeatures(scan_features(store, [str(i) for i in range(12)], 10, tmp_path / "cache"))
    for ids in (["3", "0", "11"], ["5"], [str(i) for i in reversed(range(12))]):
        np.testing.assert_array_equal(scan.take(ids), load_features(store, ids, 10))
    with raises_one_line("not in the run's feature scan", "e.g. 12"):
        scan.take(["1", "12"])


def test_a_rerun_finds_the_scan_by_fingerprint_and_reads_no_file(tmp_path):
    root = write_npy_dir(tmp_path / "f", {"a": np.ones((4, 3)), "b": np.ones((5, 3))})
    first = scan_features(NpyDirStore(root), ["a", "b"], 5, tmp_path / "cache")
    stat = (root / "b.npy").stat()
    np.save(root / "b.npy", np.full((5, 3), np.nan))  # same size; the old times put back: same fingerprint
    os.utime(root / "b.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert scan_features(NpyDirStore(root), ["b", "a"], 5, tmp_path / "cache") == first  # not read again
    os.utime(root / "b.npy")  # a changed file is scanned again, and its NaN found
    with raises_one_line(root / "b.npy", "video b", "NaN"):
        scan_features(NpyDirStore(root), ["a", "b"], 5, tmp_path / "cache")
