"""The published embedding models we can reproduce: one entry per publisher label.

Each entry names the checkpoint the vectors were made with, the library that runs it
(``transformers`` or ``open_clip``), and the aliases a file or a person may use for it
(publishers spell the same model differently: SFO Museum writes ``apple/mobileclip_s1``,
the Met ``apple/MobileCLIP-S1``).  The llm model id *is* the publisher label, so a file
loaded with that label needs no mapping in metadata.yml; a mapping there still wins.

``parameters`` (millions) gives the first-download size: weights are float32, so about
4 MB per million parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

#: families: how a checkpoint is run and preprocessed
CLIP = "clip"            # transformers CLIPModel (OpenCLIP checkpoints published in transformers format)
SIGLIP = "siglip"        # transformers SiglipModel: fixed square resolution, text padded to 64 tokens
NAFLEX = "naflex"        # transformers Siglip2Model: native aspect ratio, up to max_num_patches patches
DINOV2 = "dinov2"        # transformers Dinov2Model: images only, CLS token
MOBILECLIP = "mobileclip"  # open_clip + timm (MobileCLIP's FastViT image tower)


@dataclass(frozen=True)
class ModelSpec:
    """One published model: its label (the llm model id), checkpoint and how to run it."""

    label: str
    family: str
    checkpoint: str
    dimensions: int
    parameters: int  # millions, for the download size
    aliases: tuple[str, ...] = ()
    #: open_clip architecture and pretrained tag (MobileCLIP), None for transformers models
    open_clip_name: str | None = None
    open_clip_pretrained: str | None = None
    #: why this model cannot run through the libraries we use (then loading it says so)
    unavailable: str | None = None

    @property
    def supports_text(self) -> bool:
        return self.family != DINOV2

    @property
    def library(self) -> str:
        return "open_clip" if self.family == MOBILECLIP else "transformers"

    @property
    def download_mb(self) -> int:
        return self.parameters * 4


_MOBILECLIP_S0_UNAVAILABLE = (
    "MobileCLIP-S0's text encoder exists only in Apple's ml-mobileclip code, not in open_clip "
    "(open_clip 3.3 builds MobileCLIP-S1, -S2, -B and the MobileCLIP2 family; its maintainers declined "
    "S0's text encoder, open_clip issue #958). MobileCLIP2-S0 (apple/mobileclip2_s0) is a different model "
    "whose vectors do not match S0's"
)


def _mobileclip(label: str, checkpoint: str, dimensions: int, parameters: int, aliases: tuple[str, ...],
                open_clip_name: str, pretrained: str) -> ModelSpec:
    return ModelSpec(label, MOBILECLIP, checkpoint, dimensions, parameters, aliases=aliases,
                     open_clip_name=open_clip_name, open_clip_pretrained=pretrained)


SPECS: tuple[ModelSpec, ...] = (
    # MobileCLIP (Apple), as open_clip names them: architecture + pretrained tag, whose entry in
    # open_clip's table names the weights' repository and the published preprocessing.
    # SFO Museum's labels and the Met's spellings; S0's text tower is not in open_clip.
    ModelSpec("apple/mobileclip_s0", MOBILECLIP, "apple/MobileCLIP-S0", 512, 54,
              aliases=("apple/MobileCLIP-S0", "mobileclip-s0"), unavailable=_MOBILECLIP_S0_UNAVAILABLE),
    _mobileclip("apple/mobileclip_s1", "apple/MobileCLIP-S1-OpenCLIP", 512, 85,
                ("apple/MobileCLIP-S1", "mobileclip-s1"), "MobileCLIP-S1", "datacompdr"),
    _mobileclip("apple/mobileclip_s2", "apple/MobileCLIP-S2-OpenCLIP", 512, 99,
                ("apple/MobileCLIP-S2", "mobileclip-s2"), "MobileCLIP-S2", "datacompdr"),
    _mobileclip("apple/mobileclip_b", "apple/MobileCLIP-B-OpenCLIP", 512, 150,
                ("apple/MobileCLIP-B", "mobileclip-b"), "MobileCLIP-B", "datacompdr"),
    _mobileclip("apple/mobileclip_blt", "apple/MobileCLIP-B-LT-OpenCLIP", 512, 150,
                ("apple/MobileCLIP-B-LT", "mobileclip-b-lt"), "MobileCLIP-B", "datacompdr_lt"),
    # MobileCLIP2 (Apple, 2025): open_clip's weights are republished under timm/
    _mobileclip("apple/mobileclip2_s0", "timm/MobileCLIP2-S0-OpenCLIP", 512, 75,
                ("apple/MobileCLIP2-S0", "mobileclip2-s0"), "MobileCLIP2-S0", "dfndr2b"),
    _mobileclip("apple/mobileclip2_s2", "timm/MobileCLIP2-S2-OpenCLIP", 512, 99,
                ("apple/MobileCLIP2-S2", "mobileclip2-s2"), "MobileCLIP2-S2", "dfndr2b"),
    _mobileclip("apple/mobileclip2_b", "timm/MobileCLIP2-B-OpenCLIP", 512, 150,
                ("apple/MobileCLIP2-B", "mobileclip2-b"), "MobileCLIP2-B", "dfndr2b"),
    _mobileclip("apple/mobileclip2_s3", "timm/MobileCLIP2-S3-OpenCLIP", 768, 249,
                ("apple/MobileCLIP2-S3", "mobileclip2-s3"), "MobileCLIP2-S3", "dfndr2b"),
    _mobileclip("apple/mobileclip2_s4", "timm/MobileCLIP2-S4-OpenCLIP", 768, 445,
                ("apple/MobileCLIP2-S4", "mobileclip2-s4"), "MobileCLIP2-S4", "dfndr2b"),
    _mobileclip("apple/mobileclip2_l14", "timm/MobileCLIP2-L-14-OpenCLIP", 768, 428,
                ("apple/MobileCLIP2-L-14", "mobileclip2-l-14"), "MobileCLIP2-L-14", "dfndr2b"),
    # SigLIP (Google)
    ModelSpec("google/siglip-so400m-patch14-384", SIGLIP, "google/siglip-so400m-patch14-384", 1152, 878,
              aliases=("siglip-so400m-384",)),
    ModelSpec("google/siglip-base-patch16-224", SIGLIP, "google/siglip-base-patch16-224", 768, 203,
              aliases=("siglip-base-224",)),
    # SigLIP 2: the fixed-resolution checkpoints keep SigLIP's architecture; NaFlex is its own
    ModelSpec("google/siglip2-so400m-patch14-384", SIGLIP, "google/siglip2-so400m-patch14-384", 1152, 1136,
              aliases=("siglip2-so400m-384",)),
    ModelSpec("google/siglip2-so400m-patch16-384", SIGLIP, "google/siglip2-so400m-patch16-384", 1152, 1136,
              aliases=("siglip2-so400m-patch16-384",)),
    ModelSpec("google/siglip2-base-patch16-224", SIGLIP, "google/siglip2-base-patch16-224", 768, 375,
              aliases=("siglip2-base-224",)),
    ModelSpec("google/siglip2-so400m-patch16-naflex", NAFLEX, "google/siglip2-so400m-patch16-naflex", 1152, 1136,
              aliases=("siglip2-so400m-naflex",)),
    ModelSpec("google/siglip2-base-patch16-naflex", NAFLEX, "google/siglip2-base-patch16-naflex", 768, 375,
              aliases=("siglip2-base-naflex",)),
    # OpenCLIP checkpoints (LAION), run from the transformers weights their repositories ship
    ModelSpec("laion/CLIP-ViT-g-14-laion2B-s34B-b88K", CLIP, "laion/CLIP-ViT-g-14-laion2B-s34B-b88K", 1024, 1367,
              aliases=("ViT-g-14/laion2b_s34b_b88k", "openclip-vit-g-14")),
    ModelSpec("laion/CLIP-ViT-g-14-laion2B-s12B-b42K", CLIP, "laion/CLIP-ViT-g-14-laion2B-s12B-b42K", 1024, 1367,
              aliases=("ViT-g-14/laion2b_s12b_b42k",)),
    ModelSpec("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", CLIP, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", 1024, 986,
              aliases=("ViT-H-14/laion2b_s32b_b79k", "openclip-vit-h-14")),
    ModelSpec("laion/CLIP-ViT-L-14-laion2B-s32B-b82K", CLIP, "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", 768, 428,
              aliases=("ViT-L-14/laion2b_s32b_b82k", "openclip-vit-l-14")),
    ModelSpec("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", CLIP, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", 512, 151,
              aliases=("ViT-B-32/laion2b_s34b_b79k", "openclip-vit-b-32")),
    # DINOv2 (Meta): image features only
    ModelSpec("facebook/dinov2-small", DINOV2, "facebook/dinov2-small", 384, 22, aliases=("dinov2-small",)),
    ModelSpec("facebook/dinov2-base", DINOV2, "facebook/dinov2-base", 768, 86, aliases=("dinov2-base",)),
    ModelSpec("facebook/dinov2-large", DINOV2, "facebook/dinov2-large", 1024, 304, aliases=("dinov2-large",)),
    ModelSpec("facebook/dinov2-giant", DINOV2, "facebook/dinov2-giant", 1536, 1136, aliases=("dinov2-giant",)),
)


def find(name: str) -> ModelSpec | None:
    """The spec whose label or alias is ``name`` (exact first, then ignoring case)."""
    for spec in SPECS:
        if name == spec.label or name in spec.aliases:
            return spec
    lowered = name.lower()
    for spec in SPECS:
        if lowered == spec.label.lower() or lowered in (a.lower() for a in spec.aliases):
            return spec
    return None
