"""The ``datasette-embeddings`` command: a thin click layer over the modules."""
from __future__ import annotations

import json
import sys
import time

import click

from . import exporter, loader


@click.group()
@click.version_option(package_name="datasette-embeddings")
def cli() -> None:
    """Load, export and inspect shared museum embeddings in SQLite."""


class _Progress:
    """Rows/s on a terminal; silent when quiet or when stderr is not a TTY."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.rows = 0
        self.started = time.perf_counter()
        self.last = 0.0

    def __call__(self, n: int) -> None:
        self.rows += n
        now = time.perf_counter()
        if self.enabled and now - self.last > 0.25:
            self.last = now
            rate = self.rows / max(now - self.started, 1e-9)
            click.echo(f"\r{self.rows:,} rows  {rate:,.0f} rows/s", nl=False, err=True)

    def done(self) -> None:
        if self.enabled and self.rows:
            click.echo(err=True)


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1, required=True)
@click.option("--batch-size", default=4096, show_default=True, help="Rows read and written per batch")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary")
def load(db: str, sources: tuple[str, ...], batch_size: int, quiet: bool) -> None:
    """Load Parquet files, directories of them, or http(s) URLs into DB.

    Each file loads in one transaction. Records are keyed on
    (provider, depiction_id, model): a newer row replaces the stored one.

        datasette-embeddings load collection.db embeddings/ https://example.org/more.parquet
    """
    progress = _Progress(enabled=not quiet and sys.stderr.isatty())

    def file_done(report: loader.FileReport) -> None:
        progress.done()
        if not quiet:
            c = report.counts
            click.echo(
                f"{report.source}: {report.rows:,} rows in {report.seconds:.1f}s "
                f"({c.inserted:,} new, {c.updated:,} replaced, {c.unchanged:,} unchanged, {c.stale:,} older than stored)"
                + (f"; ignored columns: {', '.join(report.ignored_columns)}" if report.ignored_columns else "")
            )

    try:
        report = loader.load(db, sources, batch_size=batch_size, progress=progress, on_file_done=file_done)
    except loader.LoadError as ex:
        progress.done()
        raise click.ClickException(str(ex))
    if not quiet:
        click.echo("Loaded per provider and model:")
        for (provider, model), n in sorted(report.per_provider_model().items()):
            click.echo(f"  {provider}  {model}  {n:,}")


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Parquet file to write")
@click.option("--provider", "providers", multiple=True, help="Only this provider (repeatable)")
@click.option("--model", "models", multiple=True, help="Only this model label (repeatable)")
def export(db: str, output: str, providers: tuple[str, ...], models: tuple[str, ...]) -> None:
    """Export records from DB to Parquet in the canonical layout.

        datasette-embeddings export collection.db -o nga.parquet --provider nga
    """
    try:
        n = exporter.export(db, output, providers=providers, models=models)
    except Exception as ex:
        raise click.ClickException(f"{db}: {ex}")
    click.echo(f"Wrote {n:,} records to {output}", err=True)


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
def info(db: str, as_json: bool) -> None:
    """Providers, models, dimensions and counts of DB.

        datasette-embeddings info collection.db --json
    """
    try:
        data = exporter.info(db)
    except Exception as ex:
        raise click.ClickException(f"{db}: {ex}")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{data['records']:,} records")
    click.echo("Models:")
    for m in data["models"]:
        click.echo(f"  {m['label']}  {m['dimensions']}-d  {m['records']:,} records" + (f"  (llm: {m['llm_model_id']})" if m["llm_model_id"] else ""))
    click.echo("Providers:")
    for p in data["providers"]:
        click.echo(f"  {p['provider']}  {p['model']}  {p['count']:,}")
