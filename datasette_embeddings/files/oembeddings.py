"""The OEmbeddings attribute rules, checked per record and column-wise.

OEmbeddings (SFO Museum's proposal, a JSON Schema in ``shared/data/oembeddings``)
is the least metadata a shared record needs for a preview and an attribution:

- required: ``type`` (``image`` or ``text``), ``preview``, ``subject_url``,
  ``subject_title``, ``subject_creditline``, ``provider_name``, ``provider_url``;
- optional: ``depiction_url``;
- ``subject_title`` and ``subject_creditline`` may be empty, the others not;
- ``subject_url``, ``provider_url`` and ``depiction_url`` are URIs, and so is
  ``preview`` when ``type`` is ``image``; any other keys are allowed.

A URI is what JSON Schema's ``uri`` format means: a scheme, a colon, and no
spaces.  ``x-sfomuseum:object:1846754371`` is one; it is not a web link, which
is why pages show such values as text.

Non-conforming records are still loaded (``load`` counts them); ``validate``
lists them by problem.  Each problem is a short fixed phrase, so counts group.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REQUIRED = ("type", "preview", "subject_url", "subject_title", "subject_creditline", "provider_name", "provider_url")
OPTIONAL = ("depiction_url",)
MAY_BE_EMPTY = ("subject_title", "subject_creditline")
URI_KEYS = ("subject_url", "provider_url", "depiction_url")
TYPES = ("image", "text")
#: RFC 3986's scheme, a colon, then no whitespace or control characters (RE2 and Python alike)
URI_PATTERN = r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s\x00-\x1f\x7f]*$"
_URI = re.compile(URI_PATTERN)


def is_uri(value: str) -> bool:
    return bool(_URI.match(value))


def problems(attributes: Mapping[str, str]) -> list[str]:
    """Every OEmbeddings rule ``attributes`` breaks, as fixed phrases (empty: it conforms)."""
    found: list[str] = []
    for key in REQUIRED:
        if key not in attributes:
            found.append(f"missing {key}")
        elif attributes[key] == "" and key not in MAY_BE_EMPTY:
            found.append(f"empty {key}")
    if "depiction_url" in attributes and attributes["depiction_url"] == "":
        found.append("empty depiction_url")
    kind = attributes.get("type")
    if kind not in (None, "") and kind not in TYPES:
        found.append("type is neither image nor text")
    for key in URI_KEYS:
        value = attributes.get(key)
        if value and not is_uri(value):
            found.append(f"{key} is not a URI")
    preview = attributes.get("preview")
    if kind == "image" and preview and not is_uri(preview):
        found.append("preview is not a URI (type image)")
    return found


def problem_masks_from_dicts(rows: Iterable[Mapping[str, str]]) -> dict[str, np.ndarray]:
    """Per problem, which rows have it: the row-by-row path, for any attributes layout."""
    rows = list(rows)
    masks: dict[str, np.ndarray] = {}
    for i, attributes in enumerate(rows):
        for problem in problems(attributes):
            if problem not in masks:
                masks[problem] = np.zeros(len(rows), dtype=bool)
            masks[problem][i] = True
    return masks


def _is_plain_string_map(typ: pa.DataType) -> bool:
    plain = (pa.string(), pa.large_string())
    return pa.types.is_map(typ) and typ.key_type in plain and typ.item_type in plain


def problem_masks(arr: pa.Array) -> dict[str, np.ndarray] | None:
    """Per problem, which rows of a ``map<string,string>`` column have it, computed column-wise.

    The same answers as :func:`problems` row by row, without a Python dict per
    row: ``load`` counts every batch, so this works on the map's flat key and
    value arrays (one lookup of every key, one pattern match of the URI values).
    ``None`` for other layouts and for columns holding null maps.
    """
    if not _is_plain_string_map(arr.type) or arr.null_count:
        return None
    n = len(arr)
    offsets = arr.offsets.to_numpy()
    start, count = int(offsets[0]), int(offsets[-1] - offsets[0])
    # a sliced batch keeps absolute offsets; ``.keys``/``.items`` may be the whole child array
    base = start if len(arr.keys) == count else 0
    keys = arr.keys.slice(start - base, count)
    items = arr.items.slice(start - base, count)
    row_of = np.repeat(np.arange(n), np.diff(offsets))
    known = REQUIRED + OPTIONAL
    index = pc.index_in(keys, value_set=pa.array(known, keys.type)).fill_null(-1).to_numpy(zero_copy_only=False)
    ours = index >= 0
    rows, which = row_of[ours], index[ours]
    values = items.filter(pa.array(ours))
    present = np.zeros((n, len(known)), dtype=bool)
    present[rows, which] = True
    empty_entry = pc.fill_null(pc.equal(values, ""), True).to_numpy(zero_copy_only=False)
    empty = np.zeros((n, len(known)), dtype=bool)
    empty[rows[empty_entry], which[empty_entry]] = True
    col = {key: i for i, key in enumerate(known)}
    masks: dict[str, np.ndarray] = {}

    def put(name: str, mask: np.ndarray) -> None:
        if mask.any():
            masks[name] = mask

    for key in REQUIRED:
        put(f"missing {key}", ~present[:, col[key]])
        if key not in MAY_BE_EMPTY:
            put(f"empty {key}", empty[:, col[key]])
    put("empty depiction_url", empty[:, col["depiction_url"]])
    # type: its value per row (rows without one keep None)
    is_type = which == col["type"]
    type_values = values.filter(pa.array(is_type))
    type_rows = rows[is_type]
    image = np.zeros(n, dtype=bool)
    image[type_rows[pc.fill_null(pc.equal(type_values, "image"), False).to_numpy(zero_copy_only=False)]] = True
    bad_type = pc.fill_null(pc.invert(pc.or_(pc.is_in(type_values, value_set=pa.array(TYPES, type_values.type)),
                                             pc.equal(type_values, ""))), False).to_numpy(zero_copy_only=False)
    mask = np.zeros(n, dtype=bool)
    mask[type_rows[bad_type]] = True
    put("type is neither image nor text", mask)
    # one pattern match over every value that must be a URI
    uri_keys = [col[k] for k in URI_KEYS] + [col["preview"]]
    checked = np.isin(which, uri_keys) & ~empty_entry
    not_uri = np.zeros(len(which), dtype=bool)
    if checked.any():
        matched = pc.match_substring_regex(values.filter(pa.array(checked)), URI_PATTERN)
        not_uri[np.flatnonzero(checked)] = ~pc.fill_null(matched, False).to_numpy(zero_copy_only=False)
    for key in URI_KEYS:
        mask = np.zeros(n, dtype=bool)
        mask[rows[not_uri & (which == col[key])]] = True
        put(f"{key} is not a URI", mask)
    mask = np.zeros(n, dtype=bool)
    mask[rows[not_uri & (which == col["preview"])]] = True
    put("preview is not a URI (type image)", mask & image)
    return masks


def nonconforming(masks: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Rows with at least one problem."""
    out = np.zeros(n, dtype=bool)
    for mask in masks.values():
        out |= mask
    return out
