"""Command groups of the `servetune` CLI; each module exposes `register(app)`."""
