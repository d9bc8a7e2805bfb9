"""Where a published checkpoint's weights come from: the local Hugging Face cache.

Nothing here downloads on its own account.  With ``HF_HUB_OFFLINE=1`` (how a public
Datasette instance should run) a checkpoint that is not in the cache is refused
up front with a message naming it, its size and the command that fetches it,
instead of the library's long traceback about connection errors.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Generic, TypeVar

from .catalogue import ModelSpec

T = TypeVar("T")


class LoadOnce(Generic[T]):
    """A checkpoint's weights, loaded by ``loader`` at most once however many threads ask.

    Loading takes seconds and gigabytes, so a second thread asking while the first loads
    waits for that load instead of starting its own.  A load that raises is not kept:
    the next call tries again (the missing checkpoint may have been downloaded since).
    Calling the object is a plain blocking callable, so whoever decides *when* weights
    load (a background thread at startup) can run it anywhere.
    """

    def __init__(self, loader: Callable[[], T]) -> None:
        self._loader = loader
        self._value: T | None = None
        self._done = False
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (asked without loading them)."""
        return self._done

    def __call__(self) -> T:
        if self._done:
            return self._value  # type: ignore[return-value]
        with self._lock:
            if not self._done:
                self._value = self._loader()
                self._done = True
        return self._value  # type: ignore[return-value]


def offline() -> bool:
    """Whether the Hugging Face libraries are forbidden to download (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    # the environment as it is now, and as huggingface_hub read it when it was imported
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return bool(constants.is_offline_mode()) if hasattr(constants, "is_offline_mode") else False


def cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def is_cached(repo: str, filename: str) -> bool:
    """Whether ``filename`` of ``repo`` (its ``main`` revision) is in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


def packages_found(*names: str) -> bool:
    """Whether these packages are installed, found without importing them (torch is slow to import)."""
    import importlib.util

    for name in names:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):  # a module set to None in sys.modules counts as missing
            return False
    return True


def available(spec: ModelSpec, packages: tuple[str, ...], filenames: tuple[str, ...]) -> bool:
    """Whether ``spec`` can embed here now: runnable, its packages installed, and (offline) its weights cached.

    Pages ask this before offering search by meaning, so a missing checkpoint on an
    offline server is said up front rather than on the first query.
    """
    if spec.unavailable or not packages_found(*packages):
        return False
    return not offline() or any(is_cached(spec.checkpoint, f) for f in filenames)


def require(spec: ModelSpec, *filenames: str) -> None:
    """Refuse, naming the checkpoint, when none of ``filenames`` is cached and downloads are off."""
    from ..runtime import EmbeddingError

    if offline() and not any(is_cached(spec.checkpoint, f) for f in filenames):
        raise EmbeddingError(
            f"model '{spec.label}' needs the checkpoint '{spec.checkpoint}' (about {spec.download_mb:,} MB), "
            f"which is not in the Hugging Face cache ({cache_dir()}) and HF_HUB_OFFLINE=1 forbids "
            f"downloading it: run `hf download {spec.checkpoint}` where there is network "
            "(with the same HF_HOME), or unset HF_HUB_OFFLINE for the first use"
        )


def load_failed(spec: ModelSpec, ex: Exception):
    """The error for a checkpoint that is present but will not load (corrupt, wrong library version)."""
    from ..runtime import EmbeddingError

    return EmbeddingError(
        f"model '{spec.label}': the checkpoint '{spec.checkpoint}' could not be loaded "
        f"({type(ex).__name__}: {ex}); delete it from {cache_dir()} and download it again"
    )
