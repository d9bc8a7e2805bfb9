"""Published models run by Hugging Face transformers: CLIP (OpenCLIP weights), SigLIP, SigLIP 2, DINOv2.

The preprocessing is the checkpoint's own: the image processor and tokenizer are read
from the checkpoint's ``preprocessor_config.json`` / tokenizer files, so resolution,
resize and crop (CLIP, DINOv2: shortest side then centre crop; SigLIP: squashed to a
square with no crop; NaFlex: resized to keep the aspect ratio within ``max_num_patches``
patches, padded with a mask), interpolation and mean/std are whatever the publisher
wrote there.  What a checkpoint does not record is fixed here as its model card says:

* SigLIP and SigLIP 2 texts are padded to exactly 64 tokens (``padding="max_length"``):
  the text tower pools the *last* position, so a shorter padding gives other vectors;
* every vector is L2-normalised (CLIP and SigLIP compare by cosine; DINOv2's CLS token
  is normalised too, as retrieval with it does).

The image processor is called directly rather than through the combined processor,
because a processor class may carry its own defaults (SigLIP 2's says 256 patches of 16
pixels) that would override the checkpoint's file.
"""
from __future__ import annotations

import io
from typing import Iterable, Iterator

import llm

from . import checkpoints
from .catalogue import DINOV2, NAFLEX, SIGLIP, ModelSpec

#: SigLIP's text length, as trained (big_vision) and as its model cards require
SIGLIP_TEXT_LENGTH = 64


class TransformersModel(llm.EmbeddingModel):
    """One published checkpoint run by transformers; weights load on first use."""

    batch_size = 16

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.model_id = spec.label
        self.supports_text = spec.supports_text
        self.supports_binary = True
        #: the weights, loaded on first use (or by whoever calls ``load()`` ahead of it)
        self.load = checkpoints.LoadOnce(self._load_now)

    def is_available(self) -> bool:
        packages = ("torch", "transformers")
        return self.load.loaded or checkpoints.available(self.spec, packages, ("config.json",))

    # ---------------------------------------------------------------- loading

    def _load_now(self):
        from ..runtime import EmbeddingError

        checkpoints.require(self.spec, "config.json")
        try:
            import torch  # noqa: F401
            import transformers
        except ImportError as ex:
            raise EmbeddingError(
                f"model '{self.spec.label}' needs {ex.name}: pip install 'datasette-museum-embeddings[models]' "
                "(install torch first, the CPU build if you have no GPU)"
            ) from None
        try:
            model = transformers.AutoModel.from_pretrained(self.spec.checkpoint)
            image_processor = transformers.AutoImageProcessor.from_pretrained(self.spec.checkpoint)
            tokenizer = (
                transformers.AutoTokenizer.from_pretrained(self.spec.checkpoint)
                if self.spec.supports_text else None
            )
        except EmbeddingError:
            raise
        except ImportError as ex:  # a tokenizer's backend (sentencepiece, protobuf)
            raise EmbeddingError(
                f"model '{self.spec.label}' needs {getattr(ex, 'name', None) or ex}: "
                "pip install 'datasette-museum-embeddings[models]'"
            ) from None
        except Exception as ex:
            raise checkpoints.load_failed(self.spec, ex) from ex
        model.eval()
        return model, image_processor, tokenizer

    # ---------------------------------------------------------------- embedding

    def embed_batch(self, items: Iterable[str | bytes], *, key: str | None = None) -> Iterator[list[float]]:
        items = list(items)
        if not items:
            return iter(())
        if isinstance(items[0], (bytes, bytearray)):
            vectors = self.embed_images(items)
        else:
            vectors = self.embed_texts(items)
        return iter(vectors.tolist())

    def embed_texts(self, texts: list[str]):
        from ..runtime import EmbeddingError

        if not self.spec.supports_text:
            raise EmbeddingError(f"model '{self.spec.label}' embeds images only; it cannot embed text")
        import torch

        model, _, tokenizer = self.load()
        if self.spec.family in (SIGLIP, NAFLEX):
            tokens = tokenizer(
                texts, padding="max_length", max_length=SIGLIP_TEXT_LENGTH, truncation=True, return_tensors="pt"
            )
        else:
            tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        # what the checkpoint's tokenizer returns, as the publishers' reference code passes it
        inputs = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            features = _pooled(model.get_text_features(**inputs))
        return _normalised(features)

    def embed_images(self, blobs: list[bytes]):
        import torch

        model, image_processor, _ = self.load()
        pictures = [_picture(b) for b in blobs]
        pixels = image_processor(images=pictures, return_tensors="pt")
        with torch.inference_mode():
            if self.spec.family == DINOV2:
                features = model(pixel_values=pixels["pixel_values"]).pooler_output
            elif self.spec.family == NAFLEX:
                features = _pooled(model.get_image_features(
                    pixel_values=pixels["pixel_values"],
                    pixel_attention_mask=pixels["pixel_attention_mask"],
                    spatial_shapes=pixels["spatial_shapes"],
                ))
            else:
                features = _pooled(model.get_image_features(pixel_values=pixels["pixel_values"]))
        return _normalised(features)


def _picture(data: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    return image.convert("RGB")


def _pooled(output):
    # transformers 5 returns a model output whose pooler_output is the projected
    # embedding; earlier versions returned the tensor itself
    return getattr(output, "pooler_output", output)


def _normalised(features):
    import torch

    return torch.nn.functional.normalize(features.float(), dim=-1).numpy()

