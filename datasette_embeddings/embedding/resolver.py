"""Which llm model embeds queries for a stored model label: the one rule, used everywhere.

Before this module the mapping was written four times with four different rules
(SQL functions, the search page, the overview page, the runtime).  It also let
anonymous SQL name *any* installed llm model, so ``embed_text('3-small', ...)``
spent the operator's paid API key on a model the database does not hold.  The rule:

1. the plugin configuration's ``models`` mapping (label -> llm id) wins;
2. then the database's own ``models.llm_model_id`` column for that label;
3. then the label itself, when llm knows it as a model id or alias and the label is
   one this instance serves: stored in the database, or a configured llm id;
4. any other installed llm model only with ``allow_any_model: true``.
"""
from __future__ import annotations

from ..config import PLUGIN_NAME, EmbeddingConfig
from ..errors import EmbeddingError
from . import runtime


def query_model_id(config: EmbeddingConfig, label: str, *, stored: bool, stored_llm_id: str | None = None) -> str | None:
    """The llm model id for ``label``, or None when no allowed model embeds queries for it."""
    if label in config.models:
        return config.models[label]
    if stored_llm_id:
        return stored_llm_id
    allowed = stored or label in config.models.values() or config.allow_any_model
    if allowed and runtime.is_known(label):
        return label
    return None


def require_query_model(config: EmbeddingConfig, name: str, *, stored: bool, stored_llm_id: str | None = None) -> str:
    """As :func:`query_model_id`, but an error that says how to fix it instead of None."""
    model_id = query_model_id(config, name, stored=stored, stored_llm_id=stored_llm_id)
    if model_id is not None:
        return model_id
    if stored:
        raise EmbeddingError(
            f"model '{name}' is stored in this database but no llm model embeds queries for it: "
            f"set plugins: {PLUGIN_NAME}: models: {{'{name}': <llm model id>}} in metadata.yml"
        )
    if runtime.is_known(name):
        raise EmbeddingError(
            f"model '{name}' is neither stored in this database nor configured, so it may not be used here "
            f"(an operator can allow any installed llm model with plugins: {PLUGIN_NAME}: allow_any_model: true)"
        )
    # the runtime's message lists the installed models
    runtime.get_model(name)
    raise EmbeddingError(f"unknown embedding model '{name}'")  # pragma: no cover - get_model raised
