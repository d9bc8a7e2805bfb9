"""Reading an attributes column of any layout into checked string maps, row by row.

Its own module because two readers need it: :mod:`parquet_io` (the shared record) and
:mod:`layouts` (files in other layouts that add attributes to a column of their own).
"""
from __future__ import annotations

import json
import math
from typing import Iterable

import pyarrow as pa

from ..errors import RecordError


def is_string(typ: pa.DataType) -> bool:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or getattr(pa.types, "is_string_view", lambda t: False)(typ)


def attribute_dicts(arr: pa.Array, first_row: int) -> list[dict]:
    """The checked path: every layout, row by row, with errors naming the row and key."""
    typ = arr.type
    out: list[dict] = []
    if is_string(typ):
        if pa.types.is_dictionary(typ):
            arr = arr.dictionary_decode()
        for i, text in enumerate(arr.to_pylist()):
            if text is None or text == "":
                out.append({})
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                raise RecordError("is text but not a JSON object", row=first_row + i, field="attributes") from None
            if not isinstance(obj, dict):
                raise RecordError("must be a JSON object of key/value strings", row=first_row + i, field="attributes")
            out.append(clean_attributes(obj.items(), first_row + i))
        return out
    if pa.types.is_struct(typ):
        for i, obj in enumerate(arr.to_pylist()):
            out.append(clean_attributes((obj or {}).items(), first_row + i))
        return out
    # map<k,v> and list<struct<key,value>> both come back as lists of pairs/dicts
    for i, items in enumerate(arr.to_pylist()):
        if items is None:
            out.append({})
            continue
        pairs = [(kv["key"], kv["value"]) if isinstance(kv, dict) else kv for kv in items]
        out.append(clean_attributes(pairs, first_row + i))
    return out


def clean_attributes(pairs: Iterable, row: int) -> dict:
    """Attributes are a flat string map; scalars are stringified, nesting is refused."""
    result: dict[str, str] = {}
    for key, value in pairs:
        if key is None or not isinstance(key, str) or key == "":
            raise RecordError("has an empty or non-text key", row=row, field="attributes")
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise RecordError("holds a non-finite number", row=row, field=f"attributes.{key}")
            value = str(value)
        elif isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise RecordError("is not valid UTF-8 text", row=row, field=f"attributes.{key}") from None
        elif not isinstance(value, str):
            raise RecordError(
                f"holds a nested {type(value).__name__}; attribute values must be strings",
                row=row, field=f"attributes.{key}",
            )
        result[key] = value
    return result
