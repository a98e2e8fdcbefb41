"""The worker plugin of the embedded cluster (imports Dask: loaded only when a cluster starts)."""
import os

from distributed import WorkerPlugin


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
