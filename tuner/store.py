"""Resumable study persistence: one append-only JSONL file of finished trials per study folder."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.measurement import Invalidity, InvalidReason, StepMeasurement
from tuner.capacity import CapacityFinding
from tuner.space import Config

TrialKind = Literal["trial", "finalist", "baseline"]
# "unfinished": the time budget ended its capacity search before any level met the SLO, so it
# says nothing of the config (not the config's trial: a resumed study measures it again)
TrialStatus = Literal["ok", "infeasible", "failed", "unfinished"]
TRIALS_FILE = "trials.jsonl"
SETTINGS_FILE = "study.json"


class StoreError(ValueError):
    """The study folder belongs to a different study, or cannot be read."""


class TrialRecord(BaseModel):
    """One finished measurement of one config, as stored."""

    model_config = ConfigDict(extra="ignore")

    number: int
    kind: TrialKind = "trial"
    label: str = ""
    strategy: str = ""
    key: str
    shown_key: str = ""  # the key without the knobs the service cannot take ("": the key)
    config: dict[str, Any]
    status: TrialStatus
    score: float | None = None
    goodput_rps: float = 0.0
    latency_ms: float | None = None
    failure_ratio: float | None = None
    cost_per_million: float | None = None
    best_step: int | None = None
    reason: str = ""
    rss_mb: float | None = None
    wall_s: float = 0.0
    first_verdict_s: float | None = None  # seconds until its first scored step ended
    last_verdict_s: float | None = None  # seconds until its last scored step ended
    started_at: float = 0.0
    steps: list[StepMeasurement] = Field(default_factory=list)
    capacity: CapacityFinding | None = None  # what the capacity search found (None: fixed steps)

    @field_validator("steps", mode="before")
    @classmethod
    def _upgrade_steps(cls, steps: Any) -> Any:
        if not isinstance(steps, list):
            return steps
        return [upgrade_step(s) if isinstance(s, dict) else s for s in steps]

    @property
    def shown(self) -> str:
        """The config as people read it (`Config.label`)."""
        return self.shown_key or self.key

    @property
    def unfinished(self) -> bool:
        """Cut by the time budget before any level met the SLO: no figure of the config."""
        return self.status == "unfinished"

    @property
    def cfg(self) -> Config:
        return Config.from_dict(self.config)

    def step_measurements(self) -> list[StepMeasurement]:
        return list(self.steps)

    def best_step_figures(self) -> StepMeasurement | None:
        """The step the objective scored (None when none was)."""
        if self.best_step is None or not 0 <= self.best_step < len(self.steps):
            return None
        return self.steps[self.best_step]

    def best_step_batches(self) -> tuple[float, float]:
        """(requests, batches) the server's batch-size metric counted at the scored step."""
        step = self.best_step_figures()
        if step is None:
            return 0.0, 0.0
        return sum(step.requests_per_worker.values()), sum(step.batch_size_hist.values())


CLIENT_QUANTILES = ("client_p50_ms", "client_p95_ms", "client_p99_ms")


def upgrade_step(data: dict[str, Any]) -> dict[str, Any]:
    """A stored step dict in today's shape: JSON has no infinity, so a client quantile stored as
    null (no successful request) is +inf again; records written before invalid-window reasons
    were an enum carry `invalid_reasons` strings, which become Invalidity entries."""
    fields = dict(data)
    for key in CLIENT_QUANTILES:
        if key in fields and fields[key] is None:
            fields[key] = math.inf
    legacy = fields.pop("invalid_reasons", None)
    if legacy and "invalid" not in fields:
        fields["invalid"] = [legacy_invalidity(str(text)) for text in legacy]
    return fields


def legacy_invalidity(text: str) -> Invalidity:
    """An old record's reason string as an Invalidity (the words the runner used to write)."""
    if "fair share" in text:
        return Invalidity(InvalidReason.UNEVEN_WORKERS, text)
    if "saturated" in text:
        return Invalidity(InvalidReason.GENERATOR_SATURATED, text)
    return Invalidity(InvalidReason.OTHER, text)


def step_to_dict(step: StepMeasurement) -> dict[str, Any]:
    """A step as plain data (TrialRecord validates it back into a StepMeasurement)."""
    return asdict(step)


class StudyStore:
    """`<dir>/study.json` (the settings) + `<dir>/trials.jsonl` (one line per finished trial).

    Every record is written and fsynced as soon as its trial ends, so a crash or Ctrl-C loses at
    most the trial in flight; a torn last line is ignored on reading.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / TRIALS_FILE

    def exists(self) -> bool:
        return (self.folder / SETTINGS_FILE).exists()

    def open(self, settings: dict[str, Any], resume: bool) -> list[TrialRecord]:
        """Start a study (refusing to mix with an old one) or resume it; the finished records."""
        self.folder.mkdir(parents=True, exist_ok=True)
        settings_path = self.folder / SETTINGS_FILE
        if settings_path.exists():
            if not resume:
                raise StoreError(f"{self.folder} already holds a study; pass --resume or another --out")
            stored = json.loads(settings_path.read_text())
            differing = sorted(k for k in settings if stored.get(k) != settings[k])
            if differing:
                raise StoreError(
                    f"--resume with different settings than {settings_path}: {', '.join(differing)}"
                )
            return self.records()
        if self.path.exists() and self.path.stat().st_size:
            raise StoreError(f"{self.path} exists without {SETTINGS_FILE}; use another --out")
        settings_path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return []

    def records(self) -> list[TrialRecord]:
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                found.append(TrialRecord.model_validate_json(line))
            except ValueError:
                continue  # a torn line from an interrupted write
        return found

    def append(self, record: TrialRecord) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(record.model_dump_json() + "\n")
            out.flush()
            os.fsync(out.fileno())
