"""minisnn: a numpy-first reference implementation of Sub-bit Neural Networks."""

import ctypes
import os
import sys

# numba's parallel kernels run on OpenMP, whose idle workers otherwise spin
# and starve the BLAS threads that run between them on a 2-core machine;
# set before numba loads the OpenMP runtime (a user's own setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# OpenBLAS's workers likewise spin for up to 2^28 cycles after each GEMM,
# holding the cores the numba kernels that follow need: 2^4 puts them to
# sleep at once. Measured on 2 cores: ResNet-20 training step 592 -> 440 ms
# (1W/32A), integer inference 2x faster right after a float forward. Only
# read when OpenBLAS loads, so it takes effect when minisnn is imported
# before numpy (as in every ``python -m minisnn...`` command).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def _keep_freed_memory():
    """Let glibc reuse freed activation buffers instead of unmapping them.

    A training step allocates and frees the same few hundred MiB every step;
    by default glibc mmaps each large block and returns it to the OS on
    free, so every step page-faults it in again (measured: ~7% of an fp
    ResNet-20 step, ~20% of a 1W/1A one). Set MINISNN_DEFAULT_MALLOC=1 to
    opt out; other C libraries are left alone.
    """
    if os.environ.get("MINISNN_DEFAULT_MALLOC"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to glibc's maximum come from the heap
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
    libc.mallopt(-2, 256 << 20)  # M_TOP_PAD: grow the heap in large steps


_keep_freed_memory()


def _prefer_512bit_vectors():
    """Let numba's LLVM vectorize with 512-bit registers on AVX-512 CPUs.

    LLVM's tuning for Intel server cores caps auto-vectorized loops at 256
    bits ('prefer-256-bit'); the direct conv kernels are FMA- and load-bound
    and run up to 1.2x faster with 512-bit vectors. Only effective before
    numba is imported, and a user's NUMBA_CPU_NAME / NUMBA_CPU_FEATURES win.
    """
    if ("numba" in sys.modules or "NUMBA_CPU_FEATURES" in os.environ
            or "NUMBA_CPU_NAME" in os.environ):
        return
    try:
        from llvmlite import binding
        features = binding.get_host_cpu_features()
    except (ImportError, RuntimeError):
        return
    if features.get("avx512f"):
        os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"


_prefer_512bit_vectors()

__version__ = "0.1.0"
