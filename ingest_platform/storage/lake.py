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
# Unique per row wherever they appear: a dictionary only costs time before Parquet falls back to
# plain encoding (measured on 250k drained events: 12% less write CPU, 18% smaller files without).
UNIQUE_PER_ROW = ("event_id", "stream_id")


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
        _write_durably(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path.stat().st_size


def _write_durably(table: pa.Table, path: Path) -> None:
    with open(path, "wb") as fh:
        pq.write_table(table, fh, compression=PARQUET_COMPRESSION,
                       use_dictionary=[name for name in table.column_names if name not in UNIQUE_PER_ROW])
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- pinned files: what the warehouse views read -------------------------------------------------
# Every landed file has a second name (a hard link, no extra space) under `<lake>/.pinned/`, with the
# same `<dataset>/date=/hour=/` path below it. Warehouse views list these pinned paths explicitly, so
# a query reads exactly the snapshot of files its view was built from, and compaction can take a
# small file out of the hive directory (what raw globs see) at once while queries that planned to
# read it still find it under its pinned name until `RETIRED_FILES_GRACE` has passed.

PINNED_DIR = ".pinned"
LOCK_FILE = ".lake.lock"
COMPACTED_PREFIX = "compacted_"


def entry_range_of(path: Path) -> tuple[str, str] | None:
    """The stream entry range (first, last id) a lake file's name carries: `<first>_<last>` (drain),
    `replay_<first>_<last>_<digest>`, `<event type>_<first>_<last>` (dead letters); None for a
    compacted file, whose rows come from many ranges."""
    ids = [part for part in path.name.removesuffix(".parquet").split("_")
           if "-" in part and all(side.isdigit() for side in part.split("-", 1))]
    return (ids[0], ids[1]) if len(ids) >= 2 else None


def pinned_path(lake: Path, path: Path) -> Path:
    """The pinned twin of a file in the hive layout."""
    return lake / PINNED_DIR / path.relative_to(lake)


def publish_parquet_atomic(table: pa.Table, path: Path, lake: Path) -> int:
    """`write_parquet_atomic` into the hive layout, with its pinned twin linked before it appears
    (so a warehouse refresh that sees the file always finds its pinned name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        _write_durably(table, tmp)
        _link_replace(tmp, pinned_path(lake, path))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path.stat().st_size


def _link_replace(source: Path, target: Path) -> None:
    """Make `target` another name of `source`, atomically replacing whatever `target` was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_link = target.parent / f".{target.name}.{os.getpid()}.link"
    tmp_link.unlink(missing_ok=True)
    os.link(source, tmp_link)
    os.replace(tmp_link, target)
    _fsync_dir(target.parent)


class LakeLock:
    """An advisory file lock over the lake's file set: warehouse refreshes list files under the
    shared lock, compaction swaps files under the exclusive one, so a listing never sees an hour
    half swapped. (flock: released by the kernel if the holder dies.)"""

    def __init__(self, lake: Path, exclusive: bool, name: str = LOCK_FILE):
        self.path = lake / name
        self.exclusive = exclusive
        self._fh = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        fcntl.flock(self._fh, fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)
        return self

    def __exit__(self, *exc):
        self._fh.close()  # closing releases the flock


def warehouse_refresh_lock(lake: Path) -> LakeLock:
    """Serialises warehouse refreshes: without it, a refresh that listed the files earlier could
    rename its (older) snapshot over a newer one, hiding fresh files until the next refresh."""
    return LakeLock(lake, exclusive=True, name=".warehouse-refresh.lock")


def hour_dirs(lake: Path, dataset: str) -> list[Path]:
    return sorted(p for p in (lake / dataset).glob("date=*/hour=*") if p.is_dir())


def hour_of_dir(directory: Path) -> datetime:
    date = directory.parent.name.removeprefix("date=")
    hour = int(directory.name.removeprefix("hour="))
    return datetime.strptime(date, "%Y-%m-%d").replace(hour=hour, tzinfo=timezone.utc)


def hour_files(directory: Path) -> list[Path]:
    """The visible Parquet files of one hour directory, in a stable order."""
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))


def warehouse_files(lake: Path, dataset: str) -> list[Path]:
    """The pinned paths of every current file of `dataset`: the snapshot a view reads. Taken under
    the shared lake lock, so an hour being compacted appears either before or after its swap."""
    with LakeLock(lake, exclusive=False):
        files = [f for directory in hour_dirs(lake, dataset) for f in current_hour_files(directory)]
        pinned = []
        for path in files:
            twin = pinned_path(lake, path)
            if not twin.exists():  # a file written by an older version, or by hand
                if not path.exists():
                    continue  # an input of an interrupted swap whose pin was already collected
                _link_replace(path, twin)
            pinned.append(twin)
    return pinned


COMPACTION_JOURNAL = ".compaction.json"


def current_hour_files(directory: Path) -> list[Path]:
    """The files that make up an hour now. Normally its visible files; while a compaction journal
    is present (a swap in progress, or interrupted by a crash), exactly one side of the swap: the
    outputs once every one of them is in place, else the inputs (still readable by pinned name)."""
    files = hour_files(directory)
    journal = directory / COMPACTION_JOURNAL
    if not journal.exists():
        return files
    import json

    plan = json.loads(journal.read_text())
    inputs = [directory / n for n in plan["inputs"]]
    outputs = [directory / n for n in plan["outputs"]]
    involved = set(inputs) | set(outputs)
    others = [f for f in files if f not in involved]
    side = outputs if all(o.exists() for o in outputs) else inputs
    return sorted(others + side)


def collect_retired_pins(lake: Path, grace_seconds: float, now: float | None = None) -> int:
    """Delete pinned names whose file left the hive layout more than `grace_seconds` ago (the
    unlink of the hive name sets the inode's ctime). Returns how many were deleted."""
    import time

    now = time.time() if now is None else now
    removed = 0
    root = lake / PINNED_DIR
    for twin in root.glob("*/date=*/hour=*/*.parquet"):
        original = lake / twin.relative_to(root)
        if original.exists():
            continue
        if now - twin.stat().st_ctime >= grace_seconds:
            twin.unlink(missing_ok=True)
            removed += 1
    return removed
