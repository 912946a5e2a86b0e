"""The ``koemorph`` Typer app and what every command shares: the error guard, the config and
checkpoint arguments, the common options and the summary printers.

Heavy packages (torch, dask, zarr, mlflow, opensmile) are imported inside the commands so
that ``koemorph --help`` answers at once.

Every command runs under :func:`_guard`: a user error (bad config key, input file, path) prints
``error: <message>`` verbatim on stderr and exits 2 (or the code the command chose); anything else is
a bug and prints its traceback with :data:`BUG_HINT`.
"""

from __future__ import annotations

import functools
import traceback
from pathlib import Path
from typing import Annotated

import click
import typer

BUG_HINT = "this is a bug in koemorph: please report it with the traceback above"
EGEMAPS_MISSING = """eGeMAPS features are on (features.egemaps: true) but openSMILE \
cannot be imported ({cause}).
Either install it (audEERING research-only licence, see README "Licences"):
    pip install "koemorph[egemaps]"        (in a source checkout: pip install -e ".[egemaps]")
or extract without eGeMAPS (a mel-only model; fine for commercial use):
    koemorph extract --set features.egemaps=false
    (or for every command: set `egemaps: false` under `features:` in params.yaml)"""

PHONES_MISSING = """phone features are on (features.phones: true, the default) but PocketSphinx \
cannot be imported ({cause}).
Either install it (BSD licence, its US English model included):
    pip install "koemorph[phones]"         (in a source checkout: pip install -e ".[phones]")
or extract without phones (a model that generalises less to new voices):
    koemorph extract --set features.phones=false"""


class CommandError(Exception):
    """A user error a command reports as ``error: <message>`` with exit code ``code`` (no traceback)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class _App(typer.Typer):
    """A Typer app whose commands all run under :func:`_guard` (user errors vs bugs)."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorate(fn):
            register(_guard(fn))
            return fn

        return decorate


def _user_error(exc: BaseException) -> tuple[str, int] | None:
    """``(message, exit code)`` if ``exc`` is the user's to fix (config, input file, path), else None."""
    from koemorph.config.rules import ConfigError
    from koemorph.errors import InputError

    if isinstance(exc, CommandError):
        return str(exc), exc.code
    if isinstance(exc, (ConfigError, InputError)):
        return str(exc), 2
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return (f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)), 2
    return None


def _guard(command):
    """Run ``command``: a user error prints ``error: <message>`` verbatim on stderr and exits 2 (or the
    code it carries); any other exception is a bug: its traceback, then :data:`BUG_HINT`, exit 1."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:
            known = _user_error(exc)
            if known is None:
                traceback.print_exc()
                typer.echo(BUG_HINT, err=True)
                raise typer.Exit(1) from None
            _print_error(known[0])
            raise typer.Exit(known[1]) from None

    return run


def _print_error(message: str) -> None:
    """``error: <message>`` on stderr, the message verbatim (no Rich markup, no wrapping)."""
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error:", "red"), " ", message))


app = _App(
    help="koemorph: speech audio to the 52 ARKit blendshapes (30/60 fps).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    add_completion=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Config file; missing file = built-in defaults.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set data.split_seed=3 (repeatable)."),
]


def config_from(params: Path, overrides: list[str] | None, extra: dict | None = None):
    from koemorph.config import load_config

    try:
        return load_config(params, overrides or (), extra)
    except ValueError as exc:
        fail(f"bad config: {exc}", code=2)


def fail(message: str, code: int = 1):
    raise CommandError(message, code)


def need_extras(features) -> None:
    """Fail with both ways out if eGeMAPS or phones are on and their extra (openSMILE, PocketSphinx)
    is missing."""
    for on, module, message in (
        (features.egemaps, "opensmile", EGEMAPS_MISSING),
        (features.phones, "pocketsphinx", PHONES_MISSING),
    ):
        if on:
            try:
                __import__(module)
            except (ImportError, OSError) as exc:
                fail(message.format(cause=exc), code=2)


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Checkpoint, MLflow URI (runs:/<run_id>/<path>, models:/<name>/<version>) or 'default':"
        " the model shipped with koemorph (`koemorph model-info`), also used when left out.",
    ),
]

WorkersOpt = Annotated[
    int | None, typer.Option(help="LocalCluster worker processes (default: all cores; 0: no Dask).")
]

SchedulerOpt = Annotated[
    str | None, typer.Option(help="Existing Dask scheduler address (or $DASK_SCHEDULER_ADDRESS).")
]

TrackingUriOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."),
]

RuntimeOpt = Annotated[
    str, typer.Option("--runtime", help="torch | onnx (onnxruntime on the checkpoint's ONNX export).")
]


def print_failures(path: Path, limit: int = 20):
    from koemorph.io.atomic import read_jsonl

    rows = read_jsonl(path)
    for row in rows[:limit]:
        typer.echo(f"  {row.get('error')}", err=True)
    if len(rows) > limit:
        typer.echo(f"  ... and {len(rows) - limit} more", err=True)


def print_summary(title: str, summary: dict):
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), show_header=False)  # Text: paths like take[1].wav are not markup
    for key, value in summary.items():
        table.add_row(Text(str(key)), Text(f"{value:.3f}" if isinstance(value, float) else str(value)))
    Console().print(table)
