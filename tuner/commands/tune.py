"""`servetune tune`: search the serving configuration of a service under an SLO with real trials."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from core.measurement import StepMeasurement
from core.readers import METRICS_HELP, PROMETHEUS_TARGETS_HELP, PROMETHEUS_URL_HELP
from core.startwatch import READY_TIMEOUT_S, STALL_S
from tuner.capacity import LoadMode
from tuner.commands.console import console, fail
from tuner.commands.target import (
    TARGET_HELP,
    Endpoint,
    RequestsFile,
    ServiceArgs,
    ShuffleSeed,
    VariantArgs,
    WorkingDir,
    resolve_cli_target,
)  # fmt: skip
from tuner.gpureport import gpu_text
from tuner.objective import SLO, ObjectiveKind, Quantile, load_text
from tuner.report import capacity_text, comparisons
from tuner.store import TrialRecord
from tuner.strategies import DEFAULT_STRATEGY, STRATEGY_HELP
from tuner.study import StudyEvents
from tuner.tuning import TuneOptions, TuneOutcome, run_tune


class LiveView:
    """A Rich live panel: trial i/N, current config, step, RPS, p95, best so far (terminals only:
    elsewhere Live prints every frame)."""

    def __init__(self, total_trials: int, slo: SLO) -> None:
        self.total = total_trials
        self.slo = slo
        self.trials_done = 0
        self.current = "-"
        self.kind = ""
        self.step_line = ""
        self.best: TrialRecord | None = None
        self.rows: list[TrialRecord] = []
        self.live = Live(self.render(), console=console, refresh_per_second=4, transient=False)

    def render(self) -> Group:
        head = Text.assemble(
            ("trial ", "bold"), f"{min(self.trials_done + 1, self.total)}/{self.total}  ",
            (self.kind, "cyan"), f"  {self.current}\n", self.step_line or "starting server ...",
        )  # fmt: skip
        best = "best so far: -"
        if self.best is not None:
            best = f"best so far: {self.best.shown}  {self.best.goodput_rps:.1f} good RPS"
        return Group(head, Text(best, style="green"), trial_table(self.rows[-8:]))

    def start(self) -> None:
        self.live.start()

    def stop(self) -> None:
        self.live.stop()

    def trial_start(self, number: int, kind: str, shown: str) -> None:
        self.kind, self.current, self.step_line = kind, shown, ""
        self.live.update(self.render())

    def step(self, index: int, step: StepMeasurement) -> None:
        self.step_line = step_text(index, step, self.slo)
        self.live.update(self.render())

    def trial_end(self, record: TrialRecord) -> None:
        self.rows.append(record)
        if record.kind == "trial":
            self.trials_done += 1
        better = self.best is None or (record.score or 0.0) > (self.best.score or float("-inf"))
        if record.score is not None and record.kind != "baseline" and better:
            self.best = record
        self.live.update(self.render())

    def events(self) -> StudyEvents:
        return StudyEvents(self.trial_start, self.step, self.trial_end)


def step_text(index: int, step: StepMeasurement, slo: SLO) -> str:
    """One load step for people: its offered rate (or users), what it served, latency, failures."""
    text = (
        f"step {index + 1}: {load_text(step)}  {step.rps:.1f} RPS  "
        f"{slo.quantile} {slo.latency_of(step):.0f} ms  failures {step.failure_ratio:.1%}"
    )
    return text + ("  (aborted early)" if step.aborted else "")


def record_line(record: TrialRecord, quantile: str) -> str:
    """One finished measurement on one plain line: number, kind, config, status, good RPS, the
    knee and its bracket, latency, GPU utilisation when measured, seconds (and why, when it did
    not meet the SLO)."""
    latency = "-" if record.latency_ms is None else f"{record.latency_ms:.0f}"
    parts = [f"{record.status}", f"{record.goodput_rps:.1f} good RPS"]
    found = capacity_text(record.capacity)
    if found:
        parts.append(found)
    gpu = gpu_text(record)  # "" without GPU figures
    parts += [f"{quantile} {latency} ms", *([gpu] if gpu else []), f"{record.wall_s:.0f} s"]
    line = f"#{record.number} {record.label or record.kind} {record.shown}: " + ", ".join(parts)
    if record.status != "ok" and record.reason:
        line += " - " + record.reason.splitlines()[0][:200]
    return line


class PlainProgress:
    """Progress as plain lines, one when a measurement starts and one when it ends (for logs and
    pipes, where a live view would print every frame)."""

    def __init__(self, total_trials: int, slo: SLO, out: Console = console) -> None:
        self.total = total_trials
        self.slo = slo
        self.out = out
        self.trials_started = 0

    def line(self, text: str) -> None:
        self.out.print(text, markup=False, highlight=False, soft_wrap=True)

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def trial_start(self, number: int, kind: str, shown: str) -> None:
        count = ""
        if kind == "trial":
            self.trials_started += 1
            count = f" {self.trials_started}/{self.total}"
        self.line(f"#{number} {kind}{count} {shown}: started")

    def trial_end(self, record: TrialRecord) -> None:
        self.line(record_line(record, self.slo.quantile))

    def events(self) -> StudyEvents:
        return StudyEvents(self.trial_start, None, self.trial_end)


STATUS_COLOURS = {"ok": "green", "infeasible": "yellow", "failed": "red", "unfinished": "dim"}


def trial_table(records: list[TrialRecord], title: str | None = None) -> Table:
    """One row per measurement; reasons for infeasible/failed trials are printed below it."""
    table = Table(
        "#", "kind", "config", "status", "good RPS", "knee", "p95 ms", "fail", "RSS MB", "s", title=title
    )
    for r in records:
        knee = "-"
        if r.capacity is not None and r.capacity.knee is not None:
            knee = f"{r.capacity.knee:.4g}" + (
                "" if r.capacity.breach is None else f"-{r.capacity.breach:.4g}"
            )
        table.add_row(
            str(r.number), r.label or r.kind, r.shown, f"[{STATUS_COLOURS[r.status]}]{r.status}[/]",
            f"{r.goodput_rps:.1f}", knee, "-" if r.latency_ms is None else f"{r.latency_ms:.0f}",
            "-" if r.failure_ratio is None else f"{r.failure_ratio:.3f}",
            "-" if r.rss_mb is None else f"{r.rss_mb:.0f}", f"{r.wall_s:.0f}",
        )  # fmt: skip
    return table


def progress_view(options: TuneOptions) -> LiveView | PlainProgress:
    """The live panel on a terminal, plain lines anywhere else (pipes, CI logs)."""
    slo = options.slo()

    if console.is_terminal:
        return LiveView(options.trials, slo)
    return PlainProgress(options.trials, slo)


def run_tune_cli(options: TuneOptions, resume_hint: str) -> TuneOutcome:
    """`run_tune` for a command: bad input (SpaceError, StoreError, ValueError) or a study still
    running elsewhere becomes a one-line error; Ctrl-C, SIGTERM or SIGHUP a hint on how to resume
    and exit code 128 + the signal (130, 143, 129) once the trial's server and Locust are stopped."""
    from core.leftovers import StillRunning
    from core.signals import exit_code, stop_reason
    from tuner.trial import TargetStartError

    view = progress_view(options)
    view.start()
    try:
        return run_tune(options, events=view.events(), say=lambda line: console.print(line))
    except (ValueError, StillRunning, TargetStartError) as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:
        console.print(
            f"[yellow]interrupted by {stop_reason(exc)}[/]: the trial's server and load generator are "
            f"stopped; {resume_hint}"
        )
        raise typer.Exit(exit_code(exc)) from None
    finally:
        view.stop()


def print_outcome(outcome: TuneOutcome) -> None:
    """The measurements, the finalists with their 95% intervals, how the winner was chosen, why
    the search stopped early, and the winner against the baselines."""
    result = outcome.result
    quantile = str(outcome.settings.get("quantile", "p95"))
    if console.is_terminal:
        console.print(trial_table(result.records, title="trials"))
        for r in result.records:
            if r.status != "ok":
                plain(f"  #{r.number} {r.shown} {r.status}: {r.reason.splitlines()[0][:200]}")
    else:
        plain("measurements:")
        for r in result.records:
            plain("  " + record_line(r, quantile))
    if result.stopped_because:
        console.print(
            Text.assemble(("stopped early", "yellow"), f": {result.stopped_because}"), soft_wrap=True
        )
    for f in result.finalists:
        runs = ", ".join(f"{g:.1f}" for g in f.goodputs)
        plain(
            f"finalist {f.shown}: mean {f.mean_goodput:.1f} good RPS, {f.interval_text}, "
            f"stdev {f.stdev:.1f} over {len(f.goodputs)} run(s) ({runs})"
        )
    if result.choice is not None:
        plain(f"choice: {result.choice.explain()}")
    baselines = outcome.baselines or ([outcome.baseline] if outcome.baseline is not None else [])
    if result.winner is None:
        console.print("[red]no config met the SLO[/]; see the report for why each was infeasible")
    else:
        w = result.winner
        kept = result.choice.kept_baseline if result.choice is not None else ""
        console.print(
            f"[bold green]winner[/] {w.shown}"
            + (f" (the {kept} baseline: no tuned config measured better)" if kept else "")
            + f": {w.mean_goodput:.1f} good RPS ({w.interval_text}, spread {w.spread:.1f})",
            soft_wrap=True,
        )
    for c in comparisons(result.winner, baselines, result.finalists):
        ratio = "no ratio (it served no good RPS within the SLO)" if c.ratio is None else f"{c.ratio:.2f}x"
        if result.winner is not None:
            ratio = f"winner / {c.label} = {ratio}"
        plain(f"{c.label} baseline {c.key}: {c.goodput_rps:.1f} good RPS, {c.capacity}; {ratio}")
    if result.winner is not None:
        plain(f"winner file: {outcome.winner_file}  (servetune serve --config {outcome.winner_file})")
    plain(f"report: {outcome.report}   steps: {outcome.out / 'steps.csv'}")


def plain(line: str) -> None:
    """A line of words and numbers, printed as they are (no markup, one line even in a pipe)."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)


def _users(text: str) -> tuple[int, ...]:
    try:
        users = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"--users: expected comma-separated integers, got {text!r}")
    if not users or any(u <= 0 for u in users):
        fail("--users: give at least one positive user count")
    return users


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"--rates: expected comma-separated requests/s, got {text!r}")
    if not rates or any(not r > 0 for r in rates):
        fail("--rates: give at least one positive rate")
    return rates


DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, option: str) -> float:
    """'360', '360s', '6m', '1.5h' -> seconds (> 0); a CLI error naming `option` otherwise."""
    raw = text.strip().lower()
    unit = DURATION_UNITS.get(raw[-1:])
    number = raw[:-1] if unit is not None else raw
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        fail(f"{option}: expected a duration like 360, 360s, 6m or 1h, got {text!r}")
    if not seconds > 0 or seconds == float("inf"):
        fail(f"{option}: must be > 0, got {text!r}")
    return seconds


def _folder_name(target: str) -> str:
    """A study folder name for a service key or an import path (`svc.py:Cls` -> `svc-Cls`)."""
    name = target.replace("\\", "/").rstrip("/").split("/")[-1].replace(".py", "").replace(":", "-")
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "service"


def tune(
    service: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET")],
    working_dir: WorkingDir = None,
    endpoint: Endpoint = None,
    requests: RequestsFile = None,
    shuffle_seed: ShuffleSeed = None,
    locustfile: Annotated[
        Path | None, typer.Option(help="your own Locust file: its User classes, driven by servetune's steps")
    ] = None,
    service_arg: ServiceArgs = None,
    variant_arg: VariantArgs = None,
    space: Annotated[
        Path | None, typer.Option(help="search-space YAML (default: tuner/spaces/<service>.yaml)")
    ] = None,
    strategy: Annotated[str, typer.Option(help=STRATEGY_HELP)] = DEFAULT_STRATEGY,
    trials: Annotated[int, typer.Option(min=1, help="distinct configs to measure")] = 12,
    slo_p95_ms: Annotated[float, typer.Option(min=1, help="latency SLO in ms")] = 200.0,
    slo_quantile: Annotated[str, typer.Option(help="p95 or p99")] = "p95",
    max_failure_ratio: Annotated[
        float, typer.Option(min=0, max=1, help="bound on failures (503 incl.)")
    ] = 0.01,
    max_gpu_memory_share: Annotated[
        float,
        typer.Option(min=0.01, max=1.0, help="max share of a GPU's memory its workers may hold"),
    ] = 0.9,
    objective: Annotated[str, typer.Option(help="goodput or cost")] = "goodput",
    price_core_hour: Annotated[float, typer.Option(min=0, help="price per core-hour (cost objective)")] = 0.0,
    price_gpu_hour: Annotated[float, typer.Option(min=0, help="price per GPU-hour (cost objective)")] = 0.0,
    seed: Annotated[int, typer.Option(help="strategy seed")] = 0,
    out: Annotated[Path | None, typer.Option(help="study folder (default reports/<service>)")] = None,
    resume: Annotated[bool, typer.Option(help="continue the study in --out")] = False,
    finalists: Annotated[int, typer.Option(min=0, help="top-k configs re-measured")] = 3,
    repeats: Annotated[int, typer.Option(min=0, help="re-measurements per finalist")] = 3,
    load: Annotated[
        str, typer.Option(help="capacity search over arrival rate (paced, open loop) or closed-loop users")
    ] = "rate",
    resolution: Annotated[
        float, typer.Option(min=0.005, max=0.5, help="capacity search: stop at this relative bracket")
    ] = 0.05,
    max_step_seconds: Annotated[
        float, typer.Option(min=2, help="capacity search: longest step (steps hold >= 200 requests for p95)")
    ] = 15.0,
    users: Annotated[
        str, typer.Option(help="explicit closed-loop user steps instead of the search, e.g. 4,8,16,32")
    ] = "",
    rates: Annotated[
        str, typer.Option(help="explicit arrival-rate steps (requests/s) instead of the search, e.g. 50,100")
    ] = "",
    time_budget: Annotated[
        str, typer.Option(help="wall-clock budget, e.g. 6m: fewer trials rather than an overrun")
    ] = "",
    step_seconds: Annotated[float, typer.Option(min=1, help="seconds per explicit load step")] = 10.0,
    ready_timeout: Annotated[
        float,
        typer.Option(
            min=10,
            help="longest a server may take to start while its processes keep using CPU (one that "
            f"uses none for {STALL_S:.0f} s is given up on sooner)",
        ),
    ] = READY_TIMEOUT_S,
    warmup_seconds: Annotated[
        float, typer.Option(min=0, help="warm-up seconds, not scored (the capacity search's probe)")
    ] = 3.0,
    max_extend: Annotated[
        float, typer.Option(min=1, help="stretch an unsteady explicit step up to this many times its length")
    ] = 1.0,
    baseline: Annotated[bool, typer.Option(help="also measure the naive config (embedding)")] = False,
    default_baseline: Annotated[
        bool, typer.Option(help="also measure BentoML's default batching (100 / 60 s, 1 worker)")
    ] = False,
    written_baseline: Annotated[
        bool | None,
        typer.Option(help="also measure the service as written (default: on for your own services)"),
    ] = None,
    metrics: Annotated[str, typer.Option(help=METRICS_HELP)] = "scrape",
    prometheus_url: Annotated[str | None, typer.Option(help=PROMETHEUS_URL_HELP)] = None,
    prometheus_targets: Annotated[Path | None, typer.Option(help=PROMETHEUS_TARGETS_HELP)] = None,
) -> None:
    """Find the serving config with the highest sustainable goodput (or lowest cost) under an SLO."""
    if slo_quantile not in ("p95", "p99"):
        fail("--slo-quantile: choose p95 or p99")
    if objective not in ("goodput", "cost"):
        fail("--objective: choose goodput or cost")
    if load not in ("rate", "users"):
        fail("--load: choose rate or users")
    if users and rates:
        fail("--users and --rates: give one of them")
    if locustfile is not None and not locustfile.is_file():
        fail(f"--locustfile {locustfile}: no such file")
    budget_s = parse_duration(time_budget, "--time-budget") if time_budget else None
    chosen_users, chosen_rates = (_users(users) if users else ()), (_rates(rates) if rates else ())
    study_dir = out or Path("reports") / _folder_name(service)
    spec = resolve_cli_target(
        service, working_dir, endpoint, requests, shuffle_seed, service_arg, study_dir, variant_arg
    )
    service = spec.key
    options = TuneOptions(
        service=service, space=space, strategy=strategy, trials=trials, slo_ms=slo_p95_ms,
        quantile=cast(Quantile, slo_quantile), max_failure_ratio=max_failure_ratio,
        max_gpu_memory_share=max_gpu_memory_share, objective=cast(ObjectiveKind, objective),
        price_core_hour=price_core_hour, price_gpu_hour=price_gpu_hour, seed=seed,
        out=study_dir, resume=resume, finalists=finalists, repeats=repeats,
        users=chosen_users, rates=chosen_rates,
        load=cast(LoadMode, load), resolution=resolution, max_step_s=max_step_seconds,
        time_budget_s=budget_s,
        step_s=step_seconds, warmup_s=warmup_seconds, ready_timeout_s=ready_timeout,
        naive_baseline=baseline, default_baseline=default_baseline, max_extend=max_extend,
        written_baseline=spec.external if written_baseline is None else written_baseline,
        locustfile=locustfile,
        metrics=metrics, prometheus_url=prometheus_url, prometheus_targets=prometheus_targets,
    )  # fmt: skip
    outcome = run_tune_cli(options, f"finished trials are in {options.out}; rerun with --resume")
    print_outcome(outcome)
