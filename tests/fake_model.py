"""A FAKE llm embedding model, registered only inside the tests that need to count calls.

It is registered through llm's own plugin manager (the same hook real plugins
use) and removed again, so the rest of the suite never sees it.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import llm
from llm.plugins import pm

from datasette_embeddings.embedding import runtime as models
class FakeCountingModel(llm.EmbeddingModel):
    """Deterministic 8-d vectors from a hash; records every batch it is given."""

    supports_text = True
    supports_binary = False
    loads_weights = False  # a fake: no weights, so requests need not wait for a background load

    def __init__(self, model_id: str = "fake-counting-model", *, text: bool = True, binary: bool = False):
        self.model_id = model_id
        self.supports_text = text
        self.supports_binary = binary
        self.batches: list[list] = []

    def embed_batch(self, items, *, key=None):
        items = list(items)
        self.batches.append(items)
        for item in items:
            data = item.encode() if isinstance(item, str) else item
            digest = hashlib.sha256(data).digest()
            yield [b / 255.0 + 0.01 for b in digest[:8]]

    @property
    def calls(self) -> int:
        return sum(len(b) for b in self.batches)


@contextlib.contextmanager
def registered(*fakes: FakeCountingModel) -> Iterator[None]:
    class _Plugin:
        @llm.hookimpl
        def register_embedding_models(self, register):
            for fake in fakes:
                register(fake)

    name = "fake-models-" + "-".join(f.model_id for f in fakes)
    pm.register(_Plugin(), name=name)
    models.refresh()
    try:
        yield
    finally:
        pm.unregister(name=name)
        models.refresh()
