"""Build the Cython kernels of fastnn.

The C kernels (fastnn/_kernels/fn_*.h) are compiled for every CPU tier of the
target through function attributes (AVX-512 and AVX2 on x86-64, a generic tier
everywhere); the module code keeps the baseline instruction set, so one build runs
on any CPU of its architecture and picks its tier at run time. They need GCC or
Clang (vector extensions).

OpenMP is used when the compiler accepts it; otherwise the kernels are built
without it and run single-threaded (``fastnn.cpu_info()["openmp"]`` tells). Set
``FASTNN_NO_OPENMP=1`` to force the fallback.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def compiler_accepts_openmp():
    if os.environ.get("FASTNN_NO_OPENMP") == "1" or sys.platform == "win32":
        return False
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        cmd = cc.split() + ["-fopenmp", src, "-o", os.path.join(tmp, "t")]
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


openmp = compiler_accepts_openmp()
# The C kernels fuse multiply-adds where they say so (fn_simd.h's FN(fma)) and
# nowhere else: a loop body compiled twice (for the threads and for the calling
# thread alone) must round the same way in both copies.
# -fwrapv as Python's own flags have it: a CFLAGS of one's own replaces those, and
# GCC 12 then fails on the generic tier's float64 activation kernel (an internal
# compiler error), which it compiles with -fwrapv.
compile_args = ["-O3", "-ffp-contract=off", "-fwrapv"]
link_args = []
if openmp:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")

extensions = [
    Extension(
        "fastnn._kernels." + os.path.splitext(os.path.basename(path))[0],
        [path],
        include_dirs=[np.get_include(), os.path.join("fastnn", "_kernels")],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        depends=sorted(glob.glob(os.path.join("fastnn", "_kernels", "*.h"))
                       + glob.glob(os.path.join("fastnn", "_kernels", "*.pxd"))
                       + glob.glob(os.path.join("fastnn", "_kernels", "*.pxi"))),
    )
    for path in sorted(glob.glob(os.path.join("fastnn", "_kernels", "*.pyx")))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
