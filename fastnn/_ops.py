"""The modules whose public functions are fastnn's ops, in the order of docs/API.md
(each module's ``__all__`` lists them); the package and ``fastnn.reference`` both
export what these list."""
from . import conv, converters, dense, dropout, embedding, loss, matmul, norm, pool, recurrent

OP_MODULES = (conv, pool, matmul, recurrent, dense, loss, norm, dropout, embedding)
CONVERTERS = converters
