"""`validate FILE` takes `load`'s reading options and refuses what `load` refuses, with the same message.

Every case runs the same file with the same options through both commands and
compares the verdict: the exit code and the `Error:` line (file, row, field), or,
for a file `load` accepts, the number of records and of non-conforming ones.
"""
from __future__ import annotations

import json
import re

import click
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_embeddings.cli import MAPPING_OPTIONS, READING_OPTIONS, cli
from tests.helpers import make_records, write_go_layout, write_met_plain, write_parquet

#: load's options that are about the database, not about reading a file
LOAD_ONLY = {"--batch-size", "--quiet", "-q"}


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def options_of(command: click.Command) -> dict[str, click.Option]:
    return {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts}


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


# ---------------------------------------------------------------- files


def met(tmp_path, **kwargs):
    path = tmp_path / "met.parquet"
    write_met_plain(path, **kwargs)
    return path


def met_wrong_dim(tmp_path):
    return met(tmp_path, n=4, dims=8, dim_column=[8, 8, 512, 8])


def no_provider_zero_vector(tmp_path):
    """No provider column; row 1's vector is all zeros (no cosine: load refuses it)."""
    path = tmp_path / "noprov.parquet"
    vectors = [[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]]
    pq.write_table(pa.table({"depiction_id": ["a", "b", "c"], "embeddings": pa.array(vectors, pa.list_(pa.float32())),
                             "model": ["m"] * 3}), str(path))
    return path


def no_model_nan(tmp_path):
    """No model column; row 2's vector holds a NaN."""
    path = tmp_path / "nomodel.parquet"
    vectors = [[1.0, 2.0], [2.0, 1.0], [float("nan"), 1.0]]
    pq.write_table(pa.table({"provider": ["p"] * 3, "depiction_id": ["a", "b", "c"],
                             "embeddings": pa.array(vectors, pa.list_(pa.float32()))}), str(path))
    return path


def nested_column(tmp_path):
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"depiction_id": ["a"], "embeddings": pa.array([[1.0, 2.0]], pa.list_(pa.float32())),
                             "tags": pa.array([["x", "y"]])}), str(path))
    return path


def footer_lies(tmp_path):
    """Shared layout whose go-embeddingsdb footer names a model no row has."""
    records = make_records(n=3, models={"m": 4})
    path = tmp_path / "go.parquet"
    write_go_layout(path, records, footer={"embeddingsdb:models": "m;apple/mobileclip_s0"})
    return path


#: (id, file builder, options): each is refused by load, and must be by validate, with the same message
REFUSED = [
    ("layout-dim-mismatch", met_wrong_dim, ["--layout", "met-plain"]),
    ("layout-unknown", met, ["--layout", "met-fancy"]),
    ("map-missing-column", met, ["--layout", "met-plain", "--map", "depiction_id=objectid"]),
    ("map-mistyped-column", met, ["--layout", "met-plain", "--map", "embeddings=dim"]),
    ("map-not-a-field", met, ["--layout", "met-plain", "--map", "colour=model"]),
    ("map-malformed", met, ["--map", "depiction_id"]),
    ("no-provider-given", no_provider_zero_vector, []),
    ("provider-then-zero-vector", no_provider_zero_vector, ["--provider", "p"]),
    ("model-then-nan", no_model_nan, ["--model", "m"]),
    ("attribute-missing-column", met, ["--layout", "met-plain", "--attribute", "subject_title=title"]),
    ("attribute-template-missing-column", met, ["--layout", "met-plain", "--attribute", "preview=https://x.org/{image}"]),
    ("attribute-nested-column", nested_column, ["--provider", "p", "--model", "m", "--attribute", "tags=tags"]),
    ("set-attribute-malformed", met, ["--layout", "met-plain", "--set-attribute", "credit"]),
    ("footer-mismatch-error", footer_lies, ["--footer-mismatch", "error"]),
]

#: (id, file builder, options): loaded by load; validate reads the same records
ACCEPTED = [
    ("met-plain", met, ["--layout", "met-plain"]),
    ("met-by-hand", met, ["--map", "depiction_id=objectID", "--map", "embeddings=embedding", "--provider", "the-met",
                          "--set-attribute", "type=image",
                          "--attribute", "subject_url=https://www.metmuseum.org/art/collection/search/{objectID}"]),
    ("model-constant", met, ["--layout", "met-plain", "--model", "apple/MobileCLIP-S2", "--set-attribute", "subject_creditline=CC0"]),
    ("footer-mismatch-warn", footer_lies, ["--footer-mismatch", "warn"]),
]


def test_validate_takes_every_reading_option_of_load_defined_once():
    load, validate = options_of(cli.commands["load"]), options_of(cli.commands["validate"])
    reading = set(load) - LOAD_ONLY
    assert reading == {opt for decorator in READING_OPTIONS for opt in decorator(lambda: None).__click_params__[0].opts}
    assert reading <= set(validate)
    for opt in reading:
        a, b = load[opt], validate[opt]
        assert (a.name, a.help, a.multiple, a.default, str(a.type)) == (b.name, b.help, b.multiple, b.default, str(b.type)), opt


def test_info_takes_the_mapping_options_defined_once():
    load, info = options_of(cli.commands["load"]), options_of(cli.commands["info"])
    mapping = {opt for decorator in MAPPING_OPTIONS for opt in decorator(lambda: None).__click_params__[0].opts}
    assert mapping <= set(info) and "--footer-mismatch" not in info
    for opt in mapping:
        a, b = load[opt], info[opt]
        assert (a.name, a.help, a.multiple, a.default, str(a.type)) == (b.name, b.help, b.multiple, b.default, str(b.type)), opt


#: the refusals a file's schema alone decides: info, which reads only the footer, refuses them too
SCHEMA_ONLY = {"layout-unknown", "map-missing-column", "map-mistyped-column", "map-not-a-field", "map-malformed",
               "attribute-missing-column", "attribute-template-missing-column", "set-attribute-malformed"}


@pytest.mark.parametrize("build,args", [c[1:] for c in REFUSED if c[0] in SCHEMA_ONLY],
                         ids=[c[0] for c in REFUSED if c[0] in SCHEMA_ONLY])
def test_info_refuses_a_mapping_load_refuses_with_the_same_message(tmp_path, build, args):
    path = build(tmp_path)
    loaded = invoke("load", tmp_path / "x.db", path, *args)
    described = invoke("info", path, *args)
    assert described.exit_code == loaded.exit_code == 1
    assert errors(described) == errors(loaded) and len(errors(loaded)) == 1


def test_every_reading_option_has_a_case_here():
    used = {arg for cases in (REFUSED, ACCEPTED) for _id, _f, args in cases for arg in args if arg.startswith("--")}
    assert set(options_of(cli.commands["load"])) - LOAD_ONLY <= used


@pytest.mark.parametrize("build,args", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_validate_refuses_what_load_refuses_with_the_same_message(tmp_path, build, args):
    path = build(tmp_path)
    loaded = invoke("load", tmp_path / "x.db", path, *args)
    validated = invoke("validate", path, *args)
    assert loaded.exit_code == 1, loaded.output
    assert not (tmp_path / "x.db").exists()
    assert validated.exit_code == 1, validated.output
    assert errors(validated) == errors(loaded) and len(errors(loaded)) == 1, (loaded.stderr, validated.stderr)
    located = re.search(r", row \d+, field '", errors(loaded)[0])
    if located:
        assert errors(loaded)[0].startswith(f"Error: {path}, row ")
    assert validated.stdout == ""


@pytest.mark.parametrize("build,args", [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_validate_reads_the_records_load_loads(tmp_path, build, args):
    path = build(tmp_path)
    db = tmp_path / "x.db"
    loaded = invoke("load", db, path, *args)
    assert loaded.exit_code == 0, loaded.output
    validated = invoke("validate", path, *args, "--json")
    assert validated.exit_code in (0, 1) and not errors(validated), validated.output
    report = json.loads(validated.stdout)
    stored = json.loads(invoke("validate", db, "--json").stdout)
    # the same records, and the same verdict on their attributes as on the stored ones
    assert report["records"] == stored["records"] > 0
    assert report["nonconforming"] == stored["nonconforming"]
    assert {k: p["count"] for k, p in report["problems"].items()} == {k: p["count"] for k, p in stored["problems"].items()}
    assert validated.exit_code == (1 if report["nonconforming"] else 0)
    # warnings as load gives them
    warned = lambda r: [line for line in r.stderr.splitlines() if line.startswith("Warning:")]  # noqa: E731
    assert warned(validated) == warned(loaded)
    assert report["warnings"] == [line.split(": ", 2)[2] for line in warned(loaded)]


def test_validate_refuses_mapping_options_for_a_database(tmp_path):
    db = tmp_path / "x.db"
    write_parquet(tmp_path / "a.parquet", make_records(n=2))
    assert invoke("load", db, tmp_path / "a.parquet").exit_code == 0
    result = invoke("validate", db, "--layout", "met-plain")
    assert result.exit_code == 1 and "is a database" in result.stderr and "--layout" in result.stderr


def test_validate_counts_the_records_per_provider_and_model_as_load_reports_them(tmp_path):
    records = make_records(n=3, providers=("sfomuseum", "nga"), models={"apple/mobileclip_s0": 8, "google/siglip2": 12})
    path = tmp_path / "two.parquet"
    write_parquet(path, records)
    loaded = invoke("load", tmp_path / "x.db", path)
    report = json.loads(invoke("validate", path, "--json").stdout)
    expected = [{"provider": p, "model": m, "records": 3} for p in ("nga", "sfomuseum")
                for m in ("apple/mobileclip_s0", "google/siglip2")]
    assert report["per_provider_model"] == expected
    assert json.loads(invoke("validate", tmp_path / "x.db", "--json").stdout)["per_provider_model"] == expected
    for group in expected:
        assert f"  {group['provider']}  {group['model']}  3" in loaded.stdout
    text = invoke("validate", path).stdout
    assert "Records per provider and model:\n  nga  apple/mobileclip_s0  3\n" in text
