"""The `servetune` command line: each command group lives in tuner/commands/."""

from __future__ import annotations

import typer

from tuner.commands import demo, models, serving

app = typer.Typer(
    name="servetune",
    help="Train models, serve them with BentoML, autotune the serving knobs, call the endpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (models, serving, demo):
    module.register(app)


if __name__ == "__main__":
    app()
