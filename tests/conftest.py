"""Shared test setup.

The environment is fixed before anything imports llm or huggingface_hub (both
read it at import time): no hub access, and llm / HF state in temporary folders
so tests never touch the developer's own configuration.
"""
import os
import tempfile

_STATE = tempfile.mkdtemp(prefix="datasette-embeddings-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["LLM_USER_PATH"] = os.path.join(_STATE, "llm")
os.environ["HF_HOME"] = os.path.join(_STATE, "hf")
os.makedirs(os.environ["LLM_USER_PATH"], exist_ok=True)
os.makedirs(os.environ["HF_HOME"], exist_ok=True)

import pathlib  # noqa: E402

import pytest  # noqa: E402

from tests.helpers import make_records, write_parquet  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Real CC0 museum images and metadata, kept in the repository (provenance: tests/data/SOURCES.md)
# so a clone with nothing beside it runs the whole suite.
TEST_DATA = ROOT / "tests" / "data"


@pytest.fixture
def data_dir() -> pathlib.Path:
    return TEST_DATA


@pytest.fixture
def small_parquet(tmp_path):
    """A real pyarrow-written Parquet file: two providers, two models of different dimensions."""
    path = tmp_path / "small.parquet"
    write_parquet(path, make_records(n=20, providers=("met", "rijks"), models={"m-8": 8, "m-4": 4}))
    return path


@pytest.fixture
def loaded_db(tmp_path, small_parquet):
    from datasette_embeddings.files import loader
    db = tmp_path / "loaded.db"
    loader.load(str(db), [str(small_parquet)])
    return db
