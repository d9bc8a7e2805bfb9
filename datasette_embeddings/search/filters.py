"""What a similarity question may ask: k and the provider/subject filters.

Its own module so that the similarity query, the in-memory index and the SQL
functions can all name a filter without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SimilarityError

MAX_K = 1000  # vec0 allows 4096; pages and the API are capped lower


@dataclass(frozen=True)
class NeighbourFilter:
    providers: tuple[str, ...] = ()
    exclude_providers: tuple[str, ...] = ()
    exclude_subject: str | None = None

    def sql(self) -> tuple[str, list]:
        """Constraints for vec0's metadata columns, honoured inside the KNN scan."""
        clauses: list[str] = []
        params: list = []
        if self.providers:
            clauses.append("provider in (%s)" % ", ".join("?" for _ in self.providers))
            params.extend(self.providers)
        for provider in self.exclude_providers:
            clauses.append("provider != ?")
            params.append(provider)
        if self.exclude_subject is not None:
            clauses.append("subject_id != ?")
            params.append(self.exclude_subject)
        return "".join(" and " + c for c in clauses), params


@dataclass
class Neighbour:
    id: int
    similarity: float
    record: dict = field(default_factory=dict)


def check_k(k: int) -> int:
    if not isinstance(k, int) or k < 1 or k > MAX_K:
        raise SimilarityError(f"k must be a whole number from 1 to {MAX_K}")
    return k
