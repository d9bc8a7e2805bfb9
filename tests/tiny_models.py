"""Tiny random-weight checkpoints of every published architecture, staged in the HF cache.

Each is written in its hub repository's own layout (``config.json``, weights,
``preprocessor_config.json``, tokenizer files) under the repository name the
catalogue points at, in ``$HF_HOME/hub``; with ``HF_HUB_OFFLINE=1`` the real
transformers code loads them from disk exactly as it would the published weights.
Widths are tiny (hidden 32, two layers), so loading and embedding take milliseconds.

The preprocessing values are the published ones where they matter (SigLIP's
mean/std 0.5, DINOv2's ImageNet statistics and shortest-side-then-crop, NaFlex's
patching) at small sizes, so the adapters' code paths are the real ones.
"""
from __future__ import annotations

import os
import pathlib
import tempfile

from tests import tiny_clip

REVISION = "0" * 39 + "2"
WIDTH = 32
PROJECTION = 24   # text/image vector length of the tiny contrastive models
IMAGE = 32        # pixels
PATCH = 8

SIGLIP = "google/siglip-base-patch16-224"
SIGLIP2 = "google/siglip2-base-patch16-224"
NAFLEX = "google/siglip2-base-patch16-naflex"
OPENCLIP = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
DINOV2 = "facebook/dinov2-small"

#: a few sentences for SigLIP's sentencepiece vocabulary
_CORPUS = "\n".join([
    "a ship at sea in a storm", "portrait of a woman with a man at a casement", "the night watch",
    "blue and white vase with flowers", "a walrus on a toy aeroplane", "landscape with cows",
] * 10)


def _tower(**extra) -> dict:
    return dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2, num_attention_heads=2, **extra)


def _sentencepiece_tokenizer(workdir: pathlib.Path):
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    corpus = workdir / "corpus.txt"
    corpus.write_text(_CORPUS, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(workdir / "spiece"), vocab_size=48, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        hard_vocab_limit=False, minloglevel=2,
    )
    return SiglipTokenizer(vocab_file=str(workdir / "spiece.model"), model_max_length=64)


def _gemma_tokenizer():
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)] + list("▁abcdefghijklmnopqrstuvwxyz")
    return GemmaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[])


def build_siglip(directory: pathlib.Path, *, gemma: bool) -> None:
    """SigLIP's architecture: SigLIP itself (sentencepiece) or a fixed-resolution SigLIP 2 (Gemma tokenizer)."""
    import torch
    from transformers import SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    with tempfile.TemporaryDirectory() as work:
        tokenizer = _gemma_tokenizer() if gemma else _sentencepiece_tokenizer(pathlib.Path(work))
        tokenizer.save_pretrained(str(directory))
    config = SiglipConfig(
        text_config=_tower(vocab_size=len(tokenizer), max_position_embeddings=64, bos_token_id=None, eos_token_id=1, pad_token_id=0),
        vision_config=_tower(image_size=IMAGE, patch_size=PATCH),
    )
    # SigLIP's vision head projects to its hidden width: the tiny text head does the same
    config.text_config.projection_size = WIDTH
    torch.manual_seed(1)
    SiglipModel(config).save_pretrained(str(directory))
    SiglipImageProcessorPil(
        size={"height": IMAGE, "width": IMAGE}, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3,
    ).save_pretrained(str(directory))


def build_naflex(directory: pathlib.Path) -> None:
    import torch
    from transformers import Siglip2Config, Siglip2Model
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    tokenizer = _gemma_tokenizer()
    tokenizer.save_pretrained(str(directory))
    config = Siglip2Config(
        text_config=_tower(vocab_size=len(tokenizer), max_position_embeddings=64, projection_size=WIDTH, bos_token_id=None, eos_token_id=1, pad_token_id=0),
        vision_config=_tower(num_patches=16, patch_size=PATCH),
    )
    torch.manual_seed(2)
    Siglip2Model(config).save_pretrained(str(directory))
    Siglip2ImageProcessorPil(patch_size=PATCH, max_num_patches=16).save_pretrained(str(directory))


def build_openclip(directory: pathlib.Path) -> None:
    """An OpenCLIP checkpoint as LAION publishes it in transformers format (CLIPModel)."""
    import json

    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vocab = tiny_clip._byte_level_vocab()
    with tempfile.TemporaryDirectory() as work:
        (pathlib.Path(work) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (pathlib.Path(work) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(
            vocab_file=str(pathlib.Path(work) / "vocab.json"), merges_file=str(pathlib.Path(work) / "merges.txt"),
            model_max_length=32,
        )
        tokenizer.save_pretrained(str(directory))
    config = CLIPConfig(
        text_config=_tower(
            vocab_size=len(vocab), max_position_embeddings=32, bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=_tower(image_size=IMAGE, patch_size=PATCH),
        projection_dim=PROJECTION,
    )
    torch.manual_seed(3)
    CLIPModel(config).save_pretrained(str(directory))
    CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, resample=3,
    ).save_pretrained(str(directory))


def build_dinov2(directory: pathlib.Path) -> None:
    import torch
    from transformers import Dinov2Config, Dinov2Model
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    config = Dinov2Config(**_tower(image_size=IMAGE, patch_size=PATCH))
    torch.manual_seed(4)
    Dinov2Model(config).save_pretrained(str(directory))
    BitImageProcessorPil(
        size={"shortest_edge": IMAGE + 8}, crop_size={"height": IMAGE, "width": IMAGE}, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True,
    ).save_pretrained(str(directory))


BUILDERS = {
    SIGLIP: lambda d: build_siglip(d, gemma=False),
    SIGLIP2: lambda d: build_siglip(d, gemma=True),
    NAFLEX: build_naflex,
    OPENCLIP: build_openclip,
    DINOV2: build_dinov2,
}


def stage(repo: str, hf_home: str | None = None) -> pathlib.Path:
    """Build the tiny ``repo`` into the hub cache of ``$HF_HOME`` (once) and point ``main`` at it."""
    hub = pathlib.Path(hf_home or os.environ["HF_HOME"]) / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = hub / "snapshots" / REVISION
    if not (snapshot / "config.json").exists():
        snapshot.mkdir(parents=True, exist_ok=True)
        BUILDERS[repo](snapshot)
    (hub / "refs").mkdir(parents=True, exist_ok=True)
    (hub / "refs" / "main").write_text(REVISION, encoding="utf-8")
    return snapshot


def stage_all(hf_home: str | None = None) -> dict[str, pathlib.Path]:
    return {repo: stage(repo, hf_home) for repo in BUILDERS}
