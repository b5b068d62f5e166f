"""The `servetune` command line: every module in tuner/commands/ with `register(app)` adds commands.

SIGTERM, SIGHUP and SIGINT raise core.signals.StopSignal (a KeyboardInterrupt) in every
command: the `with`/`finally` blocks that stop servers and Locust on Ctrl-C run on each of them.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

import tuner.commands

app = typer.Typer(
    name="servetune",
    help="Train models, serve them with BentoML, autotune the serving knobs, call the endpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(ctx: typer.Context) -> None:
    """Every command runs with SIGTERM/SIGHUP raised like Ctrl-C, so its servers and Locust stop."""
    from core.signals import stop_signals

    ctx.with_resource(stop_signals())


for info in sorted(pkgutil.iter_modules(tuner.commands.__path__), key=lambda m: m.name):
    module = importlib.import_module(f"tuner.commands.{info.name}")
    register = getattr(module, "register", None)
    if callable(register):
        register(app)


if __name__ == "__main__":
    app()
