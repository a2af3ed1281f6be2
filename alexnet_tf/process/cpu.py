"""What the CPU offers, from /proc/cpuinfo: the flags that decide which kernels and forms pay off here."""

from __future__ import annotations

import pathlib


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (an empty set where there is no such file)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()
