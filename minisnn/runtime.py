"""Process tuning for minisnn's command-line tools: :func:`tune_process`.

Importing minisnn changes nothing in the host process. Every
``python -m minisnn...`` entry point (and the test suite's conftest) calls
``tune_process()`` first, before numpy and numba load, because three of its
four settings are read only when those libraries start. Set
``MINISNN_NO_TUNING=1`` to keep the process as it is. What it does, each
measured on 2 cores:

- ``OMP_WAIT_POLICY=passive``: numba's parallel kernels run on OpenMP, whose
  idle workers otherwise spin and starve the BLAS threads running between them.
- ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS's workers likewise spin for up to
  2^28 cycles after each GEMM; 2^4 puts them to sleep at once (ResNet-20
  1W/32A training step 592 -> 440 ms; integer inference 2x faster right
  after a float forward).
- glibc ``mallopt``: keep freed activation buffers on the heap instead of
  unmapping them, so a training step does not page-fault its few hundred MiB
  in again every step (~7% of an fp step, ~20% of a 1W/1A one).
- ``NUMBA_CPU_FEATURES`` without 'prefer-256-bit' on AVX-512 CPUs: the
  direct conv kernels run up to 1.2x faster with 512-bit vectors.

A user's own OMP_WAIT_POLICY, OPENBLAS_THREAD_TIMEOUT, NUMBA_CPU_NAME or
NUMBA_CPU_FEATURES always wins.
"""

import ctypes
import os
import sys


def _keep_freed_memory():
    """glibc only: blocks up to its maximum from the heap, keep up to 1 GiB of
    freed heap, grow it in large steps. Returns whether it applied."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    libc.mallopt(-2, 256 << 20)  # M_TOP_PAD
    return True


def _prefer_512bit_vectors():
    if ("numba" in sys.modules or "NUMBA_CPU_FEATURES" in os.environ
            or "NUMBA_CPU_NAME" in os.environ):
        return False
    try:
        from llvmlite import binding
        features = binding.get_host_cpu_features()
    except (ImportError, RuntimeError):
        return False
    if not features.get("avx512f"):
        return False
    os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"
    return True


def thread_counts():
    """The thread counts a run's float rounding depends on: {'numba': threads
    of numba's parallel kernels, 'blas': threads OpenBLAS started with}.

    numba's kernels give the same bits on any count; OpenBLAS's threaded
    sgemm does not (it sums in another order than its single-threaded one),
    so training records both. OpenBLAS takes OPENBLAS_NUM_THREADS,
    GOTO_NUM_THREADS or OMP_NUM_THREADS as it loads, else one thread per
    CPU the process may run on.
    """
    import numba

    blas = None
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            blas = int(value)
            break
    if blas is None:
        blas = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"numba": numba.get_num_threads(), "blas": blas}


def tune_process():
    """Apply the settings above (once is enough; later calls change nothing
    more). Returns the names of those that took effect; none with
    MINISNN_NO_TUNING set."""
    if os.environ.get("MINISNN_NO_TUNING"):
        return []
    applied = []
    for name, value in (("OMP_WAIT_POLICY", "passive"), ("OPENBLAS_THREAD_TIMEOUT", "4")):
        if name not in os.environ:
            os.environ[name] = value
            applied.append(name)
    if _keep_freed_memory():
        applied.append("mallopt")
    if _prefer_512bit_vectors():
        applied.append("NUMBA_CPU_FEATURES")
    return applied
