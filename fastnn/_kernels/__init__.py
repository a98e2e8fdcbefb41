"""Compiled (Cython) and jitted (Numba) kernels. Private: normalised arguments only.

See docs/KERNELS.md for the contract every kernel follows.
"""
