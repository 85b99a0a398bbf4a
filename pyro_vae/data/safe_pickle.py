"""Read numpy arrays out of a pickle without running any pickle code.

``pickle.load`` executes whatever the file asks for (any importable callable). Classic data files
such as MNIST's ``mnist.pkl.gz`` only hold tuples of numpy arrays, so this module interprets the
pickle opcodes itself: it builds tuples, lists, numbers and strings, and turns the three numpy
globals that an ndarray pickle needs (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
``numpy.dtype``) into inert descriptions that are assembled with ``np.frombuffer``. Every other
global or opcode is refused. Nothing is imported and nothing is called.
"""

from __future__ import annotations

import pickletools
from typing import Any, List

import numpy as np

from pyro_vae.errors import DataError

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes into protocol-2 pickles; interpreted, not imported
}


class _Global:
    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class _ArraySpec:
    """An ndarray under construction: ``_reconstruct(ndarray, (0,), b'b')`` then ``BUILD(state)``."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def build(self, state: Any) -> None:
        _version, shape, dtype, _fortran, raw = state
        if not isinstance(dtype, np.dtype):
            raise DataError("pickle: ndarray state without a dtype")
        if isinstance(raw, str):  # Python 2 str pickled as BINSTRING: bytes decoded as latin-1
            raw = raw.encode("latin-1")
        self.array = np.frombuffer(raw, dtype=dtype).reshape(shape)


class _DTypeSpec:
    def __init__(self, code: str) -> None:
        self.dtype = np.dtype(code)

    def build(self, state: Any) -> None:
        order = state[1]
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


_MARK = object()


def _resolve(obj: Any) -> Any:
    if isinstance(obj, _ArraySpec):
        if obj.array is None:
            raise DataError("pickle: ndarray was never filled")
        return obj.array
    if isinstance(obj, _DTypeSpec):
        return obj.dtype
    if isinstance(obj, tuple):
        return tuple(_resolve(o) for o in obj)
    if isinstance(obj, list):
        return [_resolve(o) for o in obj]
    return obj


def load_arrays(data: bytes) -> Any:
    """Interpret ``data`` (a pickle) and return its tuples/lists of numpy arrays.

    :raises DataError: if the pickle asks for anything beyond plain containers and ndarrays.
    """
    import io

    stack: List[Any] = []
    memo: dict = {}

    def pop_mark() -> List[Any]:
        items = []
        while True:
            item = stack.pop()
            if item is _MARK:
                return items[::-1]
            items.append(item)

    try:
        ops = pickletools.genops(io.BytesIO(data))
        for op, arg, _pos in ops:
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                break
            if name in ("GLOBAL", "STACK_GLOBAL"):
                if name == "STACK_GLOBAL":
                    gname, module = stack.pop(), stack.pop()
                else:
                    module, gname = arg.split(" ", 1) if " " in arg else arg.split("\n", 1)
                if (module, gname) not in _ALLOWED_GLOBALS:
                    raise DataError(
                        f"refusing to load this pickle: it asks to import {module}.{gname}, which could run "
                        "code. Only plain numpy arrays are accepted; get the data file from a trusted source."
                    )
                stack.append(_Global(module, gname))
            elif name == "REDUCE":
                args = stack.pop()
                fn = stack.pop()
                if not isinstance(fn, _Global):
                    raise DataError("refusing to load this pickle: it calls a non-numpy object")
                if fn.name == "_reconstruct":
                    stack.append(_ArraySpec())
                elif fn.name == "dtype":
                    stack.append(_DTypeSpec(args[0]))
                elif fn.name == "encode" and len(args) == 2 and args[1] == "latin1" and isinstance(args[0], str):
                    stack.append(args[0].encode("latin-1"))
                else:
                    raise DataError(f"refusing to load this pickle: it calls {fn.module}.{fn.name}")
            elif name == "BUILD":
                state = _resolve(stack.pop())
                target = stack[-1]
                if not isinstance(target, (_ArraySpec, _DTypeSpec)):
                    raise DataError("refusing to load this pickle: it sets the state of a non-numpy object")
                target.build(state)
            elif name == "MARK":
                stack.append(_MARK)
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo[arg])
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = stack[-n:]
                del stack[-n:]
                stack.append(tuple(items))
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "APPEND":
                item = stack.pop()
                stack[-1].append(item)
            elif name == "APPENDS":
                items = pop_mark()
                stack[-1].extend(items)
            elif name in ("BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT"):
                stack.append(arg)
            elif name in ("SHORT_BINSTRING", "BINSTRING", "STRING", "BINUNICODE", "SHORT_BINUNICODE", "UNICODE",
                          "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BINUNICODE8"):
                stack.append(arg)
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            else:
                raise DataError(f"refusing to load this pickle: unsupported opcode {name} (only containers of numpy arrays are read)")
    except DataError:
        raise
    except Exception as e:  # malformed stream
        raise DataError(f"the pickle is corrupt or not a pickle of numpy arrays: {e}") from e
    if len(stack) != 1:
        raise DataError("the pickle is corrupt: it did not end with one object")
    return _resolve(stack[0])
