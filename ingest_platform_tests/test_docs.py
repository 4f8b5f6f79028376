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
