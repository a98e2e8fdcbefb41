"""Which Dask cluster a call runs on: ``client=`` (a distributed.Client), ``address=``
(a scheduler's address, e.g. "tcp://10.0.0.5:8786"), or neither: the embedded default,
a LocalCluster on this machine started on first use and kept for the process (one
worker process per core, one thread each, fastnn's own thread count set to 1 inside
every worker), closed at exit or by :func:`shutdown`."""
import atexit
import logging
import os
import threading

__all__ = ["get_client", "local_cluster", "shutdown", "require_dask"]

_lock = threading.Lock()
_embedded = {}        # "cluster", "client"
_by_address = {}      # address -> Client we opened


def require_dask(fn):
    try:
        import distributed  # noqa: F401
        import dask  # noqa: F401
    except ImportError:
        raise ImportError(f"{fn} needs Dask distributed: pip install 'fastnn[dask]' "
                          f"(or pip install 'dask[distributed]')") from None


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def local_cluster(n_workers=None, *, threads=1, **kwargs):
    """A new (LocalCluster, Client): `n_workers` worker processes (default one per core),
    one thread each, fastnn's thread count `threads` in each (a worker plugin). The
    caller closes both."""
    require_dask("fastnn.distributed.local_cluster")
    from distributed import Client, LocalCluster
    from ._plugin import MallocThresholds, OneThreadPerWorker
    n = _cores() if n_workers is None else int(n_workers)
    if n < 1:
        raise ValueError(f"fastnn.distributed.local_cluster: n_workers must be >= 1, got {n_workers!r}")
    env = {var: str(threads) for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    options = dict(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                   silence_logs=logging.ERROR, env=env)
    options.update(kwargs)
    cluster = LocalCluster(**options)
    client = Client(cluster, direct_to_workers=True)  # DataParallel's steps go straight to the workers
    try:
        client.register_plugin(OneThreadPerWorker(threads))
        client.register_plugin(MallocThresholds())
    except Exception:
        client.close()
        cluster.close()
        raise
    return cluster, client


def get_client(fn, client=None, address=None):
    """The client a call uses (see the module's doc)."""
    require_dask(fn)
    if client is not None and address is not None:
        raise ValueError(f"{fn}: give client= or address=, not both (got client={client!r}, address={address!r})")
    if client is not None:
        from distributed import Client
        if not isinstance(client, Client):
            raise TypeError(f"{fn}: client must be a distributed.Client, got {type(client).__name__}")
        return client
    with _lock:
        if address is not None:
            if not isinstance(address, str) or not address:
                raise ValueError(f"{fn}: address must be a scheduler address like 'tcp://host:8786', got "
                                 f"{address!r}")
            existing = _by_address.get(address)
            if existing is None or existing.status in ("closed", "closing"):
                from distributed import Client
                existing = _by_address[address] = Client(address)
            return existing
        existing = _embedded.get("client")
        if existing is None or existing.status in ("closed", "closing"):
            _embedded["cluster"], _embedded["client"] = local_cluster()
        return _embedded["client"]


def shutdown():
    """Close the embedded LocalCluster and the clients opened for addresses (a later
    call starts a fresh one)."""
    with _lock:
        client, cluster = _embedded.pop("client", None), _embedded.pop("cluster", None)
        for c in [client, *_by_address.values()]:
            if c is not None:
                try:
                    c.close()
                except Exception:  # pragma: no cover - closing at exit
                    pass
        _by_address.clear()
        if cluster is not None:
            try:
                cluster.close()
            except Exception:  # pragma: no cover
                pass


atexit.register(shutdown)
