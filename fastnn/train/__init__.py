"""``fastnn-train``: the course's networks trained end to end on real data that ships
inside installed packages (see :mod:`fastnn.train.data`), and the command that runs
them (:mod:`fastnn.train.cli`). Importing this package imports neither scikit-learn
nor matplotlib."""
from . import data
from .data import MissingExtra

__all__ = ["data", "MissingExtra", "main"]


def main(argv=None):
    """The ``fastnn-train`` command; returns its exit status."""
    from .cli import main as cli_main
    return cli_main(argv)
