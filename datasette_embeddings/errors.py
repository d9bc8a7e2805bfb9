"""Domain errors: what went wrong, in words for the person who asked, with no HTTP status.

Every layer below the web raises one of these; ``web/http_errors.py`` turns them into
Datasette's own exceptions once, and the CLI prints their message and exits 1.
Keeping the status out of the data layer means the same error reads the same in a
terminal, a JSON response and an HTML page.
"""
from __future__ import annotations


class EmbeddingsError(ValueError):
    """Base class: the message is meant for the person who asked."""


class NotFoundError(EmbeddingsError):
    """The request names something the database does not hold (a record, a model)."""


class InvalidRequestError(EmbeddingsError):
    """A parameter is malformed or out of range; the message names it."""


class TooLargeError(EmbeddingsError):
    """An upload or a request body is over a configured limit."""


class UnsupportedMediaError(EmbeddingsError):
    """An upload is not an image format the models accept."""


class EmbeddingError(EmbeddingsError):
    """Embedding was refused or failed (unknown model, a text to an image model, a bad image)."""


class ModelNotReadyError(EmbeddingError):
    """A query model's weights are not loaded; requests never load them, a background thread does.

    ``model`` is the name the request used.  Which of the two subclasses says whether
    waiting helps.
    """

    def __init__(self, message: str, *, model: str):
        super().__init__(message)
        self.model = model


class ModelLoadingError(ModelNotReadyError):
    """The model is still loading in the background: asking again in ``retry_after`` seconds may succeed."""

    def __init__(self, message: str, *, model: str, retry_after: int = 5):
        super().__init__(message, model=model)
        self.retry_after = retry_after


class ModelLoadFailedError(ModelNotReadyError):
    """Loading the model failed (the message carries the cause); it is not tried again until a restart."""


class SimilarityError(InvalidRequestError):
    """A similarity request that cannot be answered (bad k, a vector of the wrong length)."""


class SimilarityNotFound(SimilarityError, NotFoundError):
    """A similarity request naming a record or model the database does not hold."""


class ConfigError(EmbeddingsError):
    """The plugin configuration is wrong; the message names the key."""


class RecordError(ValueError):
    """A problem with the input, located as precisely as we can."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.row = row
        self.field = field
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.source:
            where.append(str(self.source))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field:
            where.append(f"field '{self.field}'")
        return (": ".join([", ".join(where), self.message])) if where else self.message

    def located(self, source: str) -> "RecordError":
        return RecordError(self.message, source=self.source or source, row=self.row, field=self.field)


