"""Run every benchmark in bench/ with its defaults: `python -m bench` (or `python -m bench NAME ...`)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

names = sys.argv[1:] or sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                               if not m.name.startswith("_"))
failed = []
for name in names:
    print(f"== bench.{name}", flush=True)
    if subprocess.run([sys.executable, "-m", f"bench.{name}"]).returncode:
        failed.append(name)
sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
