"""The README says what is true: its settings table is the one the code generates."""

from pathlib import Path

from typer.testing import CliRunner

from ingest_platform.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_matches_the_settings_module():
    generated = CliRunner().invoke(app, ["settings", "--markdown"]).output.strip()
    text = README.read_text()
    start = text.index("<!-- settings-table -->") + len("<!-- settings-table -->")
    documented = text[start:text.index("<!-- /settings-table -->")].strip()
    assert documented == generated, "run: ingest-platform settings --markdown, and paste into README.md"


def test_readme_sql_examples_run_against_the_warehouse(tmp_path):
    """Every ```sql block in the README runs (here on an empty lake: names and types must exist)."""
    import re

    import duckdb

    from ingest_platform.storage.warehouse import refresh_warehouse

    warehouse = tmp_path / "warehouse.duckdb"
    refresh_warehouse(warehouse, tmp_path / "lake")
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for block in blocks:
            con.execute(block).fetchall()
