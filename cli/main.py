"""The ``koemorph`` command line: the Typer app (:mod:`cli.app`) with every command registered.

Thin: each command parses options, builds the config and calls into ``koemorph``; heavy packages
are imported inside the commands so that ``koemorph --help`` answers at once.
"""

from __future__ import annotations

from cli import data_cmds, live_cmds, render_cmds, train_cmds  # noqa: F401  (they register the commands)
from cli.app import BUG_HINT, CommandError, _App, app

__all__ = ["BUG_HINT", "CommandError", "_App", "app"]

# `koemorph --help` lists the commands in pipeline order
ORDER = (
    "params",
    "demo-data",
    "manifest",
    "import-livelink",
    "extract",
    "train",
    "render",
    "evaluate",
    "summary",
)
ORDER += ("preview", "export", "stream", "model-info", "package-model")
app.registered_commands.sort(key=lambda command: ORDER.index(command.name))

if __name__ == "__main__":
    app()
