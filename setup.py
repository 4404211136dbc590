"""Build the optional Cython hot paths; the package works (slower) without them.

Each extension has a pure-Python twin with the same API.  A failed build is reported and
skipped unless NFMESH_REQUIRE_NATIVE=1 (CI sets it so that a broken binding fails loudly).
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# (module, source, libraries)
NATIVE = [
    ("dataplane._nghttp2", "dataplane/_nghttp2.pyx", ["nghttp2"]),
    ("gateway._access_log_batch", "gateway/_access_log_batch.pyx", []),
]


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            self._skip(exc)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc, ext.name)

    def _skip(self, exc: Exception, name: str = "native extensions") -> None:
        if os.environ.get("NFMESH_REQUIRE_NATIVE") == "1":
            raise exc
        print(f"nfmesh: skipping {name} ({exc}); the pure-Python twin is used", file=sys.stderr)


# Pure-Python modules that are also compiled, from the same source, under a second name
# (Cython's pure-Python mode with the .pxd beside them): (compiled module, source .py).
# The copies go to build/twins/ so that the repository keeps one source per module.
TWINS = [
    ("dataplane._admission_fast", "dataplane/admission.py"),
    ("dataplane._proxy_fast", "dataplane/proxy.py"),
    ("gateway._access_log_fast", "gateway/access_log.py"),
    ("gateway._stats_fast", "gateway/stats_core.py"),
    ("nf_adapters._sbi_fast", "nf_adapters/sbi_rewrite.py"),
    ("nf_adapters._scp_fast", "nf_adapters/scp_model_c.py"),
    ("nf_adapters._ngap_fast", "nf_adapters/ngap/routing_key.py"),
]


def _twin_sources() -> list:
    import shutil

    out = []
    for name, src in TWINS:
        if not os.path.exists(src):
            continue
        pkg, mod = name.rsplit(".", 1)
        dest = os.path.join("build", "twins", *pkg.split("."))
        os.makedirs(dest, exist_ok=True)
        for parent in range(1, len(pkg.split(".")) + 1):  # packages: the module's full name
            init = os.path.join("build", "twins", *pkg.split(".")[:parent], "__init__.py")
            if not os.path.exists(init):
                open(init, "w").close()
        base = src[:-3]
        shutil.copyfile(src, os.path.join(dest, mod + ".py"))
        if os.path.exists(base + ".pxd"):
            shutil.copyfile(base + ".pxd", os.path.join(dest, mod + ".pxd"))
        out.append((name, os.path.join(dest, mod + ".py")))
    return out


def extensions() -> list:
    if os.environ.get("NFMESH_SKIP_NATIVE") == "1":  # scripts/setup.sh builds them in place itself
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        print("nfmesh: Cython missing, building no native extension", file=sys.stderr)
        return []
    exts = [
        Extension(name, [src], libraries=libs, extra_compile_args=["-O2"])
        for name, src, libs in NATIVE
        if os.path.exists(src)
    ]
    exts += [Extension(name, [src], extra_compile_args=["-O2"]) for name, src in _twin_sources()]
    if not exts:
        return []
    return cythonize(exts, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
