"""fastnn.distributed: the course's hyperparameter search, batched inference and
synchronous data-parallel training on Dask distributed (the ``dask`` extra).

- :func:`search` — random search ("caviar": many models trained at once), each trial a
  Dask task; results stream back as trials finish, every finished trial is kept in a
  JSON-lines results file so an interrupted search resumes, the best model comes back.
- :func:`predict` — Model.predict over a Dask array's chunks.
- :class:`DataParallel` — gradients of each batch's shards computed on the workers,
  one optimizer step on the driver.

No ``client=`` / ``address=``: an embedded LocalCluster on this machine (one worker
process per core, one thread each, fastnn's thread count 1 in each), kept for the
process (:func:`shutdown` closes it). Importing this package does not import Dask.
"""
from ._cluster import get_client, local_cluster, shutdown
from ._space import choice, intuniform, loguniform, uniform
from ._search import SearchResult, run_trial, search, trials
from ._predict import predict
from ._parallel import DataParallel

__all__ = ["search", "predict", "DataParallel", "SearchResult", "run_trial", "trials", "uniform", "loguniform",
           "choice", "intuniform", "local_cluster", "get_client", "shutdown"]
