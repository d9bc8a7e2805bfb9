"""The server caps BLAS threads (fast_index.blas_threads) once, at startup."""
import asyncio

import pytest
from datasette.app import Datasette

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads() -> set[int]:
    return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}


@pytest.mark.parametrize("setting, expected", [(None, 1), (2, 2)])
def test_startup_caps_blas_threads(loaded_db, setting, expected):
    import numpy  # noqa: F401  (loads OpenBLAS, so there is a BLAS to cap)

    if not blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can control")
    plugin = {"fast_index": {"blas_threads": setting, "build_at_startup": False}} if setting else {"fast_index": {"build_at_startup": False}}
    with threadpoolctl.threadpool_limits(limits=None):  # restores this process's own count afterwards
        ds = Datasette([str(loaded_db)], metadata={"plugins": {"datasette-embeddings": plugin}})
        asyncio.run(ds.invoke_startup())
        assert blas_threads() == {expected}


def test_blas_threads_must_be_a_number(loaded_db):
    ds = Datasette([str(loaded_db)], metadata={"plugins": {"datasette-embeddings": {"fast_index": {"blas_threads": "many"}}}})
    with pytest.raises(ValueError, match="fast_index: blas_threads must be a number"):
        asyncio.run(ds.invoke_startup())
