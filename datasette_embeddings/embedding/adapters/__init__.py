"""Adapters that make the models museums publish with available as llm embedding models.

:mod:`catalogue` lists them by publisher label; :func:`embedding_models` builds one
llm model object per label (cheap: weights load on first use), which the package's
llm plugin registers with the label as model id and the other spellings as aliases.
"""
from __future__ import annotations

import llm

from .catalogue import MOBILECLIP, SPECS, ModelSpec, find


def embedding_model(spec: ModelSpec) -> llm.EmbeddingModel:
    """The llm model object for one published model."""
    if spec.family == MOBILECLIP:
        from .open_clip_models import OpenClipModel

        return OpenClipModel(spec)
    from .transformers_models import TransformersModel

    return TransformersModel(spec)


def embedding_models() -> list[tuple[llm.EmbeddingModel, tuple[str, ...]]]:
    """Every published model with its aliases, for llm's ``register_embedding_models`` hook."""
    return [(embedding_model(spec), _aliases(spec)) for spec in SPECS]


def _aliases(spec: ModelSpec) -> tuple[str, ...]:
    # the checkpoint's repository name answers too (a file may be labelled with it)
    extra = (spec.checkpoint,) if spec.checkpoint not in (spec.label, *spec.aliases) else ()
    return (*spec.aliases, *extra)


__all__ = ["SPECS", "ModelSpec", "embedding_model", "embedding_models", "find"]
