"""cffi builder for the C kernels in csrc/ (out-of-line API mode).

    python build_ext.py        # build tinygrad_edu/_kernels.abi3.so in place; fails loudly on error

``pip install .`` / ``pip install -e .`` build the same module through setup.py, where the build
is optional: without a working compiler the engine runs on NumPy.
"""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CSRC = "csrc"
# the name pip's build gives the module (cffi builds for the stable ABI): with the same name here,
# `pip install -e .` after a build by hand replaces the file, where a `.cpython-3XX` name would be
# imported first and shadow every later build (tests/test_build.py checks the two agree)
TARGET = "_kernels.abi3.so"
# TINYGRAD_EDU_SANITIZE=address builds with AddressSanitizer, for CI's memory-safety run
SANITIZE = os.environ.get("TINYGRAD_EDU_SANITIZE", "")
SANITIZE_FLAGS = [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g"] if SANITIZE else []

ffibuilder = FFI()
# the interface is declared once, in csrc/kernels.h; cffi reads it (comments and all)
ffibuilder.cdef((HERE / CSRC / "kernels.h").read_text())
ffibuilder.set_source(
    "tinygrad_edu._kernels",
    '#include "kernels.h"',   # the prototypes, so every call is checked against them
    sources=[f"{CSRC}/kernels.c", f"{CSRC}/conv.c", f"{CSRC}/pool.c", f"{CSRC}/program.c"],
    include_dirs=[CSRC],
    depends=[f"{CSRC}/kernels.h", f"{CSRC}/gemm_impl.h", f"{CSRC}/conv_impl.h",
             f"{CSRC}/winograd_impl.h", f"{CSRC}/pool.h"],
    # gnu11, not c11: strict ISO mode stops gcc from fusing multiply-adds (10-20% slower)
    extra_compile_args=["-O3", "-std=gnu11", "-Werror=implicit-function-declaration"] + SANITIZE_FLAGS,
    extra_link_args=SANITIZE_FLAGS,
    libraries=["pthread", "m"],
)

if __name__ == "__main__":
    os.chdir(HERE)
    for stale in (HERE / "tinygrad_edu").glob("_kernels*.so"):
        stale.unlink()  # an old build with another suffix would shadow the new one
    ffibuilder.compile(tmpdir=".", verbose=True, target=TARGET)
