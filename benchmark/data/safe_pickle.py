"""Read annotation pickles without running code from them.

``pickle.load`` calls whatever global a file names (``os.system`` with any argument, for one), so an
annotation pickle downloaded from somewhere is read with :func:`load_pickle`, whose unpickler admits
only what annotation files are made of: builtin containers and scalars, and numpy arrays, dtypes and
scalars. Any other global is refused *before* it is called, with one line naming the file and the
global.

Admitted globals (and why):
- ``builtins`` ``set``, ``frozenset``, ``bytearray``, ``complex``, and ``collections.OrderedDict``:
  containers and scalars that have no opcode of their own (dict, list, tuple, str, int, float, bool,
  None and bytes need no global at all). Python-2 names (``__builtin__``) are mapped as
  ``pickle`` maps them.
- numpy array reconstruction, under both its 1.x (``numpy.core``) and 2.x (``numpy._core``) module
  names: ``multiarray._reconstruct``, ``multiarray.scalar``, ``numeric._frombuffer`` (protocol 5),
  ``numpy.ndarray``, ``numpy.dtype``. numpy itself refuses to build an object array from raw bytes,
  so these cannot forge Python objects.
- ``_codecs.encode`` restricted to the latin-1 codec: Python 3 writes ``bytes`` in protocol <= 2
  pickles (numpy's array buffers among them) as ``_codecs.encode(text, "latin1")``.

Encoding: always ``latin1``. Python-2 pickles (JHMDB-GT.pkl, protocol 0) store both text and numpy
buffers as Python-2 ``str``; the default ASCII decoding fails on the buffers, and latin-1 maps every
byte to one code point, so buffers survive unchanged and ASCII names read the same as under ASCII.
Python-3 pickles keep text as UTF-8 ``str`` opcodes, which ``encoding`` does not touch, so trying
ASCII first would only read the file twice. (A Python-2 ``str`` holding non-ASCII UTF-8 text would
come out as mojibake; no annotation file we know of has one.)
"""
from __future__ import annotations

import builtins
import codecs
import collections
import pickle
from pathlib import Path

import numpy as np

from benchmark.errors import InputError, one_line


class UnsafePickleError(InputError):
    """A pickle that names a global outside the admitted set; the message names the file and global."""


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refused to unpickle _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], object]:
    from numpy._core import multiarray, numeric  # numpy >= 2; numpy.core is a deprecated alias of it

    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        out[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return out


ALLOWED: dict[tuple[str, str], object] = {
    **{("builtins", name): getattr(builtins, name) for name in ("set", "frozenset", "bytearray", "complex")},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    **_numpy_globals(),
}
_PY2_MODULES = {"__builtin__": "builtins"}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` returns only the objects of :data:`ALLOWED`."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        key = (_PY2_MODULES.get(module, module), name)
        if key in ALLOWED:
            return ALLOWED[key]
        raise UnsafePickleError(f"{self.path}: refused to unpickle {module}.{name} "
                                f"(only builtin containers and numpy arrays are allowed)")


def load_pickle(path: str | Path, error: type[InputError] = InputError):
    """The content of a pickle file, read by :class:`RestrictedUnpickler`.

    A refused global is :class:`UnsafePickleError`; a missing, truncated or malformed file is one-line
    ``error`` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, path).load()
    except InputError:
        raise
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a pickle file") from None
    except EOFError:
        raise error(f"{path}: truncated pickle (ends before its STOP opcode)") from None
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError, MemoryError) as e:
        if "truncated" in str(e):
            raise error(f"{path}: truncated pickle (ends before its STOP opcode)") from None
        raise error(f"{path}: malformed pickle ({one_line(f'{type(e).__name__}: {e}')})") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
