"""The GPU check's phases: each timed, a failing one recorded and passed over; the outer time
limit; what the phases measured so far (`CheckState`, one JSON document).
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from bench.gpu_summary import assemble

if TYPE_CHECKING:
    pass

T = TypeVar("T")


class Terminated(BaseException):
    """The outer time limit's SIGTERM: stop the phase, keep what was measured."""


@dataclass
class PhaseRecord:
    """How one phase went."""

    name: str
    ok: bool = False
    wall_s: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "wall_s": round(self.wall_s, 1), "error": self.error}


def run_phase(name: str, phases: dict[str, PhaseRecord], work: Callable[[], T]) -> T | None:
    """Run one phase: its value, or None with the error recorded (never raised, except the time
    limit's Terminated, which is recorded and passed on)."""
    record = phases[name] = PhaseRecord(name)
    started = time.monotonic()
    try:
        value = work()
        record.ok = True
        return value
    except Terminated:
        record.error = "stopped by the time limit (SIGTERM)"
        raise
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:4000]
        print(f"[gpu-check] phase {name} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        return None
    finally:
        record.wall_s = time.monotonic() - started


@dataclass(frozen=True)
class Deadline:
    """The monotonic second by which the whole check ends."""

    end: float
    clock: Callable[[], float] = time.monotonic

    def left(self) -> float:
        return self.end - self.clock()


@dataclass
class CheckState:
    """What the phases measured so far, and how each phase went."""

    env: dict[str, Any]
    phases: dict[str, PhaseRecord] = field(default_factory=dict)
    setup: dict[str, Any] | None = None
    variants: list[dict[str, Any]] | None = None
    inprocess: dict[str, Any] | None = None
    served: list[dict[str, Any]] = field(default_factory=list)
    tune: dict[str, Any] | None = None
    tune_ask: dict[str, Any] | None = None  # what the tune was asked for, and why (size_tune)

    def document(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        phases = {name: record.to_dict() for name, record in self.phases.items()}
        more = {"setup": self.setup, "variants": self.variants, "tune_ask": self.tune_ask, **(extra or {})}
        return assemble(self.env, phases, self.inprocess, self.served, self.tune, more)
