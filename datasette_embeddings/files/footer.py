"""The file metadata go-embeddingsdb keeps in a Parquet footer, read, written and checked.

go-embeddingsdb (SFO Museum's tools for the shared record) writes a summary of a
file's rows into the Parquet footer's key/value metadata, so a reader can tell
what a file holds without reading it:

======================================== ==========================================
key                                      value
======================================== ==========================================
``embeddingsdb:models``                  model labels, ``;``-separated
``embeddingsdb:providers``               providers, ``;``-separated
``embeddingsdb:model:<m>:dimensions``    the vector length of model ``m``
``embeddingsdb:model:<m>:providers``     providers with rows for model ``m``
``embeddingsdb:provider:<p>:models``     models with rows for provider ``p``
======================================== ==========================================

Files from older writers lack some keys (``dimensions`` came later) and many
writers add none: only keys that are present are checked.  The summary is a
claim about the rows, so :func:`disagreements` compares it with what the rows
actually hold and names the key that is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

PREFIX = "embeddingsdb:"
MODELS = "embeddingsdb:models"
PROVIDERS = "embeddingsdb:providers"
SEPARATOR = ";"


def model_dimensions_key(model: str) -> str:
    return f"embeddingsdb:model:{model}:dimensions"


def model_providers_key(model: str) -> str:
    return f"embeddingsdb:model:{model}:providers"


def provider_models_key(provider: str) -> str:
    return f"embeddingsdb:provider:{provider}:models"


@dataclass
class FileStats:
    """What a file's rows hold, gathered while they are read or written (first-seen order)."""

    models: dict[str, int] = field(default_factory=dict)  # label -> dimensions of its first row
    providers: dict[str, None] = field(default_factory=dict)
    model_providers: dict[str, dict[str, None]] = field(default_factory=dict)
    provider_models: dict[str, dict[str, None]] = field(default_factory=dict)
    rows: int = 0

    def add(self, provider: str, model: str, dimensions: int, count: int = 1) -> None:
        self.models.setdefault(model, int(dimensions))
        self.providers.setdefault(provider, None)
        self.model_providers.setdefault(model, {}).setdefault(provider, None)
        self.provider_models.setdefault(provider, {}).setdefault(model, None)
        self.rows += count

    def add_rows(self, providers: Iterable[str], models: Iterable[str], dimensions: Iterable[int]) -> None:
        """Many rows at once; pairs already seen cost a dictionary lookup each."""
        seen: set[tuple[str, str]] = set()
        n = 0
        for provider, model, dims in zip(providers, models, dimensions):
            n += 1
            if (provider, model) not in seen:
                seen.add((provider, model))
                self.add(provider, model, dims, count=0)
        self.rows += n

    def key_values(self) -> dict[str, str]:
        """The footer keys go-embeddingsdb writes, for these rows."""
        kv = {
            MODELS: SEPARATOR.join(self.models),
            PROVIDERS: SEPARATOR.join(self.providers),
        }
        for model, dims in self.models.items():
            kv[model_dimensions_key(model)] = str(dims)
        for model, providers in self.model_providers.items():
            kv[model_providers_key(model)] = SEPARATOR.join(providers)
        for provider, models in self.provider_models.items():
            kv[provider_models_key(provider)] = SEPARATOR.join(models)
        return kv


def embeddingsdb_keys(metadata: Mapping | None) -> dict[str, str]:
    """The ``embeddingsdb:`` keys of a Parquet footer (pyarrow gives bytes), as text."""
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if key.startswith(PREFIX):
            out[key] = value
    return out


def split(value: str) -> list[str]:
    return [part for part in value.split(SEPARATOR) if part != ""]


@dataclass
class Summary:
    """The footer keys parsed: what the file says it holds (``None`` where a key is absent)."""

    models: list[str] | None = None
    providers: list[str] | None = None
    dimensions: dict[str, str] = field(default_factory=dict)  # raw text: a bad value is reported, not raised
    model_providers: dict[str, list[str]] = field(default_factory=dict)
    provider_models: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.models is None and self.providers is None and not (
            self.dimensions or self.model_providers or self.provider_models
        )

    def as_dict(self) -> dict:
        return {
            "models": self.models,
            "providers": self.providers,
            "dimensions": {m: _int_or_text(v) for m, v in self.dimensions.items()},
            "model_providers": self.model_providers,
            "provider_models": self.provider_models,
        }


def _int_or_text(value: str):
    try:
        return int(value)
    except ValueError:
        return value


def parse(keys: Mapping[str, str]) -> Summary:
    """Parse ``embeddingsdb:`` keys.  Model and provider names may hold ``:`` and ``/``."""
    summary = Summary()
    for key, value in keys.items():
        if key == MODELS:
            summary.models = split(value)
        elif key == PROVIDERS:
            summary.providers = split(value)
        elif key.startswith("embeddingsdb:model:") and key.endswith(":dimensions"):
            summary.dimensions[key[len("embeddingsdb:model:"):-len(":dimensions")]] = value.strip()
        elif key.startswith("embeddingsdb:model:") and key.endswith(":providers"):
            summary.model_providers[key[len("embeddingsdb:model:"):-len(":providers")]] = split(value)
        elif key.startswith("embeddingsdb:provider:") and key.endswith(":models"):
            summary.provider_models[key[len("embeddingsdb:provider:"):-len(":models")]] = split(value)
    return summary


@dataclass(frozen=True)
class Disagreement:
    key: str
    message: str

    def __str__(self) -> str:
        return f"footer key '{self.key}' {self.message}"


def _names(values: Iterable[str]) -> str:
    values = list(values)
    return SEPARATOR.join(values) if values else "(none)"


def _compare_sets(key: str, claimed: list[str], actual: Iterable[str], what: str) -> Disagreement | None:
    # a name holding ';' cannot survive the joined value: compare the pieces, as a reader sees them
    actual = list(dict.fromkeys(piece for name in actual for piece in split(name)))
    claimed_set, actual_set = set(claimed), set(actual)
    if claimed_set == actual_set:
        return None
    parts = []
    missing = [v for v in actual if v not in claimed_set]
    extra = [v for v in claimed if v not in actual_set]
    if missing:
        parts.append(f"leaves out {_names(missing)}, which the rows hold")
    if extra:
        parts.append(f"lists {_names(extra)}, which no row has")
    return Disagreement(key, f"says {what} {_names(claimed)} but " + " and ".join(parts))


def disagreements(summary: Summary, stats: FileStats) -> list[Disagreement]:
    """Every footer claim the rows contradict, each naming its key."""
    found: list[Disagreement] = []
    if summary.models is not None:
        d = _compare_sets(MODELS, summary.models, stats.models, "models")
        if d:
            found.append(d)
    if summary.providers is not None:
        d = _compare_sets(PROVIDERS, summary.providers, stats.providers, "providers")
        if d:
            found.append(d)
    for model, text in summary.dimensions.items():
        key = model_dimensions_key(model)
        try:
            claimed = int(text)
        except ValueError:
            found.append(Disagreement(key, f"is {text!r}, not a number of dimensions"))
            continue
        if model not in stats.models:
            found.append(Disagreement(key, f"names model {model}, which no row has"))
        elif stats.models[model] != claimed:
            found.append(Disagreement(key, f"says {claimed} dimensions but the rows of model {model} have {stats.models[model]}"))
    for model, claimed in summary.model_providers.items():
        actual = stats.model_providers.get(model, {})
        d = _compare_sets(model_providers_key(model), claimed, actual, f"model {model} has providers")
        if d:
            found.append(d)
    for provider, claimed in summary.provider_models.items():
        actual = stats.provider_models.get(provider, {})
        d = _compare_sets(provider_models_key(provider), claimed, actual, f"provider {provider} has models")
        if d:
            found.append(d)
    return found
