"""One BLAS/OpenMP thread for small tables.

For a small table, thread start-up and, on a busy 2-core machine, threads spinning while they
wait for a core cost far more than the work: a 1008 x 128 SVD takes 13 ms on one thread and was
measured at up to 900 ms on two while another process kept the cores busy. Large tables keep
every thread. The limit is a context manager (threadpoolctl), restored on exit.
"""
from __future__ import annotations

import contextlib

# Tables with fewer entries than this (n_items * d) run single-threaded.
SINGLE_THREAD_BELOW = 2_000_000


def small_table_threads(n_entries: int):
    """Context limiting BLAS and OpenMP to one thread when ``n_entries`` is small, else a no-op."""
    if n_entries >= SINGLE_THREAD_BELOW:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def thread_limit(threads: int | None):
    """Context capping BLAS and OpenMP at ``threads`` threads; None: no cap (a no-op)."""
    if threads is None:
        return contextlib.nullcontext()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        from collapse_kit.errors import UserError

        raise UserError(f"threads must be a positive integer or None; got {threads!r}")
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)
