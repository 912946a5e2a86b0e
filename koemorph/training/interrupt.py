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
launcher's process group (data parallel, like a terminal's Ctrl-C).
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
    Data parallel: torchrun starts each rank in its own session, so a terminal's Ctrl-C reaches the
    ranks once, passed on by torchrun."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if state.interrupt_requested:
            raise KeyboardInterrupt
        state.interrupt_requested = True
        console.print("interrupted: saving at the end of this step (Ctrl-C again to stop without saving)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def signal_hook(step: int, received=None) -> None:
    """Send this process one SIGINT per entry of ``$KOEMORPH_SIGINT_AFTER_STEP`` (comma-separated
    steps) equal to ``step`` (test hook; unset: nothing). An entry ``Kg`` (data parallel) sends it from
    rank 0 to the process group of its parent instead, the launcher's, as a terminal's Ctrl-C: torchrun
    passes it on to every rank; rank 0 waits (up to a minute) until ``received()`` says it got it, so
    every rank stops after step ``K``."""
    for at in os.environ.get(SIGINT_STEP_ENV, "").split(","):
        at = at.strip()
        if at.endswith("g") and int(at[:-1]) == step and os.environ.get("RANK", "0") == "0":
            os.killpg(os.getpgid(os.getppid()), signal.SIGINT)
            for _ in range(6000):
                if received is None or received():
                    break
                time.sleep(0.01)
        elif at and not at.endswith("g") and int(at) == step:
            os.kill(os.getpid(), signal.SIGINT)


def ignore_sigint(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers leave SIGINT to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
