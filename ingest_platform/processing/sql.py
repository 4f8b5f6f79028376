"""The SQL of processing/, kept in .sql files beside this module."""

from __future__ import annotations

from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).parent / "sql"


@cache
def load_sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()
