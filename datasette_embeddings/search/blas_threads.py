"""How many threads BLAS may use for the server's matrix products (threadpoolctl).

OpenBLAS starts as many threads as there are cores for every product, even a
matrix-vector product over a few thousand rows.  Under concurrent requests on a
small machine those threads fight over the same cores: one ``embeddings_nearest``
call took 3.6 ms with two threads and 0.3 ms with one while other work ran.  The
server therefore caps BLAS at ``fast_index.blas_threads`` (default 1): requests run
side by side, one core each, instead of each trying to use every core.

The cap is process-wide, set once at startup: BLAS libraries keep one global
thread count, so a per-request ``with threadpool_limits(...)`` would race between
Datasette's threads (one request restoring the count while another computes).
The CLI is not capped: ``datasette-embeddings links`` is one big product that
every core helps with.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


def limit(threads: int) -> list[dict]:
    """Cap every loaded BLAS library at ``threads``; what threadpoolctl reports afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=int(threads), user_api="blas")
    return [
        {"library": info.get("internal_api"), "threads": info.get("num_threads")}
        for info in threadpool_info() if info.get("user_api") == "blas"
    ]


@contextmanager
def limited(threads: int) -> Iterator[None]:
    """BLAS capped at ``threads`` for one command's work, restored afterwards.

    For one-shot commands only (see the module's note): the ``links`` command runs its
    own threads over blocks and wants each product on one core.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(threads), user_api="blas"):
        yield
