"""`servetune demo`: the README's main job."""

from __future__ import annotations

import typer

from tuner.commands.console import console, fail


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def ensure_models() -> None:
    """Train digits and import MiniLM into the store when they are missing."""
    from services.models.minilm import import_minilm
    from services.models.pipeline import train_and_store
    from services.models.store import DIGITS, MINILM, has_model
    from services.models.train import TrainConfig

    if not has_model(DIGITS):
        console.print("training digits (first run) ...")
        stored = train_and_store(TrainConfig())
        console.print(f"stored {stored.tag}: test accuracy {stored.test.accuracy:.4f}")
    if not has_model(MINILM):
        console.print(f"imported MiniLM as {import_minilm()}")


PARAPHRASES = (
    "A man is playing a guitar on stage.",
    "Someone performs a song on the guitar in front of an audience.",
    "The central bank raised interest rates again this quarter.",
)


def demo() -> None:
    """Build the models if missing, start the embedding service, call it, stop it."""
    from services.client import ServetuneClient
    from tuner.serveconfig import ServeConfig
    from tuner.server import ServerError, running_server

    ensure_models()
    config = ServeConfig(service="embedding")
    console.print(f"starting TextEmbedding with {config.model_dump()} ...")
    try:
        with running_server(config.server_spec()) as server, ServetuneClient(server.url) as client:
            vectors = client.embed(list(PARAPHRASES))
    except ServerError as exc:
        fail(str(exc), code=1)
    similar = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
    unrelated = sum(a * b for a, b in zip(vectors[0], vectors[2], strict=True))
    console.print(f"cosine(paraphrases) = {similar:.3f}   cosine(unrelated) = {unrelated:.3f}")
    console.print("[green]demo finished; the server is stopped[/]")
