"""The one loader for "compiled unless told otherwise": each hot path of ours has a compiled
module and a pure-Python twin with the same API, and an environment variable that names one
of them for A/B measurements (``NFMESH_PROXY=pure``, ``NFMESH_ADMISSION=pure``...).

``load_twin(name, compiled=(module, attribute), pure=object, env=VARIABLE, what=...)``
returns the compiled object when it imports (``auto``), the pure one (``pure``), or raises
``ImportError`` for an explicit ``cython`` that is not built and ``ValueError`` for an unknown
name; ``available_twins`` lists the names that load here.
"""

from __future__ import annotations

import importlib
import os

TWINS = ("cython", "pure")


def load_twin(name: str, compiled: tuple[str, str], pure: object, env: str,
              what: str) -> object:
    """See the module doc; ``what`` names the hot path in the error for an unknown name."""
    if name == "auto":
        name = os.environ.get(env) or "auto"
    if name in ("auto", "cython"):
        try:
            return getattr(importlib.import_module(compiled[0]), compiled[1])
        except ImportError:
            if name == "cython":
                raise
    if name in ("auto", "pure"):
        return pure
    raise ValueError(f"unknown {what} implementation {name!r}; choose one of auto, "
                     f"{', '.join(TWINS)}")


def available_twins(load) -> list[str]:
    """The names among ``TWINS`` that ``load(name)`` loads here."""
    names = []
    for name in TWINS:
        try:
            load(name)
        except ImportError:
            continue
        names.append(name)
    return names
