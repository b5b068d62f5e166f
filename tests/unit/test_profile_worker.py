"""bench/profile_worker.py: the parts that need no server (collapsed stacks -> figures, the config)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.profile_worker import (
    IN_LOOP,
    OTHER,
    analyse,
    analyse_collapsed,
    category_of,
    choose_config,
    main,
    markdown,
    parse_collapsed,
    split_frame,
    users_for,
)

BASE = (
    "thread (100): MainThread;_run_module_as_main (<frozen runpy>:198);"
    "main (_bentoml_impl/worker/service.py:242);Server.run (uvicorn/server.py:86);"
    "asyncio_run (uvicorn/_compat.py:30);Runner.run (asyncio/runners.py:118)"
)
GUARDS = "JsonOnlyMiddleware.__call__ (services/limits.py:84);Router.__call__ (starlette/routing.py:683)"
MODEL = (
    "thread (200): AnyIO worker thread;Thread._bootstrap (threading.py:1002);"
    "TextEmbedding.encode (services/embedding.py:50);"
    "SentenceTransformer.encode (sentence_transformers/model.py:9)"
)
# 100 Hz x 2 s = 200 ticks. The loop thread: 60 samples in uvloop's C code (nothing above the
# runner), 20 in httptools' callback, 10 in the metrics middleware under the guards, 10 encoding a
# response under the guards; the model thread: 150 in torch; an idle-looking thread: 5.
COLLAPSED = f"""\
{BASE} 60
{BASE};HttpToolsProtocol.data_received (uvicorn/protocols/http/httptools_impl.py:174) 20
{BASE};{GUARDS};RunnerTrafficMetricsMiddleware.__call__ (bentoml/_internal/server/http/instruments.py:258);\
MetricWrapperBase.labels (prometheus_client/metrics.py:199) 10
{BASE};{GUARDS};IODescriptor.to_http_response (_bentoml_sdk/io_models.py:300);dumps (json/__init__.py:231) 10
{MODEL};Linear.forward (torch/nn/modules/linear.py:125) 150
thread (300): tqdm_monitor;Thread._bootstrap (threading.py:1002);Condition.wait (threading.py:331) 5

not a stack line
"""


def test_parse_collapsed_splits_threads_frames_and_counts() -> None:
    stacks = parse_collapsed(COLLAPSED)
    assert len(stacks) == 6  # the blank and the malformed line are skipped
    first = stacks[0]
    assert (first.tid, first.thread_name, first.count) == ("100", "MainThread", 60)
    assert first.frames[0] == "_run_module_as_main (<frozen runpy>:198)"
    assert first.frames[-1] == "Runner.run (asyncio/runners.py:118)"
    # Without --threads there is no thread frame.
    (bare,) = parse_collapsed("main (app.py:3);work (app.py:9) 7\n")
    assert (bare.tid, bare.frames, bare.count) == ("?", ("main (app.py:3)", "work (app.py:9)"), 7)


def test_frames_fall_into_their_categories() -> None:
    assert category_of("Linear.forward (torch/nn/modules/linear.py:125)") is not None
    assert "model" in str(category_of("Linear.forward (torch/nn/modules/linear.py:125)"))
    assert "metrics middleware" in str(category_of("labels (prometheus_client/metrics.py:1)"))
    assert "scrape" in str(category_of("generate_latest (prometheus_client/exposition.py:1)"))
    assert "guards" in str(category_of("BodyLimitMiddleware.__call__ (services/limits.py:53)"))
    assert "response encoding" in str(category_of("to_http_response (_bentoml_sdk/io_models.py:1)"))
    assert "request parsing" in str(category_of("parse_request (_bentoml_impl/serde.py:1)"))
    assert "dispatcher" in str(
        category_of("CorkDispatcher.controller (bentoml/_internal/marshal/dispatcher.py:3)")
    )
    assert "OpenTelemetry" in str(category_of("get_current_span (opentelemetry/trace/__init__.py:1)"))
    assert category_of("helper (mycode.py:1)") is None
    assert split_frame("Route.handle (starlette/routing.py:288)") == ("Route.handle", "starlette/routing.py")
    assert split_frame("<module> (<frozen runpy>:198)") == ("<module>", "<frozen runpy>")


def test_analyse_shares_per_thread_and_per_category() -> None:
    profile = analyse_collapsed(COLLAPSED, ticks=200)
    assert profile.total_samples == 255
    assert profile.loop_tid == "100"
    assert profile.loop_samples == 100
    threads = {t.tid: t for t in profile.threads}
    assert profile.threads[0].tid == "100"  # the event loop first
    assert threads["100"].role == "event loop"
    assert threads["100"].wall_share == pytest.approx(0.5)
    assert threads["200"].wall_share == pytest.approx(0.75)
    assert "model" in threads["200"].top_category
    assert threads["100"].top_category == IN_LOOP

    rows = {c.name: c for c in profile.categories}
    assert rows[IN_LOOP].inclusive == rows[IN_LOOP].self_samples == 60
    # The loop's base frames (uvicorn.Server.run, runpy, BentoML's worker main) are not counted.
    assert not any("event loop" in name and name != IN_LOOP for name in rows)
    assert not any(name.startswith("BentoML server") for name in rows)  # worker/service.py: the base
    guards = next(c for c in profile.categories if "guards" in c.name)
    assert (guards.inclusive, guards.self_samples) == (20, 0)  # wraps 20 samples, spends none itself
    assert guards.inclusive_share == pytest.approx(0.2)
    assert guards.wall_share == pytest.approx(0.1)
    uvicorn = next(c for c in profile.categories if c.name.startswith("uvicorn"))
    assert (uvicorn.inclusive, uvicorn.self_samples) == (20, 20)
    metrics = next(c for c in profile.categories if "metrics middleware" in c.name)
    assert (metrics.inclusive, metrics.self_samples) == (10, 10)
    encoding = next(c for c in profile.categories if "response encoding" in c.name)
    assert (encoding.inclusive, encoding.self_samples) == (10, 10)
    assert sum(c.self_samples for c in profile.categories) == profile.loop_samples
    assert sum(c.self_share for c in profile.categories) == pytest.approx(1.0)
    assert profile.categories[0].inclusive == max(c.inclusive for c in profile.categories)
    assert OTHER not in rows  # every loop sample found a category

    top = profile.top_self
    assert (top[0].function, top[0].file, top[0].samples) == (
        "Linear.forward",
        "torch/nn/modules/linear.py",
        150,
    )
    assert top[0].thread == "AnyIO worker thread"
    assert top[0].wall_share == pytest.approx(0.75)
    assert top[1].function == "Runner.run"
    assert len(analyse_collapsed(COLLAPSED, ticks=200, top=2).top_self) == 2


def test_the_main_thread_is_the_loop_when_no_stack_shows_the_runner() -> None:
    profile = analyse(
        parse_collapsed("thread (1): MainThread;f (a.py:1) 3\nthread (2): other;g (b.py:1) 9\n"), 10
    )
    assert profile.loop_tid == "1"
    assert [c.name for c in profile.categories] == [OTHER]
    with pytest.raises(ValueError):
        analyse([], 0)


def test_markdown_lists_native_threads_from_proc() -> None:
    profile = analyse_collapsed(COLLAPSED, ticks=200)
    text = markdown(profile, cpu={"100": 0.12, "200": 0.6, "400": 0.3}, names={"400": "omp-worker"})
    assert "| 100 | MainThread | event loop | 100 | 50.0% | 12.0% |" in text
    assert "| 400 | omp-worker (no Python samples) | native | 0 | - | 30.0% | - |" in text
    assert "`Linear.forward`" in text


def test_main_re_analyses_a_saved_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(COLLAPSED)
    assert main(["--parse", str(raw), "--seconds", "2"]) == 0
    assert "## Event-loop thread (100)" in capsys.readouterr().out


def options(**given: object) -> argparse.Namespace:
    base: dict[str, object] = dict(winner=None, service=None, rate=None, slo_ms=None, batch=None,
                                   latency=None, workers=None, threads=None, variant=None)  # fmt: skip
    return argparse.Namespace(**(base | given))


def test_the_rate_defaults_to_80_percent_of_the_winners_goodput(tmp_path: Path) -> None:
    winner = tmp_path / "winner.yaml"
    winner.write_text(
        "config: {service: embedding, max_batch_size: 32, max_latency_ms: 500, workers: 2, threads: 1}\n"
        "slo_p95_ms: 200\ngoodput_rps: 70\n"
    )
    config, rate, slo_ms, _ = choose_config(options(winner=winner))
    assert (config.knobs().key, rate, slo_ms) == ("b32-l500-w2-t1-g0-fp32", pytest.approx(56.0), 200.0)
    assert choose_config(options(winner=winner, rate=30.0))[1] == 30.0
    with pytest.raises(SystemExit, match="digits"):
        choose_config(options(winner=winner, service="digits"))


def test_knobs_need_a_rate() -> None:
    config, rate, slo_ms, _ = choose_config(options(batch=32, latency=500, workers=2, threads=1, rate=50.0))
    assert (config.service, config.knobs().key, rate, slo_ms) == (
        "embedding",
        "b32-l500-w2-t1-g0-fp32",
        50.0,
        200.0,
    )
    with pytest.raises(SystemExit, match="--rate"):
        choose_config(options(batch=32))
    assert users_for(50.0, 200.0) == 20  # rate x 2 x the SLO, as the tuner paces
    assert users_for(0.1, 200.0) == 1
