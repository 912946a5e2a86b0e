"""Error types for bad input. Each message names the file (and line, where there is one)
and the problem, so a batch job can record it and go on with the other files."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A user's file cannot be used: ``path[:line]: problem``."""

    kind = "input"

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        self.path = str(path)
        self.problem = problem
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # keep the fields when pickled across Dask workers
        return (type(self), (self.path, self.problem, self.line))


class AudioError(InputError):
    """An audio file is missing, corrupt, empty, silent-by-NaN or otherwise unreadable."""

    kind = "audio"


class TrackError(InputError):
    """A blendshape track is malformed or does not match its audio."""

    kind = "track"
