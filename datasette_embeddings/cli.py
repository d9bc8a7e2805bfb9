"""The ``datasette-embeddings`` command: a thin click layer over the modules."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import sys
import time
from typing import TYPE_CHECKING

import click

from .errors import EmbeddingsError
from .files import exporter, loader
from .embedding.colour_layout import MODEL_ID as BUILTIN_IMAGE_MODEL

if TYPE_CHECKING:
    from .files.layouts import Layout


#: C0 and C1 control characters and DEL: ESC (0x1b) and CSI (0x9b) start ANSI sequences
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character shown as ``\\xNN``.

    Providers, model labels, column names and file names come from files and
    databases anyone can write; raw, an escape sequence in one could recolour,
    retitle or rewrite the user's terminal, and a newline could forge a line.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def echo(line: str, **kwargs) -> None:
    """One line of output that may carry data: printed with its control characters escaped."""
    click.echo(printable(line), **kwargs)


class CommandError(click.ClickException):
    """``Error: ...`` on stderr, exit code 1; the message is escaped like :func:`echo`."""

    def format_message(self) -> str:
        return printable(self.message)


def _version() -> str:
    """This distribution's version (named datasette-museum-embeddings; an older install may still carry the old name)."""
    from importlib.metadata import PackageNotFoundError, version

    for name in ("datasette-museum-embeddings", "datasette-embeddings"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


@click.group()
@click.version_option(version=_version(), prog_name="datasette-embeddings")
def cli() -> None:
    """Load, export and inspect shared museum embeddings in SQLite."""


class _Progress:
    """Rows/s on a terminal; silent when quiet or when stderr is not a TTY."""

    def __init__(self, enabled: bool, unit: str = "rows"):
        self.enabled = enabled
        self.unit = unit
        self.rows = 0
        self.started = time.perf_counter()
        self.last = 0.0

    def __call__(self, n: int) -> None:
        self.rows += n
        now = time.perf_counter()
        if self.enabled and now - self.last > 0.25:
            self.last = now
            rate = self.rows / max(now - self.started, 1e-9)
            click.echo(f"\r{self.rows:,} {self.unit}  {rate:,.0f} {self.unit}/s", nl=False, err=True)

    def done(self) -> None:
        if self.enabled and self.rows:
            click.echo(err=True)


#: how a Parquet file's columns become records.  Every command that reads files as
#: ``load`` does takes exactly these (:func:`mapping_options`), so ``validate FILE`` or
#: ``info FILE`` with the same options sees what ``load`` would load.
MAPPING_OPTIONS = (
    click.option("--layout", "layout_name", help="A preset column mapping for a known file layout: met-plain"),
    click.option("--map", "maps", multiple=True, metavar="FIELD=COLUMN",
                 help="Read a record field (provider, depiction_id, subject_id, model, embeddings, created, attributes) from COLUMN (repeatable)"),
    click.option("--provider", help="Provider of every record (for files without a provider column)"),
    click.option("--model", help="Model label of every record (for files without a model column)"),
    click.option("--attribute", "attributes", multiple=True, metavar="KEY=COLUMN",
                 help="Attribute KEY from COLUMN, or from a template such as 'https://example.org/{id}' (repeatable)"),
    click.option("--set-attribute", "set_attributes", multiple=True, metavar="KEY=TEXT",
                 help="Attribute KEY set to TEXT on every record (repeatable)"),
)

#: what to do when a file's footer contradicts its rows (``load`` and ``validate``, which read the rows)
FOOTER_MISMATCH_OPTION = click.option(
    "--footer-mismatch", type=click.Choice(["error", "warn"]), default="error", show_default=True,
    help="When a file's embeddingsdb footer metadata contradicts its rows: refuse the file, or read it with a warning")

#: everything that says how ``load`` reads a file's rows
READING_OPTIONS = (FOOTER_MISMATCH_OPTION, *MAPPING_OPTIONS)


def mapping_options(command):
    """Add :data:`MAPPING_OPTIONS` to ``command``, which receives them as one ``layout``.

    The options become a :class:`~.files.layouts.Layout` here, once, so the
    commands that share them cannot read the same options differently; a
    malformed mapping is an error (exit 1) before anything is read.
    """
    @functools.wraps(command)
    def with_layout(*args, layout_name, maps, provider, model, attributes, set_attributes, **kwargs):
        from .errors import RecordError
        from .files import layouts

        try:
            layout = layouts.from_options(layout=layout_name, maps=maps, provider=provider, model=model,
                                          attributes=attributes, set_attributes=set_attributes)
        except RecordError as ex:
            raise CommandError(str(ex))
        return command(*args, layout=layout, **kwargs)

    for option in reversed(MAPPING_OPTIONS):
        with_layout = option(with_layout)
    return with_layout


def reading_options(command):
    """:data:`READING_OPTIONS`: the mapping as ``layout``, and ``footer_mismatch``."""
    return FOOTER_MISMATCH_OPTION(mapping_options(command))


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1, required=True)
@click.option("--batch-size", default=4096, show_default=True, help="Rows read and written per batch")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary")
@reading_options
def load(db: str, sources: tuple[str, ...], batch_size: int, quiet: bool, footer_mismatch: str, layout: "Layout") -> None:
    """Load Parquet files, directories of them, or http(s) URLs into DB.

    Each file loads in one transaction. Records are keyed on
    (provider, depiction_id, model): a newer row replaces the stored one.
    A second load of the same DB waits until the first has finished.

        datasette-embeddings load collection.db embeddings/ https://example.org/more.parquet
    """
    progress = _Progress(enabled=not quiet and sys.stderr.isatty())

    def file_done(report: loader.FileReport) -> None:
        progress.done()
        for warning in report.warnings:
            echo(f"Warning: {report.source}: {warning}", err=True)
        if not quiet:
            c = report.counts
            echo(
                f"{report.source}: {report.rows:,} rows in {report.seconds:.1f}s "
                f"({c.inserted:,} new, {c.updated:,} replaced, {c.unchanged:,} unchanged, {c.stale:,} older than stored)"
                + (f"; ignored columns: {', '.join(report.ignored_columns)}" if report.ignored_columns else "")
                + (f"; {report.nonconforming:,} record(s) do not follow the OEmbeddings attribute rules (see validate)"
                   if report.nonconforming else "")
            )

    def waiting(pid: str) -> None:
        # said even with --quiet: a command that seems to hang must say why
        holder = f" (pid {pid})" if pid.isdigit() else ""
        echo(f"{db}: another load of this database{holder} is running; waiting for it to finish", err=True)

    try:
        report = loader.load(db, sources, batch_size=batch_size, progress=progress, on_file_done=file_done, on_wait=waiting,
                             footer_mismatch=footer_mismatch, layout=layout)
    except loader.LoadError as ex:
        progress.done()
        raise CommandError(str(ex))
    if not quiet:
        echo("Loaded per provider and model:")
        for (provider, model), n in sorted(report.per_provider_model().items()):
            echo(f"  {provider}  {model}  {n:,}")


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Parquet file to write")
@click.option("--provider", "providers", multiple=True, help="Only this provider (repeatable)")
@click.option("--model", "models", multiple=True, help="Only this model label (repeatable)")
def export(db: str, output: str, providers: tuple[str, ...], models: tuple[str, ...]) -> None:
    """Export records from DB to Parquet in the canonical layout.

    The file is complete or absent: it gets its name only when finished. The
    records are one snapshot, even while a load runs.

        datasette-embeddings export collection.db -o nga.parquet --provider nga
    """
    def interrupted(signum, frame):
        raise KeyboardInterrupt  # so the unfinished file is removed on the way out, as on Ctrl-C

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    try:
        n = exporter.export(db, output, providers=providers, models=models)
    except exporter.ExportError as ex:
        raise CommandError(str(ex))
    except Exception as ex:
        raise CommandError(f"{db}: {type(ex).__name__}: {ex}")
    echo(f"Wrote {n:,} records to {output}", err=True)


def _no_mapping_for_a_database(source: str, layout: "Layout") -> None:
    if not layout.is_identity:
        raise CommandError(f"{source}: is a database; --layout, --map, --provider, --model, --attribute "
                           "and --set-attribute apply to Parquet files")


@cli.command()
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
@mapping_options
def info(source: str, as_json: bool, layout: "Layout") -> None:
    """Providers, models, dimensions and counts of a database, a Parquet file or a URL.

    For Parquet only the footer is read (for a URL, with HTTP range requests):
    the row count, the go-embeddingsdb metadata and the row groups' column
    statistics, never the rows. The mapping options (as `load` takes them) are
    checked against the file's columns and say which columns to describe.

    \b
        datasette-embeddings info collection.db --json
        datasette-embeddings info https://example.org/nga.parquet
        datasette-embeddings info met.parquet --layout met-plain
    """
    from .errors import RecordError
    from .files import file_info
    from .files.info import database_info

    if not file_info.is_url(source) and not os.path.exists(source):
        raise click.BadParameter(f"File '{source}' does not exist.", param_hint="'SOURCE'")
    try:
        kind = file_info.kind_of(source)
        if kind == "parquet":
            data = file_info.describe(source, layout)
        else:
            _no_mapping_for_a_database(source, layout)
            data = database_info(source)
    except (RecordError, EmbeddingsError) as ex:
        raise CommandError(str(ex))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if kind == "parquet":
        _echo_parquet_info(data)
        return
    echo(f"{data['records']:,} records")
    echo("Models:")
    for m in data["models"]:
        echo(f"  {m['label']}  {m['dimensions']}-d  {m['records']:,} records" + (f"  (llm: {m['llm_model_id']})" if m["llm_model_id"] else ""))
    echo("Providers:")
    for p in data["providers"]:
        echo(f"  {p['provider']}  {p['model']}  {p['count']:,}")


@cli.command()
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
@click.option("--examples", default=3, show_default=True, type=click.IntRange(0, 1000), help="Examples shown per problem")
@reading_options
def validate(source: str, as_json: bool, examples: int, footer_mismatch: str, layout: "Layout") -> None:
    """Check the attributes of a Parquet file, URL or database against the OEmbeddings rules.

    Prints each problem with its count and a few example records; exits 1 when
    any record breaks a rule, 0 when all conform. A file is read as `load` reads
    it, with the same mapping options: what `load` would refuse, `validate`
    refuses with the same message.

    \b
        datasette-embeddings validate sfomuseum.parquet
        datasette-embeddings validate met.parquet --layout met-plain
        datasette-embeddings validate collection.db --json
    """
    from .errors import RecordError
    from .files import file_info, validate as validate_module

    if not file_info.is_url(source) and not os.path.exists(source):
        raise click.BadParameter(f"File '{source}' does not exist.", param_hint="'SOURCE'")
    try:
        if file_info.kind_of(source) == "sqlite":
            _no_mapping_for_a_database(source, layout)
            report = validate_module.validate_database(source, examples=examples)
        else:
            with loader.local_copy(source, layout) as path:
                report = validate_module.validate_file(path, layout=layout, examples=examples, source=source,
                                                       footer_mismatch=footer_mismatch)
    except (RecordError, loader.LoadError) as ex:
        raise CommandError(str(ex))
    for warning in report.warnings:
        echo(f"Warning: {source}: {warning}", err=True)
    data = report.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        echo(f"{source}: {report.records:,} records, {report.nonconforming:,} not following the OEmbeddings attribute rules")
        echo("Records per provider and model:")
        for group in data["per_provider_model"]:
            echo(f"  {group['provider']}  {group['model']}  {group['records']:,}")
        if data["problems"]:
            echo("Problems:")
        for name, problem in data["problems"].items():
            echo(f"  {name}: {problem['count']:,}")
            for ex in problem["examples"]:
                where = f"row {ex['row']}" if "row" in ex else f"id {ex['id']}"
                echo(f"      {where}  {ex['provider']}  {ex['depiction_id']}  {ex['model']}")
    if report.nonconforming:
        sys.exit(1)


def _echo_parquet_info(data: dict) -> None:
    echo(f"{data['source']}: Parquet, {data['rows']:,} rows in {data['row_groups']:,} row group(s), {data['bytes']:,} bytes")
    if "bytes_read" in data:
        echo(f"Read {data['bytes_read']:,} bytes of it in {data['requests']} range request(s)")
    layout = "the shared record layout" if data["shared_layout"] else "another layout (see load --map / --layout)"
    echo(f"Columns: {', '.join(data['columns'])} ({layout})")
    if data["footer"]:
        echo("Models (from the footer):")
        for m in data["models"]:
            dims = f"{m['dimensions']}-d" if m["dimensions"] is not None else "dimensions not stated"
            providers = ", ".join(m["providers"]) if m["providers"] is not None else "providers not stated"
            echo(f"  {m['label']}  {dims}  ({providers})")
        echo("Providers (from the footer):")
        for p in data["providers"]:
            models = ", ".join(p["models"]) if p["models"] is not None else "models not stated"
            echo(f"  {p['provider']}  ({models})")
    else:
        echo("No embeddingsdb footer metadata")
    stats = data["statistics"]
    if stats["groups"]:
        echo("Rows per provider and model (from the row groups' column statistics):")
        for g in stats["groups"]:
            dims = f"{g['dimensions']}-d" if g["dimensions"] is not None else "dimensions unknown"
            echo(f"  {g['provider']}  {g['model']}  {dims}  {g['rows']:,} rows")
    if stats["unknown_rows"]:
        echo(f"{stats['unknown_rows']:,} rows in row groups whose statistics name no single provider and model "
             "(only reading the rows tells: load, validate)")


@cli.command(name="neighbours")
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "models", multiple=True, help="Only this model label (repeatable); default all models")
@click.option("--k", default=10, show_default=True, type=int, help="Neighbours stored per record")
def neighbours(db: str, models: tuple[str, ...], k: int) -> None:
    """Precompute every record's k nearest records into the `neighbours` table of DB.

    For fully static, read-only publishing: record pages read the table instead
    of searching, until the next `load` makes it stale. Re-running replaces the
    model's older rows in one transaction. (`neighbors` is the same command.)

        datasette-embeddings neighbours collection.db --model apple/mobileclip_s0 --k 20
    """
    from .search import neighbours as neighbours_module

    store = _open_for_writing(db)
    try:
        neighbours_module.build(store.conn, models, k, progress=lambda line: echo(line, err=True))
    except EmbeddingsError as ex:
        raise CommandError(f"{db}: {ex}")
    finally:
        store.conn.close()


@cli.command(name="map")
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "models", multiple=True, help="Only this model label (repeatable); default all models")
@click.option("--method", type=click.Choice(["pca", "umap"]), default="pca", show_default=True,
              help="2D layout: PCA (NumPy) or UMAP (the umap extra)")
@click.option("--clusters", "n_clusters", type=int, default=None,
              help="k-means clusters per model [default: about sqrt(records / 2), 2 to 100]")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed for k-means, UMAP and sampling")
def map_command(db: str, models: tuple[str, ...], method: str, n_clusters: int | None, seed: int) -> None:
    """Lay out every record of each model in 2D, cluster it, and store both in DB.

    Pages /<db>/-/map and /<db>/-/clusters serve what this stores, until a
    later `load` makes it stale. Also stores each model's similarity distribution.

        datasette-embeddings map collection.db --model apple/mobileclip_s0 --clusters 40
    """
    from .errors import EmbeddingsError
    from .search import maps

    conn = _open(db, readonly=False).conn
    try:
        maps.build(conn, models, method=method, n_clusters=n_clusters, seed=seed,
                   progress=lambda line: echo(line, err=True))
    except EmbeddingsError as ex:
        raise CommandError(f"{db}: {ex}")
    finally:
        conn.close()


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--from", "source", required=True, help="Provider whose records are linked")
@click.option("--to", "targets", multiple=True, help="Provider to link to (repeatable); default all other providers")
@click.option("--model", "models", multiple=True, help="Model label (repeatable); several also store their fused ranking")
@click.option("--k", default=5, show_default=True, type=int, help="Links kept per source record (or subject)")
@click.option("--threshold", default=0.0, show_default=True, type=float, help="Lowest similarity kept")
@click.option("--level", type=click.Choice(["depiction", "subject"]), default="depiction", show_default=True,
              help="Link records as they are, or objects (a subject's depictions as one)")
@click.option("--comparison", "comparisons", multiple=True,
              type=click.Choice(["image-image", "text-text", "text-image", "image-text"]),
              help="Only this comparison type (repeatable); default every type the records hold")
@click.option("--force", is_flag=True, help="Recompute even when the stored links are current")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Threads over blocks of records, each with one BLAS thread  [default: one per core]")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary")
def links(db: str, source: str, targets: tuple[str, ...], models: tuple[str, ...], k: int, threshold: float,
          level: str, comparisons: tuple[str, ...], force: bool, workers: int | None, quiet: bool) -> None:
    """Compute cross-collection links into the `links` table of DB.

    For every record (or subject) of --from, its k best matches among the records of
    each --to provider under the same model, exact, by blocked matrix products. A
    model whose data has not changed since its last run is skipped; a later `load`
    makes its links stale until this runs again.

        datasette-embeddings links demo.db --from met --to brooklyn --model minilm --k 5 --level subject
    """
    from .errors import EmbeddingsError
    from .search import blas_threads
    from .search import links as links_module

    workers = workers or os.cpu_count() or 1
    conn = _open(db, readonly=False).conn
    bar = _Bar(enabled=not quiet and sys.stderr.isatty())
    try:
        # threads over blocks, one core each; a single worker lets BLAS use every core itself
        with blas_threads.limited(1) if workers > 1 else contextlib.nullcontext():
            summaries = links_module.compute(
                conn, source, targets, models, k=k, threshold=threshold, level=level, comparisons=comparisons,
                progress=bar, force=force, workers=workers,
            )
    except EmbeddingsError as ex:
        bar.done()
        raise click.ClickException(f"{db}: {ex}")
    finally:
        conn.close()
    bar.done()
    if not quiet:
        for s in summaries:
            state = "current, skipped" if s.skipped else f"{s.seconds:.1f}s"
            click.echo(f"{s.model}  {source} -> {s.target_provider}  {level}: {s.links:,} links ({state})")


class _Bar:
    """A one-line progress bar on stderr (a terminal only)."""

    def __init__(self, enabled: bool, width: int = 30):
        self.enabled = enabled
        self.width = width
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        filled = int(self.width * done / max(total, 1))
        click.echo(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done:,}/{total:,} records", nl=False, err=True)
        self.shown = True

    def done(self) -> None:
        if self.shown:
            click.echo(err=True)
            self.shown = False


# the American spelling keeps working for scripts written against earlier versions
cli.add_command(neighbours, name="neighbors")


@cli.command(name="set-query-model")
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("label")
@click.argument("llm_model_id", required=False)
def set_query_model(db: str, label: str, llm_model_id: str | None) -> None:
    """Record in DB which llm model embeds queries for stored model LABEL.

    This is the database's own mapping (the `models.llm_model_id` column): a
    published database then answers search by text or image without any plugin
    configuration. Plugin configuration still wins. Leave LLM_MODEL_ID out to clear it.

        datasette-embeddings set-query-model collection.db clip-ViT-B-32 clip
    """
    store = _open_for_writing(db)
    try:
        if store.model(label) is None:
            known = ", ".join(m.label for m in store.models()) or "none"
            raise CommandError(f"{db}: unknown model '{label}' (known: {known})")
        store.set_llm_model_id(label, llm_model_id)
    finally:
        store.conn.close()


def _open(db: str, *, readonly: bool = True):
    """An existing database through :meth:`Store.open`: a file without our tables is refused by name (exit 1)."""
    from .storage.store import Store

    try:
        return Store.open(db, readonly=readonly)
    except EmbeddingsError as ex:
        raise CommandError(str(ex))


def _open_for_writing(db: str):
    """:func:`_open` for writing, the schema brought up to date."""
    store = _open(db, readonly=False)
    try:
        store.migrate()
    except BaseException:
        store.conn.close()
        raise
    return store


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--a", "model_a", required=True, help="First model label")
@click.option("--b", "model_b", required=True, help="Second model label")
@click.option("--k", default=10, show_default=True, type=int, help="Neighbours compared per subject (1 to 100)")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
def compare(db: str, model_a: str, model_b: str, k: int, as_json: bool) -> None:
    """How much two models agree, over the objects (provider + subject_id) both hold.

    For each shared subject, the Jaccard index of its top-k neighbour subjects
    under each model; prints the mean and the subjects where they disagree most,
    and stores the result for the /-/embeddings/compare page.

        datasette-embeddings compare collection.db --a apple/mobileclip_s0 --b google/siglip2 --k 10
    """
    from .errors import EmbeddingsError
    from .search import agreement

    conn = _open_for_writing(db).conn
    try:
        result = agreement.compare(conn, model_a, model_b, k)
        agreement.store(conn, result)
    except EmbeddingsError as ex:
        raise CommandError(f"{db}: {ex}")
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    echo(f"{model_a} vs {model_b}: mean Jaccard of top-{k} over {result.subjects:,} shared subjects: {result.mean_jaccard:.3f}")
    click.echo("Most disagreeing subjects:")
    for d in result.disagreements:
        echo(f"  {d['provider']}  {d['subject_id']}  Jaccard {d['jaccard']:.3f}  (records {d['record_a']} and {d['record_b']})")


@cli.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Parquet file to write")
@click.option("--model", "model_id", default=BUILTIN_IMAGE_MODEL, show_default=True, help="Any llm embedding model id or alias")
@click.option("--label", help="Model label stored in the records (default: the llm model id)")
@click.option("--provider", help="Provider of every record (a manifest's provider column wins)")
@click.option("--batch-size", default=32, show_default=True, type=int, help="Items per model call")
@click.option("--sentences", is_flag=True, help="Split texts into sentences, one record each (depiction_id#s1, #s2...)")
@click.option("--strict", is_flag=True, help="Abort on the first unreadable image instead of skipping it")
@click.option("--created", type=int, help="Unix seconds for 'created' (default: now)")
@click.option("--cache", type=click.Path(file_okay=False), help="Folder keeping downloaded images, so an interrupted harvest resumes")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 32), help="Downloads at a time")
@click.option("--retries", default=3, show_default=True, type=click.IntRange(0, 10), help="Retries of a download that failed in passing (connection, 5xx, 429)")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600), help="Seconds a download may wait for the server (4x for the whole transfer)")
@click.option("--max-image-bytes", default=50 * 1024 * 1024, show_default=True, type=click.IntRange(1), help="Largest image downloaded")
@click.option("--iiif-size", default=512, show_default=True, type=click.IntRange(1, 10000), help="Longest side of the rendition asked of IIIF image services")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary")
def embed(source: str, output: str, model_id: str, label: str | None, provider: str | None, batch_size: int,
          sentences: bool, strict: bool, created: int | None, cache: str | None, concurrency: int, retries: int,
          timeout: float, max_image_bytes: int, iiif_size: int, quiet: bool) -> None:
    """Embed a folder of images, or a CSV/JSONL manifest, into shared-format Parquet.

    Manifest images may be paths, http(s) URLs or IIIF image services (a sized
    rendition is fetched). Exits 1 when nothing could be embedded.

        datasette-embeddings embed photos/ --provider my-museum -o photos.parquet
        datasette-embeddings embed texts.csv --model minilm-l6-v2-local --sentences -o texts.parquet
    """
    from .files import harvest as embed_module
    from .files.downloads import FetchSettings

    progress = _Progress(enabled=not quiet and sys.stderr.isatty(), unit="items")

    def skipped(name: str, reason: str) -> None:
        progress.done()
        echo(f"skipped {reason}", err=True)

    try:
        report = embed_module.embed_to_parquet(
            source, output, model_id=model_id, provider=provider, label=label, batch_size=batch_size,
            sentences=sentences, strict=strict, created=created, on_skip=skipped, progress=progress,
            fetch=FetchSettings(max_bytes=max_image_bytes, timeout=timeout, retries=retries,
                                concurrency=concurrency, cache=cache),
            iiif_size=iiif_size,
        )
    except embed_module.EmbedError as ex:
        progress.done()
        raise CommandError(str(ex))
    progress.done()
    if not quiet:
        echo(
            f"Wrote {report.written:,} records (model {report.label}) to {output}"
            + (f"; skipped {len(report.skipped):,} unreadable image(s)" if report.skipped else "")
            + (f"; {report.downloaded:,} image(s) downloaded" if report.downloaded else "")
            + (f"; {report.cached:,} image(s) from the cache" if report.cached else ""),
            err=True,
        )


@cli.command(name="check-model")
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("label")
@click.option("--sample", default=20, show_default=True, type=int, help="Stored images to re-embed")
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="Folder of the images, named <depiction_id>.jpg (default: fetch each record's preview URL)")
@click.option("--llm-model", "llm_model_id", help="llm model id to check (default: the one that answers to LABEL)")
@click.option("--threshold", default=0.99, show_default=True, type=float, help="Lowest cosine that passes")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
def check_model(db: str, label: str, sample: int, images: str | None, llm_model_id: str | None,
                threshold: float, as_json: bool) -> None:
    """Re-embed a sample of stored images and compare with the stored vectors (cosine).

    Proves that query embeddings land in the file's space: with the right model and
    preprocessing every cosine is above 0.99. Exits 1 when one is below --threshold.

        datasette-embeddings check-model sfo.db apple/mobileclip_s1 --sample 20
        datasette-embeddings check-model met.db google/siglip2-so400m-patch16-naflex --images met-images/
    """
    from .embedding import model_check
    from .errors import EmbeddingsError

    def show(comparison) -> None:
        if as_json:
            return
        if comparison.error:
            click.echo(f"{comparison.depiction_id}\tfailed: {comparison.error}")
        else:
            click.echo(f"{comparison.depiction_id}\t{comparison.cosine:.4f}")

    try:
        report = model_check.check_model(
            db, label, sample=sample, images=images, llm_model_id=llm_model_id, threshold=threshold, on_result=show,
        )
    except (EmbeddingsError, ValueError) as ex:
        raise click.ClickException(str(ex))
    summary = report.summary()
    if as_json:
        summary["images"] = [
            {"record_id": c.record_id, "depiction_id": c.depiction_id, "source": c.source,
             "cosine": c.cosine, "error": c.error}
            for c in report.comparisons
        ]
        click.echo(json.dumps(summary, indent=2))
    elif summary["compared"]:
        click.echo(
            f"{summary['compared']} image(s) compared with model {report.llm_model_id}: cosine min "
            f"{summary['min']:.4f}, median {summary['median']:.4f}, mean {summary['mean']:.4f}"
            + (f"; {summary['failed']} could not be read" if summary["failed"] else "")
        )
        click.echo("PASS" if report.passed else f"FAIL: below {threshold}")
    else:
        click.echo(f"no image could be compared ({summary['failed']} failed)")
    if not report.passed:
        sys.exit(1)


@cli.group()
def judgements() -> None:
    """Import and export curators' judgements of links (CSV or Parquet)."""


@judgements.command("import")
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--by", "judged_by", help="Curator named in rows whose judged_by is empty")
def judgements_import(db: str, file: str, judged_by: str | None) -> None:
    """Add the judgements in FILE (.csv or .parquet) to DB, in one transaction.

    Columns: model, source_provider, source_key, target_provider, target_key,
    label, and optionally level (depiction or subject), note, judged_by, judged_at.
    A row with an unknown label or naming a record DB does not hold is an error
    naming the row, and nothing is written.

        datasette-embeddings judgements import collection.db demo/judgements.csv
    """
    from .errors import EmbeddingsError, RecordError
    from .files import judgements_io

    try:
        added, already = judgements_io.import_file(db, file, judged_by=judged_by)
    except (EmbeddingsError, RecordError) as ex:
        raise click.ClickException(str(ex))
    click.echo(f"{file}: {added:,} judgements added, {already:,} already stored", err=True)


@judgements.command("export")
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help=".csv or .parquet file to write")
@click.option("--current", "current_only", is_flag=True, help="Only each person's newest judgement of each link, not the history")
def judgements_export(db: str, output: str, current_only: bool) -> None:
    """Write the judgements in DB to a CSV or Parquet file that `judgements import` reads.

        datasette-embeddings judgements export collection.db -o judgements.csv
    """
    from .errors import EmbeddingsError, RecordError
    from .files import judgements_io

    try:
        n = judgements_io.export_file(db, output, current_only=current_only)
    except (EmbeddingsError, RecordError) as ex:
        raise click.ClickException(str(ex))
    click.echo(f"Wrote {n:,} judgements to {output}", err=True)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Output JSON (the same as /<db>/-/links/evaluation.json)")
@click.option("--positive", "positives", multiple=True,
              help="A label that counts as a correct link (repeatable; default: 'same object' and 'similar object')")
@click.option("--precision", "target", type=float, default=None,
              help="Target precision whose threshold is reported (default 0.9)")
@click.option("--model", "models", multiple=True, help="Only this model label (repeatable; fused labels too)")
def evaluate(db: str, as_json: bool, positives: tuple[str, ...], target: float | None, models: tuple[str, ...]) -> None:
    """Precision of the stored links against the curators' judgements, per model, level and comparison.

    For thresholds 0.30 to 0.95 in steps of 0.05: how many judged links have at
    least that similarity and what share of them is positive; precision@1 (each
    source's best link); and the lowest threshold whose precision reaches
    --precision.

        datasette-embeddings evaluate demo.db
        datasette-embeddings evaluate demo.db --json --positive "same object"
    """
    from .errors import EmbeddingsError
    from .search import evaluation

    conn = _open(db).conn
    try:
        report = evaluation.evaluate(conn, positives=positives, target=target, models=models)
    except EmbeddingsError as ex:
        raise click.ClickException(str(ex))
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(evaluation.text_table(report), nl=False)
