"""The worker plugins of the embedded cluster (import Dask: loaded only when a cluster starts)."""
import ctypes
import os
import sys

from distributed import WorkerPlugin

# glibc's mallopt parameters and the values its dynamic mmap threshold reaches on 64-bit Linux
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


class OneThreadPerWorker(WorkerPlugin):
    """A worker plugin: fastnn's thread count (and the BLAS libraries') set to `threads`
    in each worker, so N one-thread workers on N cores do not oversubscribe them."""

    name = "fastnn-threads"

    def __init__(self, threads=1):
        self.threads = int(threads)

    def setup(self, worker):
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(self.threads)
        import fastnn
        fastnn.set_num_threads(self.threads)


def set_malloc_thresholds(mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD):
    """Fixed glibc malloc thresholds for this process (True when set; False off glibc).

    A Dask Nanny starts its worker with MALLOC_TRIM_THRESHOLD_=65536 in the environment
    (distributed.nanny.pre-spawn-environ). Setting any such variable switches off glibc's
    dynamic mmap threshold, so every allocation over 128 KiB - each activation and
    gradient array of a training step - becomes an mmap and munmap whose pages fault
    in again: LeNet-5 trained 30-35 % slower under that variable than without it, in
    the same process. These values are where the dynamic threshold ends up anyway
    (arrays up to 32 MiB from the heap, at most 64 MiB kept free at its top)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False


class MallocThresholds(WorkerPlugin):
    """A worker plugin: :func:`set_malloc_thresholds` in each worker (glibc only), undoing
    what the Nanny's MALLOC_TRIM_THRESHOLD_ costs fastnn's training loops."""

    name = "fastnn-malloc"

    def setup(self, worker):
        self.applied = set_malloc_thresholds()
