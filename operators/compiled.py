"""Numeric inner loops compiled with numba, lazily.

A few hot loops (the blend's sums, the ranking of an item's neighbours)
are plain Python functions over numpy arrays that :func:`lazy_njit` hands to numba on
first use: ``import pulse`` stays fast, and ``pulse --help`` never waits for a
compiler. Compiled code is cached on disk (next to the source, or numba's user-wide
cache when that is read-only), so only the first run on a machine pays the few seconds
of compilation. Setting ``NUMBA_DISABLE_JIT=1`` runs the same functions as Python, for
debugging.

Example:

>>> import numpy as np
>>> def total(xs):
...     t = 0.0
...     for x in xs:
...         t += x
...     return t
>>> fast_total = lazy_njit(total, cache=False)  # (a doctest's function has no file to cache in)
>>> fast_total(np.array([1.0, 2.5]))
3.5
"""

from __future__ import annotations

from typing import Callable


def lazy_njit(fn: Callable, cache: bool = True) -> Callable:
    """``fn`` compiled by ``numba.njit`` at its first call (``nogil``; cached on disk
    unless ``cache`` is False). The compiled function is the wrapper's ``compiled()``."""
    compiled_fn: Callable | None = None

    def compiled() -> Callable:
        nonlocal compiled_fn
        if compiled_fn is None:
            import numba

            try:
                compiled_fn = numba.njit(cache=cache, nogil=True)(fn)
            except RuntimeError:  # no writable cache directory: compile every run instead
                compiled_fn = numba.njit(nogil=True)(fn)
        return compiled_fn

    def call(*args):
        return (compiled_fn or compiled())(*args)

    call.compiled = compiled  # type: ignore[attr-defined]
    call.__doc__ = fn.__doc__
    call.__name__ = fn.__name__
    call.__wrapped__ = fn  # type: ignore[attr-defined]
    return call
