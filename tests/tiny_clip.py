"""Build a tiny random-weight CLIP and stage it where llm-clip looks for clip-ViT-B-32.

llm-clip calls ``SentenceTransformer('clip-ViT-B-32')``, which resolves to the hub
repository ``sentence-transformers/clip-ViT-B-32``.  We write a model in that
repository's layout (``modules.json`` -> ``0_CLIPModel/`` holding a transformers
CLIPModel and its processor) into the Hugging Face cache under ``$HF_HOME``, so
with ``HF_HUB_OFFLINE=1`` the real llm-clip and sentence-transformers code loads it
from disk.  Dimensions are tiny (projection 16) so a test takes milliseconds.
"""
from __future__ import annotations

import json
import os
import pathlib

REPO = "sentence-transformers/clip-ViT-B-32"
REVISION = "0" * 39 + "1"
PROJECTION_DIM = 16
IMAGE_SIZE = 32


def _byte_level_vocab() -> dict[str, int]:
    """Every byte as a token (GPT-2's byte-to-unicode table), plus end-of-word forms and specials."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def build(directory: pathlib.Path) -> pathlib.Path:
    """Write the sentence-transformers layout of a tiny CLIP into ``directory``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = _byte_level_vocab()
    module_dir = directory / "0_CLIPModel"
    module_dir.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(
        vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"),
        model_max_length=32,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 32,
            "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": IMAGE_SIZE, "patch_size": 8,
        },
        projection_dim=PROJECTION_DIM,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(str(module_dir))
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(module_dir))
    (directory / "vocab.json").unlink()
    (directory / "merges.txt").unlink()
    (directory / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}]),
        encoding="utf-8",
    )
    return directory


def stage(hf_home: str | None = None) -> pathlib.Path:
    """Build the tiny CLIP into the hub cache of ``$HF_HOME`` as ``REPO`` at ``REVISION``."""
    hub = pathlib.Path(hf_home or os.environ["HF_HOME"]) / "hub" / ("models--" + REPO.replace("/", "--"))
    snapshot = hub / "snapshots" / REVISION
    if not (snapshot / "modules.json").exists():
        build(snapshot)
    (hub / "refs").mkdir(parents=True, exist_ok=True)
    (hub / "refs" / "main").write_text(REVISION, encoding="utf-8")
    return snapshot
