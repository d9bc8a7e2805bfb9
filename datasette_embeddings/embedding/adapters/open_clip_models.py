"""MobileCLIP and MobileCLIP2 run by open_clip (their FastViT / MCi image towers come from timm).

open_clip builds the architecture from its own configuration (``MobileCLIP-S1``) and, given
the pretrained tag (``datacompdr``), finds the weights' repository in its pretrained table
(``apple/MobileCLIP-S1-OpenCLIP``) and returns the preprocessing the checkpoint was
published with.  For MobileCLIP that is: the shortest side resized to the tower's size
(256 for S1/S2, 224 for B; bilinear), a centre crop to a square, pixels scaled to 0-1 and
*no* mean/std normalisation (MobileCLIP2-S3/-S4/-L-14 use CLIP's mean/std instead).  The
tag matters: built without it, open_clip would hand out CLIP's default transform (bicubic,
CLIP mean/std), which is not what the vectors were made with.  Texts go through open_clip's
tokenizer for the same architecture (77 tokens).  Vectors are L2-normalised, as open_clip's
``encode_*(normalize=True)`` does.

The weights come from the Hugging Face cache in open_clip's hub layout
(``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin`` in the repository);
:mod:`checkpoints` refuses a missing one offline before open_clip is asked.

open_clip and timm import torchvision, which must be built for the installed torch: PyPI's
torchvision does not import beside a CPU-only torch from another index (``operator
torchvision::nms does not exist``); install the two as a matching pair.
"""
from __future__ import annotations

import io
from typing import Iterable, Iterator

import llm

from . import checkpoints
from .catalogue import ModelSpec

#: the weight files open_clip looks for in a hub repository (safetensors first)
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class OpenClipModel(llm.EmbeddingModel):
    """A MobileCLIP or MobileCLIP2 checkpoint run by open_clip; weights load on first use."""

    batch_size = 16
    supports_text = True
    supports_binary = True

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.model_id = spec.label
        #: the weights, loaded on first use (or by whoever calls ``load()`` ahead of it)
        self.load = checkpoints.LoadOnce(self._load_now)

    def is_available(self) -> bool:
        packages = ("torch", "torchvision", "timm", "open_clip")
        return self.load.loaded or checkpoints.available(self.spec, packages, OPEN_CLIP_WEIGHTS)

    def _load_now(self):
        from ..runtime import EmbeddingError

        if self.spec.unavailable:
            raise EmbeddingError(f"model '{self.spec.label}' cannot run here: {self.spec.unavailable}")
        try:
            import open_clip
        except Exception as ex:  # ImportError, or torchvision's extension failing against this torch
            raise EmbeddingError(
                f"model '{self.spec.label}' needs open_clip, timm and a torchvision that matches your torch "
                f"({type(ex).__name__}: {ex}): install torch and torchvision as a pair from one index "
                "(e.g. pip install torch torchvision), then pip install 'datasette-museum-embeddings[mobileclip]'"
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
        model, preprocess, tokenizer = self.load()
        with torch.inference_mode():
            if isinstance(items[0], (bytes, bytearray)):
                batch = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in items])
                features = model.encode_image(batch)
            else:
                features = model.encode_text(tokenizer(list(items)))
        return iter(torch.nn.functional.normalize(features.float(), dim=-1).tolist())
