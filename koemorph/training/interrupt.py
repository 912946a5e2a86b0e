"""Ctrl-C during ``koemorph train``: stop cleanly at a step boundary.

While :func:`stop_on_sigint` is active, a first SIGINT only sets ``state.interrupt_requested``: the
loop finishes the step it is in, saves ``last.pt`` at that step (so ``--resume`` continues exactly),
writes ``summary.json``, ends the MLflow run as KILLED and raises :class:`TrainingInterrupted`. A
second SIGINT raises :class:`KeyboardInterrupt` at once: the run still ends KILLED with a summary,
but ``last.pt`` stays as last saved. DataLoader workers ignore SIGINT (:func:`ignore_sigint`), so
a Ctrl-C at the terminal reaches only the main process's handler.

Test hook: with the environment variable ``KOEMORPH_SIGINT_AFTER_STEP=K`` the process sends itself
a real SIGINT right after optimiser step ``K`` (:func:`signal_hook`), so tests interrupt at a
known step without timing; ``K,K`` sends two there (the second stops at once); ``Kg`` signals the
process group (data parallel: launcher and every rank, like a terminal's Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager

INTERRUPTED = "interrupted"  # stop reason: first Ctrl-C, saved at the step
ABORTED = "aborted"  # stop reason: second Ctrl-C (or one outside the loop), nothing more saved
SIGINT_STEP_ENV = "KOEMORPH_SIGINT_AFTER_STEP"
ECHO_S = 2.0  # data parallel: seconds in which a second SIGINT is the first one passed on by torchrun


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; ``summary`` is what :func:`koemorph.training.loop.train` would
    have returned (``stop_reason`` ``interrupted`` or ``aborted``, ``last`` the checkpoint to resume)."""

    def __init__(self, summary: dict):
        super().__init__(f"training interrupted at step {summary['steps']}")
        self.summary = summary


@contextmanager
def stop_on_sigint(state, console):
    """Route SIGINT to ``state.interrupt_requested`` (then a :class:`KeyboardInterrupt` on the
    second) while the block runs; outside the main thread signals cannot be caught and nothing changes.
    Data parallel: a rank gets a terminal's Ctrl-C twice (directly, and passed on by torchrun), so a
    second SIGINT within :data:`ECHO_S` seconds of the first counts as the same one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    first = [0.0]

    def handler(signum, frame):
        if state.interrupt_requested:
            if state.world.distributed and time.monotonic() - first[0] < ECHO_S:
                return  # torchrun passing the terminal's Ctrl-C on: the same one
            raise KeyboardInterrupt
        state.interrupt_requested, first[0] = True, time.monotonic()
        console.print("interrupted: saving at the end of this step (Ctrl-C again to stop without saving)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def signal_hook(step: int) -> None:
    """Send this process one SIGINT per entry of ``$KOEMORPH_SIGINT_AFTER_STEP`` (comma-separated
    steps) equal to ``step`` (test hook; unset: nothing). An entry ``Kg`` sends it to the whole process
    group instead, from rank 0 only, as a terminal's Ctrl-C reaches torchrun and every rank."""
    for at in os.environ.get(SIGINT_STEP_ENV, "").split(","):
        at = at.strip()
        if at.endswith("g") and int(at[:-1]) == step and os.environ.get("RANK", "0") == "0":
            os.killpg(os.getpgid(0), signal.SIGINT)
        elif at and not at.endswith("g") and int(at) == step:
            os.kill(os.getpid(), signal.SIGINT)


def ignore_sigint(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers leave SIGINT to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
