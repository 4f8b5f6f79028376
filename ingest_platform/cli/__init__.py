"""ingest-platform: run, operate and query the event ingestion platform."""

from __future__ import annotations

import csv
import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from ingest_platform.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
warehouse_app = typer.Typer(no_args_is_help=True, help="The DuckDB warehouse.")
app.add_typer(keys_app, name="keys")
app.add_typer(warehouse_app, name="warehouse")
from ingest_platform.cli.dlq import dlq_app  # noqa: E402  (sub-app, registered like the others)
app.add_typer(dlq_app, name="dlq")
from ingest_platform.cli.features import features_app  # noqa: E402
app.add_typer(features_app, name="features")
from ingest_platform.cli.replay import replay  # noqa: E402
app.command("replay")(replay)


def _redis():
    from ingest_platform.storage import event_log

    return event_log.connect(get_settings().effective_redis_url)


@app.command()
def dev(
    no_traffic: Annotated[bool, typer.Option("--no-traffic", help="Do not start the traffic generator.")] = False,
    gateway_port: Annotated[Optional[int], typer.Option(help="Gateway port [default: GATEWAY_PORT, 8000].")] = None,
    ui_port: Annotated[Optional[int], typer.Option(help="Dagster UI port [default: DAGSTER_UI_PORT, 3000].")] = None,
) -> None:
    """Run the whole local stack in the foreground until Ctrl-C."""
    from ingest_platform.devstack import DevStack

    settings = get_settings()
    stack = DevStack(settings, gateway_port or settings.gateway_port, ui_port or settings.dagster_ui_port,
                     traffic=not no_traffic)
    raise typer.Exit(stack.run())


@app.command()
def gateway(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default GATEWAY_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default GATEWAY_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the HTTP/WebSocket gateway alone."""
    from ingest_platform.gateway.server import run

    run(get_settings(), host, port, workers)


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL to run against the warehouse, read-only.")],
    output: Annotated[OutputFormat, typer.Option("--format", help="table for people, csv or json for scripts.")]
    = OutputFormat.table,
) -> None:
    """Run a read-only query against the warehouse and print the result."""
    import duckdb

    from ingest_platform.storage.warehouse import NotReadOnlyError, connect_read_only, run_read_only_query

    try:
        with connect_read_only(get_settings().warehouse_path) as con:
            relation = run_read_only_query(con, query)
            if relation is not None:
                _print_relation(relation, output)
    except (duckdb.Error, FileNotFoundError, NotReadOnlyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


def _print_relation(relation, output: OutputFormat) -> None:
    if output is OutputFormat.table:
        relation.show(max_rows=1000, max_width=200)
        return
    rows = relation.fetchall()
    if output is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(relation.columns)
        writer.writerows(rows)
    else:
        import msgspec

        records = [dict(zip(relation.columns, row)) for row in rows]
        sys.stdout.write(msgspec.json.encode(records, enc_hook=str).decode() + "\n")


@warehouse_app.command("refresh")
def warehouse_refresh() -> None:
    """Rebuild warehouse.duckdb's views over the lake (atomic; readers are never locked out)."""
    from ingest_platform.storage.warehouse import refresh_warehouse

    settings = get_settings()
    views = refresh_warehouse(settings.warehouse_path, settings.lake_dir)
    typer.echo(f"{settings.warehouse_path}: {', '.join(views)}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who the key is for, e.g. ios-app.")],
    scopes: Annotated[Optional[list[str]], typer.Option("--scopes", help="Repeat for each scope (default: all).")] = None,
    expires_in: Annotated[Optional[float], typer.Option("--expires-in", help="Seconds until the key expires (default: never).")] = None,
    rate: Annotated[Optional[float], typer.Option("--rate", help="Events/s limit for this key (default: GATEWAY_RATE_PER_SECOND).")] = None,
    burst: Annotated[Optional[int], typer.Option("--burst", help="Burst for this key (default: GATEWAY_RATE_BURST).")] = None,
) -> None:
    """Create a key; the key is the last line of output and is shown only once."""
    from ingest_platform.storage.api_keys import create_key

    try:
        key, record = create_key(_redis(), name, scopes, expires_in_seconds=expires_in, rate_per_second=rate, burst=burst)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"created key {record.key_id} ({name}) with scopes {', '.join(record.scopes)}", err=True)
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (ids, names, scopes, state; never the keys themselves)."""
    from ingest_platform.storage.api_keys import list_keys

    for record in list_keys(_redis()):
        typer.echo(f"{record.key_id}\t{record.name}\t{','.join(record.scopes)}\t{record.state}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (see `keys list`).")]) -> None:
    """Revoke a key; every gateway worker refuses it within a second."""
    from ingest_platform.storage.api_keys import revoke_key

    if not revoke_key(_redis(), key_id):
        typer.echo(f"error: no key with id {key_id!r} (see `ingest-platform keys list`)", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@app.command()
def traffic(
    url: Annotated[str, typer.Option(help="Gateway base URL.")] = "http://127.0.0.1:8000",
    key: Annotated[str, typer.Option(help="API key to send with.", envvar=None)] = "",
    rate: Annotated[float, typer.Option(help="Events per second.")] = 50.0,
    duration: Annotated[Optional[float], typer.Option(help="Seconds to run (default: until Ctrl-C).")] = None,
) -> None:
    """Send synthetic listening traffic to a gateway."""
    from ingest_platform.traffic.generator import run_traffic

    if not key:
        typer.echo("error: --key is required (see `ingest-platform keys create`)", err=True)
        raise typer.Exit(2)
    try:
        accepted = run_traffic(url, key, rate, duration=duration)
    except KeyboardInterrupt:
        return
    typer.echo(f"accepted {accepted} events")


@app.command("settings")
def show_settings(
    markdown: Annotated[bool, typer.Option("--markdown", help="As the README's Markdown table.")] = False,
) -> None:
    """Print every setting (environment variable), its default and what it does."""
    from ingest_platform.settings import settings_table

    rows = settings_table()
    if markdown:
        typer.echo("| Variable | Default | What it does |\n|---|---|---|")
        for name, default, description in rows:
            typer.echo(f"| `{name}` | `{default}` | {description} |")
        return
    for row in rows:
        typer.echo("\t".join(row))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
