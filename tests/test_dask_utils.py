"""The local Dask cluster leaves Ctrl-C to the driver: a real SIGINT sent to the worker processes
(a terminal signals the whole process group) does not kill them."""

from __future__ import annotations

import os
import signal
import time

from pipeline.dask_utils import close_client, dask_client


def _double(x: int) -> int:
    return 2 * x


def test_workers_survive_sigint_and_the_driver_keeps_its_handler():
    before = signal.getsignal(signal.SIGINT)
    client = dask_client(2, None)
    try:
        assert signal.getsignal(signal.SIGINT) is before
        pids = client.run(os.getpid)
        assert len(pids) == 2
        for pid in pids.values():
            os.kill(pid, signal.SIGINT)
        time.sleep(1.0)
        assert client.run(os.getpid) == pids  # the same processes, alive
        assert sum(client.gather(client.map(_double, range(10)))) == 90
    finally:
        close_client(client)
