"""`ingest-platform features ...`: the feature store from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ingest_platform.settings import get_settings

features_app = typer.Typer(no_args_is_help=True, help="The feature store: offline retrieval, materialisation, "
                           "online values.")


@features_app.command("get-historical")
def get_historical(
    labels: Annotated[Path, typer.Option(help="Parquet file with event_timestamp and the entity keys "
                                              "(user_id, track_id).", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Where to write the training set (.parquet, or .csv).")],
    views: Annotated[Optional[list[str]], typer.Option("--view", help="Feature view to join (repeat); default: "
                                                       "every view whose entity keys the labels have.")] = None,
) -> None:
    """Point-in-time join: each label's features as of its event_timestamp, never a later value."""
    from ingest_platform.processing.features import get_historical_features, write_table

    try:
        table = get_historical_features(get_settings().lake_dir, labels, views)
    except (ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    write_table(table, out)
    typer.echo(f"wrote {table.num_rows} rows, {table.num_columns} columns to {out}")


@features_app.command("materialize")
def materialize(
    views: Annotated[Optional[list[str]], typer.Option("--view", help="Feature view (repeat); default: all.")] = None,
    push_online: Annotated[bool, typer.Option("--online/--no-online", help="Push the latest values to Redis.")]
    = True,
) -> None:
    """Rebuild feature views from the landed events now and push the latest values online."""
    from ingest_platform.processing import features, online
    from ingest_platform.storage.event_log import connect
    from ingest_platform.storage.warehouse import refresh_warehouse, warehouse_is_current

    settings = get_settings()
    built = features.materialize_feature_views(settings.lake_dir, views)
    if not warehouse_is_current(settings.warehouse_path, settings.lake_dir):
        refresh_warehouse(settings.warehouse_path, settings.lake_dir)
    for result in built:
        line = f"{result.view.name}: {result.rows} rows"
        if push_online and result.view.name in online.ONLINE_VIEWS:
            client = connect(settings.effective_redis_url)
            try:
                pushed = online.push_latest(client, result.view, features.latest_rows(settings.lake_dir, result.view))
            finally:
                client.close()
            line += f", {pushed} pushed online"
        typer.echo(line)


@features_app.command("online")
def online_get(
    view: Annotated[str, typer.Argument(help="user_features or track_features.")],
    entity: Annotated[str, typer.Argument(help="The entity key, e.g. u1 or t42.")],
) -> None:
    """Print the online values of one entity (what the gateway serves)."""
    import msgspec

    from ingest_platform.processing import online
    from ingest_platform.storage.event_log import connect

    values = online.read_online(connect(get_settings().effective_redis_url), view, entity)
    if values is None:
        typer.echo(f"error: no online values for {entity!r} in {view!r}", err=True)
        raise typer.Exit(1)
    typer.echo(msgspec.json.encode({**msgspec.structs.asdict(values), "as_of": values.as_of}).decode())
