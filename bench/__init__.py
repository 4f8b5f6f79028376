"""Benchmarks (outside the test suite): `python -m bench.<name> --help`."""

from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo), for the machine line every benchmark prints."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


