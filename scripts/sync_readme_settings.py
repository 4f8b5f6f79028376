"""Rewrite the README's settings table from the settings module (`python scripts/sync_readme_settings.py`)."""

import re
import subprocess
import sys
from pathlib import Path

readme = Path(__file__).resolve().parents[1] / "README.md"
table = subprocess.run([sys.executable, "-m", "ingest_platform.cli", "settings", "--markdown"],
                       check=True, capture_output=True, text=True).stdout.strip()
text = readme.read_text()
text = re.sub(r"<!-- settings-table -->.*<!-- /settings-table -->",
              lambda _: f"<!-- settings-table -->\n{table}\n<!-- /settings-table -->", text, flags=re.S)
readme.write_text(text)
