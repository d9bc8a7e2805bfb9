"""MobileCLIP run by open_clip (its FastViT image towers come from timm).

open_clip builds the architecture from its own configuration (``MobileCLIP-S1`` with
the pretrained tag ``datacompdr``, whose weights are ``apple/MobileCLIP-S1-OpenCLIP``) and
returns the preprocessing the checkpoint was published with: for MobileCLIP, the
shortest side resized to 256 (bilinear), a 256x256 centre crop, pixels scaled to 0-1
and *no* mean/std normalisation.  Texts go through open_clip's tokenizer for the same
architecture (77 tokens).  Vectors are L2-normalised, as open_clip's
``encode_*(normalize=True)`` does.

open_clip and timm import torchvision, whose PyPI wheels are built against the CUDA
build of torch; with a CPU-only torch, install torchvision from the same index as torch.
"""
from __future__ import annotations

import io
import threading
from typing import Iterable, Iterator

import llm

from . import checkpoints
from .catalogue import ModelSpec

#: the weight files open_clip looks for in a hub repository (safetensors first)
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class OpenClipModel(llm.EmbeddingModel):
    """A MobileCLIP checkpoint; weights load on first use."""

    batch_size = 16
    supports_text = True
    supports_binary = True

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.model_id = spec.label
        self._loaded = None
        self._load_lock = threading.Lock()

    def is_available(self) -> bool:
        packages = ("torch", "torchvision", "timm", "open_clip")
        return self._loaded is not None or checkpoints.available(self.spec, packages, OPEN_CLIP_WEIGHTS)

    def _load(self):
        if self._loaded is not None:
            return self._loaded
        with self._load_lock:
            if self._loaded is None:
                self._loaded = self._load_now()
        return self._loaded

    def _load_now(self):
        from ..runtime import EmbeddingError

        if self.spec.unavailable:
            raise EmbeddingError(f"model '{self.spec.label}' cannot run here: {self.spec.unavailable}")
        try:
            import open_clip
        except Exception as ex:  # ImportError, or torchvision's extension failing against this torch
            raise EmbeddingError(
                f"model '{self.spec.label}' needs open_clip, timm and a torchvision that matches your torch "
                f"({type(ex).__name__}: {ex}): pip install 'datasette-museum-embeddings[mobileclip]'"
            ) from None
        checkpoints.require(self.spec, *OPEN_CLIP_WEIGHTS)
        try:
            # open_clip's own architecture and pretrained tag: its table points the tag at the
            # checkpoint repository and carries the published preprocessing (mean 0, std 1, bilinear)
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.spec.open_clip_name, pretrained=self.spec.open_clip_pretrained, device="cpu"
            )
            tokenizer = open_clip.get_tokenizer(self.spec.open_clip_name)
        except Exception as ex:
            raise checkpoints.load_failed(self.spec, ex) from ex
        model.eval()
        try:  # MobileCLIP's train-time branches folded into one (same outputs, faster)
            from timm.utils import reparameterize_model

            model = reparameterize_model(model)
        except ImportError:
            pass
        return model, preprocess, tokenizer

    def embed_batch(self, items: Iterable[str | bytes], *, key: str | None = None) -> Iterator[list[float]]:
        import torch
        from PIL import Image

        items = list(items)
        if not items:
            return iter(())
        model, preprocess, tokenizer = self._load()
        with torch.inference_mode():
            if isinstance(items[0], (bytes, bytearray)):
                batch = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in items])
                features = model.encode_image(batch)
            else:
                features = model.encode_text(tokenizer(list(items)))
        return iter(torch.nn.functional.normalize(features.float(), dim=-1).tolist())
