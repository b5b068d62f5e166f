"""What a bench records about its own run (cores, wall time, load average), and its JSON file."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BenchRun:
    """Started when the bench starts; `facts()` when it ends."""

    started: float = field(default_factory=time.monotonic)
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)

    def facts(self) -> dict[str, Any]:
        return {
            "cores": os.cpu_count(),
            "wall_seconds": round(time.monotonic() - self.started),
            "load_average_before": [round(v, 2) for v in self.load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        }


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    """`result` as indented JSON at `path` (its folder made); nothing when `path` is None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
