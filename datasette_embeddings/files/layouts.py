"""Files in other layouts: which column gives which field of the shared record.

Publishers do not all write the shared record.  The Met's plain embedding files
hold ``objectID``, ``embedding``, ``model`` and ``dim``; other files have a
``title`` column that should become the ``subject_title`` attribute.  A
:class:`Layout` says where each field comes from (a column, a constant or, for
attributes, a template over columns), and :meth:`Layout.resolve` checks it
against a file's columns before a row is read, so a mapping that names a
missing column is refused with the column named and nothing loaded.

The mapping turns each Arrow batch into the canonical columns, column-wise,
and the ordinary validation in :mod:`.parquet_io` then runs unchanged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import RecordError
from .attributes import attribute_dicts

FIELDS = ("provider", "depiction_id", "subject_id", "model", "embeddings", "created", "attributes")
_TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class Layout:
    """Where each record field comes from; empty means the shared layout as it is."""

    columns: Mapping[str, str] = field(default_factory=dict)  # record field -> source column
    provider: str | None = None  # every row's provider (a provider column is then ignored)
    model: str | None = None  # every row's model label
    attributes: Mapping[str, str] = field(default_factory=dict)  # key -> column, or a template with {column}
    constant_attributes: Mapping[str, str] = field(default_factory=dict)  # key -> text
    dimensions_column: str | None = None  # a column that must equal each vector's length (the Met's `dim`)
    name: str | None = None  # the preset's name, for messages

    @property
    def is_identity(self) -> bool:
        return not (self.columns or self.provider or self.model or self.attributes
                    or self.constant_attributes or self.dimensions_column)

    def merged(self, other: "Layout") -> "Layout":
        """This layout with ``other``'s entries winning (a preset refined by options)."""
        return Layout(
            columns={**self.columns, **other.columns},
            provider=other.provider or self.provider,
            model=other.model or self.model,
            attributes={**self.attributes, **other.attributes},
            constant_attributes={**self.constant_attributes, **other.constant_attributes},
            dimensions_column=other.dimensions_column or self.dimensions_column,
            name=self.name or other.name,
        )

    def resolve(self, schema: pa.Schema, source: str | None = None) -> "ResolvedLayout":
        """Check every named column exists; decide each field's origin. Raises :class:`RecordError`."""
        names = list(schema.names)
        present = set(names)

        def missing(column: str, option: str) -> RecordError:
            return RecordError(
                f"column '{column}' named by {option} is not in the file (its columns: {', '.join(names)})",
                source=source,
            )

        for fld, column in self.columns.items():
            if fld not in FIELDS:
                raise RecordError(f"--map {fld}={column}: '{fld}' is not a record field (fields: {', '.join(FIELDS)})", source=source)
            if column not in present:
                raise missing(column, self._option("--map", f"{fld}={column}", self._preset_has("columns", fld, column)))
        origin: dict[str, str | None] = {}
        for fld in FIELDS:
            column = self.columns.get(fld) or (fld if fld in present else None)
            origin[fld] = column
        if self.provider:
            origin["provider"] = None
        if self.model:
            origin["model"] = None
        for fld, constant in (("provider", self.provider), ("model", self.model)):
            if origin[fld] is None and not constant:
                raise RecordError(
                    f"the file has no '{fld}' column: name one with --map {fld}=COLUMN or give --{fld.replace('_', '-')} TEXT "
                    f"(its columns: {', '.join(names)})", source=source)
        for fld in ("depiction_id", "embeddings"):
            if origin[fld] is None:
                raise RecordError(
                    f"the file has no '{fld}' column: name one with --map {fld}=COLUMN (its columns: {', '.join(names)})",
                    source=source)
        templates: dict[str, list] = {}
        for key, spec in self.attributes.items():
            if not key:
                raise RecordError(f"--attribute {key}={spec}: the attribute name is empty", source=source)
            if spec in present:
                templates[key] = [("column", spec)]
                continue
            fields_in = _TEMPLATE_FIELD.findall(spec)
            if not fields_in:
                raise missing(spec, self._option("--attribute", f"{key}={spec}", self._preset_has("attributes", key, spec)))
            for column in fields_in:
                if column not in present:
                    raise missing(column, self._option("--attribute", f"{key}={spec}", self._preset_has("attributes", key, spec)))
            templates[key] = _parse_template(spec)
        if self.dimensions_column and self.dimensions_column not in present:
            raise missing(self.dimensions_column, self._option("the dimensions check", self.dimensions_column, True))
        used = {c for c in origin.values() if c} | {c for parts in templates.values() for kind, c in parts if kind == "column"}
        if self.dimensions_column:
            used.add(self.dimensions_column)
        return ResolvedLayout(self, origin, templates, [n for n in names if n in used], [n for n in names if n not in used], source)

    def _preset_has(self, part: str, key: str, value: str) -> bool:
        preset = PRESETS.get(self.name or "")
        return preset is not None and getattr(preset, part).get(key) == value

    def _option(self, option: str, value: str, from_preset: bool) -> str:
        return f"{option} {value}" + (f" (of --layout {self.name})" if from_preset and self.name else "")


def _parse_template(spec: str) -> list[tuple[str, str]]:
    parts: list[tuple[str, str]] = []
    pos = 0
    for match in _TEMPLATE_FIELD.finditer(spec):
        if match.start() > pos:
            parts.append(("text", spec[pos:match.start()]))
        parts.append(("column", match.group(1)))
        pos = match.end()
    if pos < len(spec):
        parts.append(("text", spec[pos:]))
    return parts


def _as_text(arr: pa.Array, column: str, source: str | None) -> pa.Array:
    """A column as strings: text stays, numbers and booleans are written out, anything nested is refused."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    typ = arr.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return arr.cast(pa.string())
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_decimal(typ):
        return pc.cast(arr, pa.string())
    raise RecordError(f"is {typ}; only text, number or boolean columns can become text", source=source, field=column)


@dataclass
class ResolvedLayout:
    """A layout checked against one file: what to read and how to turn it into the shared record."""

    layout: Layout
    origin: dict[str, str | None]  # record field -> source column, None for a constant or default
    templates: dict[str, list[tuple[str, str]]]
    read_columns: list[str]
    ignored_columns: list[str]
    source: str | None

    def source_type(self, fld: str, schema: pa.Schema) -> pa.DataType | None:
        column = self.origin.get(fld)
        return None if column is None else schema.field(column).type

    def transform(self, batch: pa.RecordBatch, first_row: int = 0) -> pa.RecordBatch:
        """The canonical columns for one batch, built column-wise."""
        n = batch.num_rows
        col = lambda name: batch.column(batch.schema.get_field_index(name))  # noqa: E731
        out: dict[str, pa.Array] = {}
        for fld, constant in (("provider", self.layout.provider), ("model", self.layout.model)):
            out[fld] = pa.array([constant] * n, pa.string()) if constant else col(self.origin[fld])
        out["depiction_id"] = col(self.origin["depiction_id"])
        out["subject_id"] = col(self.origin["subject_id"]) if self.origin["subject_id"] else out["depiction_id"]
        out["embeddings"] = col(self.origin["embeddings"])
        out["created"] = col(self.origin["created"]) if self.origin["created"] else pa.array(np.zeros(n, dtype=np.int64))
        if self.layout.dimensions_column:
            self._check_dimensions(col(self.layout.dimensions_column), out["embeddings"], first_row)
        out["attributes"] = self._attributes(batch, col, n, first_row)
        return pa.RecordBatch.from_arrays([out[f] for f in FIELDS], names=list(FIELDS))

    def _check_dimensions(self, dims: pa.Array, vectors: pa.Array, first_row: int) -> None:
        column = self.layout.dimensions_column
        if not pa.types.is_integer(dims.type):
            raise RecordError(f"is {dims.type}, expected an integer count of dimensions", source=self.source, field=column)
        if pa.types.is_fixed_size_list(vectors.type):
            lengths = np.full(len(vectors), vectors.type.list_size)
        else:
            lengths = vectors.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        stated = dims.fill_null(-1).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(stated != lengths)
        if len(wrong):
            i = int(wrong[0])
            said = "is empty" if stated[i] == -1 else f"says {int(stated[i])}"
            raise RecordError(f"{said} but the vector has {int(lengths[i])} dimensions", row=first_row + i, field=column)

    def _attributes(self, batch: pa.RecordBatch, col, n: int, first_row: int) -> pa.Array:
        base_column = self.origin["attributes"]
        extra: dict[str, pa.Array] = {}
        for key, value in self.layout.constant_attributes.items():
            extra[key] = pa.array([value] * n, pa.string())
        for key, parts in self.templates.items():
            pieces = [
                pa.scalar(text, pa.string()) if kind == "text" else _as_text(col(text), text, self.source)
                for kind, text in parts
            ]
            if len(pieces) == 1 and not isinstance(pieces[0], pa.Scalar):
                extra[key] = pieces[0]
            else:
                extra[key] = pc.binary_join_element_wise(*pieces, "")
        if base_column is None:
            return _map_from_columns(extra, n)
        base = col(base_column)
        if not extra:
            return base
        # a file with its own attributes and extra ones: merged row by row (the rare case)
        dicts = attribute_dicts(base, first_row) if not pa.types.is_null(base.type) else [{} for _ in range(n)]
        values = {key: arr.to_pylist() for key, arr in extra.items()}
        for i, d in enumerate(dicts):
            for key, vals in values.items():
                if vals[i] is not None and vals[i] != "":
                    d[key] = vals[i]
        return pa.array([sorted(d.items()) for d in dicts], pa.map_(pa.string(), pa.string()))


def _map_from_columns(extra: Mapping[str, pa.Array], n: int) -> pa.Array:
    """A map<string,string> column from one string column per key; null or empty values are left out."""
    keys = sorted(extra)
    map_type = pa.map_(pa.string(), pa.string())
    if not keys:
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()), pa.array([], pa.string()))
    k = len(keys)
    stacked = pa.concat_arrays([extra[key].cast(pa.string()) for key in keys])  # key-major
    order = (np.arange(k)[None, :] * n + np.arange(n)[:, None]).ravel()  # row-major, keys sorted in each row
    items = stacked.take(pa.array(order))
    names = pa.array(np.tile(np.array(keys, dtype=object), n), pa.string())
    keep = pc.and_(pc.is_valid(items), pc.not_equal(pc.fill_null(items, ""), ""))
    keep_np = keep.to_numpy(zero_copy_only=False)
    counts = keep_np.reshape(n, k).sum(axis=1) if n else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    arr = pa.MapArray.from_arrays(pa.array(offsets), names.filter(keep), items.filter(keep))
    return arr.cast(map_type)


# ---------------------------------------------------------------- presets

#: The Met's plain embedding files (metmuseum/openaccess-embeddings-* on Hugging Face):
#: ``objectID`` (int64), ``embedding`` (list of floats), ``model`` (e.g. apple/MobileCLIP-S1),
#: ``dim`` (int32).  No provider, image URL or time: the provider is a constant, the
#: object page is built from the id, ``dim`` is checked against every vector.
MET_PLAIN = Layout(
    columns={"depiction_id": "objectID", "subject_id": "objectID", "embeddings": "embedding", "model": "model"},
    provider="metmuseum",
    attributes={"subject_url": "https://www.metmuseum.org/art/collection/search/{objectID}"},
    constant_attributes={
        "type": "image",
        "provider_name": "The Metropolitan Museum of Art",
        "provider_url": "https://www.metmuseum.org",
    },
    dimensions_column="dim",
    name="met-plain",
)

PRESETS: dict[str, Layout] = {"met-plain": MET_PLAIN}


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or rest == "":
            raise RecordError(f"{option} {value}: expected NAME=VALUE")
        out[key.strip()] = rest
    return out


def from_options(
    *,
    layout: str | None = None,
    maps: Sequence[str] = (),
    provider: str | None = None,
    model: str | None = None,
    attributes: Sequence[str] = (),
    set_attributes: Sequence[str] = (),
) -> Layout:
    """The layout the ``load`` options describe: a preset (if any) refined by the options."""
    base = Layout()
    if layout:
        if layout not in PRESETS:
            raise RecordError(f"unknown layout '{layout}' (known: {', '.join(sorted(PRESETS))})")
        base = PRESETS[layout]
    columns = _pairs(maps, "--map")
    for fld in columns:
        if fld not in FIELDS:
            raise RecordError(f"--map {fld}={columns[fld]}: '{fld}' is not a record field (fields: {', '.join(FIELDS)})")
    own = Layout(
        columns=columns,
        provider=provider or None,
        model=model or None,
        attributes=_pairs(attributes, "--attribute"),
        constant_attributes=_pairs(set_attributes, "--set-attribute"),
    )
    merged = base.merged(own)
    # an option for a field replaces the preset's constant for it
    if "provider" in columns and not provider:
        merged = replace(merged, provider=None)
    if "model" in columns and not model:
        merged = replace(merged, model=None)
    return merged
