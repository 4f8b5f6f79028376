"""The Parquet lake: `<lake>/<dataset>/date=YYYY-MM-DD/hour=HH/<name>.parquet`.

Files are written atomically (temporary file in the same directory, fsync, rename, fsync of the
directory), so a reader or a crash never sees half a file, and rewriting the same name is an
idempotent replace. Temporary names start with a dot and do not end in `.parquet`, so globs skip them.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"  # ~40% smaller than snappy at the same write speed (REFERENCE.md)


def hour_of_ms(ms: int) -> datetime:
    """The UTC hour that an epoch-milliseconds instant falls in."""
    return datetime.fromtimestamp(ms // 3_600_000 * 3600, tz=timezone.utc)


def partition_dir(lake: Path, dataset: str, hour: datetime) -> Path:
    return lake / dataset / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"


def dataset_glob(lake: Path, dataset: str) -> str:
    return str(lake / dataset / "*" / "*" / "*.parquet")


def dataset_files(lake: Path, dataset: str) -> list[Path]:
    return sorted((lake / dataset).glob("date=*/hour=*/*.parquet"))


def write_parquet_atomic(table: pa.Table, path: Path) -> int:
    """Write `table` to `path` durably and atomically; returns the file's size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression=PARQUET_COMPRESSION)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path.stat().st_size


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
