"""Choosing the MetricsReader from user options (`--metrics`, `--prometheus-url`, `--prometheus-targets`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, cast, get_args
from urllib.parse import urlparse

from core.metrics import MetricsError, ReaderFactory, ScrapeReader
from core.promql import PrometheusReaders, PromQLReader, reads_targets_file

MetricsKind = Literal["scrape", "prometheus"]
METRICS_KINDS: tuple[str, ...] = get_args(MetricsKind)
METRICS_HELP = (
    "where server-side figures come from: scrape (servetune reads /metrics before and after each "
    "window) or prometheus (PromQL queries to --prometheus-url)"
)
PROMETHEUS_URL_HELP = "Prometheus server to query with --metrics prometheus, e.g. http://127.0.0.1:9090"
PROMETHEUS_TARGETS_HELP = (
    "file_sd targets file (.json) that servetune overwrites with the address of each server it "
    "loads; the Prometheus config must read it (scrape_configs: file_sd_configs: files: [FILE]). "
    "Needed with --metrics prometheus whenever servetune starts the servers (new port per trial)"
)


def metrics_kind(value: str) -> MetricsKind:
    if value not in METRICS_KINDS:
        raise ValueError(f"--metrics: choose one of {', '.join(METRICS_KINDS)}, got {value!r}")
    return cast(MetricsKind, value)


def reader_factory(
    metrics: str,
    prometheus_url: str | None = None,
    targets: Path | None = None,
    local_servers: bool = True,
    say: Callable[[str], None] | None = None,
) -> ReaderFactory:
    """The factory the load runner builds its reader with; ValueError names the bad option.

    `local_servers`: servetune starts the servers itself (random ports), so Prometheus can only
    find them through `targets`. With prometheus, the server is asked once that it answers.
    """
    kind = metrics_kind(metrics)
    if kind == "scrape":
        for name, value in (("--prometheus-url", prometheus_url), ("--prometheus-targets", targets)):
            if value is not None:
                raise ValueError(f"{name}: only used with --metrics prometheus")
        return ScrapeReader
    if not prometheus_url:
        raise ValueError("--prometheus-url: required with --metrics prometheus")
    parsed = urlparse(prometheus_url)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise ValueError(f"--prometheus-url: expected http(s)://host:port, got {prometheus_url!r}")
    if targets is None and local_servers:
        raise ValueError(
            "--prometheus-targets: required with --metrics prometheus when servetune starts the "
            "servers (each gets a new port; Prometheus finds it through this file_sd file)"
        )
    if targets is not None:
        if targets.suffix != ".json":
            raise ValueError(f"--prometheus-targets: must be a .json file_sd file, got {targets}")
        if not targets.parent.is_dir():
            raise ValueError(f"--prometheus-targets: folder {targets.parent} does not exist")
    with PromQLReader(prometheus_url) as probe:
        try:
            probe.check()
        except MetricsError as exc:
            raise ValueError(f"--prometheus-url: {exc}") from None
    if targets is not None and say is not None and reads_targets_file(prometheus_url, targets) is False:
        say(
            f"warning: the config of Prometheus at {prometheus_url} has no file_sd_configs "
            f"entry matching {targets.resolve()}; it may never scrape the servers"
        )
    return PrometheusReaders(prometheus_url, targets)
