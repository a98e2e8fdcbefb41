"""fastnn: fast CPU kernels for convolution, pooling, batch matmul and recurrent cells."""
from ._version import __version__
from ._backends import (available_backends, get_backend, get_num_threads, get_workspace_limit,
                        set_backend, set_num_threads, set_workspace_limit)
