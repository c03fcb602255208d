"""The restricted unpickler: data round-trips, code never runs."""
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest

from benchmark.data.safe_pickle import UnsafePickleError, load_pickle
from benchmark.errors import InputError


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Custom:
    def __init__(self):
        self.x = 1


def _write(tmp_path, obj, protocol=pickle.DEFAULT_PROTOCOL, name="x.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_code_is_refused_and_does_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, {"a": [_RunsCode(marker)]}, protocol)
    with pytest.raises(UnsafePickleError) as e:
        load_pickle(path)
    assert not marker.exists()
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    assert f"refused to unpickle {os.system.__module__}.system" in message  # posix.system on Linux
    assert "only builtin containers and numpy arrays are allowed" in message


def test_a_plain_load_would_have_run_it(tmp_path):
    """The test above can fail: the same file does run code under pickle.load."""
    marker = tmp_path / "pwned"
    path = _write(tmp_path, _RunsCode(marker))
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_custom_class_is_refused(tmp_path):
    path = _write(tmp_path, [1, _Custom()])
    with pytest.raises(UnsafePickleError, match=r"refused to unpickle test_safe_pickle\._Custom"):
        load_pickle(path)


@pytest.mark.parametrize("name", ["eval", "getattr", "__import__"])
def test_dangerous_builtins_are_refused(tmp_path, name):
    path = tmp_path / "b.pkl"
    path.write_bytes(f"cbuiltins\n{name}\n(S'1'\ntR.".encode())
    with pytest.raises(UnsafePickleError, match=f"builtins.{name}"):
        load_pickle(path)


def test_codecs_encode_only_for_latin1(tmp_path):
    path = tmp_path / "c.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00rot_13\x86R.")
    with pytest.raises(InputError, match="refused to unpickle _codecs.encode with encoding 'rot_13'"):
        load_pickle(path)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_data_round_trips(tmp_path, protocol):
    data = {
        "labels": ["brush_hair", "catch", "ünïcode"],
        "tubes": {"a/v1": {0: [np.arange(10, dtype=np.float32).reshape(2, 5)]}},
        "ints": np.array([1, 2, 300], dtype=np.uint16),
        "scalar": np.float64(2.5), "n": np.uint8(7),
        "tuple": (1, 2.0, None, True), "set": {1, 2}, "frozen": frozenset({"x"}), "bytes": b"\x00\xff",
        "ordered": OrderedDict(b=1, a=2), "complex": 1 + 2j, "fortran": np.asfortranarray(np.eye(3)),
        "structured": np.zeros(2, dtype=[("video", "U5"), ("frame", np.int64)]),
    }
    got = load_pickle(_write(tmp_path, data, protocol))
    assert _same(got, data)


def _same(a, b) -> bool:
    """Equal values of the same types, arrays compared by dtype and content."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_python2_pickles(tmp_path):
    """Python 2 writes text and numpy buffers as `str` opcodes (STRING / SHORT_BINSTRING); latin-1 reads
    both: the buffer bytes 0x80-0xff survive, and py2 module names (__builtin__) map to builtins."""
    protocol0 = (b"(dp0\nS'labels'\np1\n(lp2\nS'run'\np3\naS'walk'\np4\nasS'n'\np5\nI3\n"
                 b"sS'set'\np6\nc__builtin__\nset\np7\n((lp8\nI1\natp9\nRp10\ns.")
    assert load_pickle(_write_bytes(tmp_path, protocol0)) == {"labels": ["run", "walk"], "n": 3, "set": {1}}
    # numpy 1.x under Python 2, protocol 2: np.array([1.5, -2.0]) (raw float64 buffer as a py2 str)
    buffer = np.array([1.5, -2.0]).tobytes()
    protocol2 = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87R"
                 b"(K\x01K\x02\x85cnumpy\ndtype\nq\x03U\x02f8K\x00K\x01\x87Rq\x04(K\x03U\x01<NNNJ\xff\xff\xff\xff"
                 b"J\xff\xff\xff\xffK\x00tb\x89U\x10" + buffer + b"tb.")
    got = load_pickle(_write_bytes(tmp_path, protocol2, "np2.pkl"))
    assert got.dtype == np.float64 and got.tolist() == [1.5, -2.0]


def test_real_python2_pickle(shared_data):
    """JHMDB-GT.pkl is a Python-2 protocol-0 pickle; plain pickle.load fails on it (STAD.md §2.2)."""
    path = shared_data / "jhmdb/JHMDB-GT.pkl"
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())
    raw = load_pickle(path)
    assert len(raw["gttubes"]) == 928 and raw["labels"][0] == "brush_hair"


def _write_bytes(tmp_path, data, name="py2.pkl"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_truncated_file(tmp_path):
    data = pickle.dumps({"a": np.arange(100), "b": list(range(50))}, protocol=2)
    for cut in (1, len(data) // 2, len(data) - 1):
        path = _write_bytes(tmp_path, data[:cut], f"cut{cut}.pkl")
        with pytest.raises(InputError) as e:
            load_pickle(path)
        assert str(e.value) == f"{path}: truncated pickle (ends before its STOP opcode)"


def test_empty_missing_and_garbage_files(tmp_path):
    with pytest.raises(InputError, match="truncated"):
        load_pickle(_write_bytes(tmp_path, b"", "empty.pkl"))
    with pytest.raises(InputError, match=r"nothere\.pkl: file not found"):
        load_pickle(tmp_path / "nothere.pkl")
    with pytest.raises(InputError) as e:
        load_pickle(_write_bytes(tmp_path, b"\x80\x02\xfe\xfe garbage", "garbage.pkl"))
    assert "garbage.pkl: malformed pickle" in str(e.value) and "\n" not in str(e.value)


def test_error_type_is_chosen_by_the_caller(tmp_path):
    class MyError(InputError):
        pass

    with pytest.raises(MyError):
        load_pickle(_write_bytes(tmp_path, b"\x80\x02", "cut.pkl"), MyError)
