"""Query-string parameters every page reads the same way, refused with a message naming them."""
from __future__ import annotations

from ..errors import InvalidRequestError


def int_param(args, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within ``low..high``, or a 400 naming it."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise InvalidRequestError(f"{name} must be a whole number from {low} to {high}, got '{raw[:40]}'")
    return value
