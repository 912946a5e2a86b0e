"""Distributed data parallel training: one ``koemorph train`` process per rank, started by torchrun.

``torchrun --nproc-per-node N $(which koemorph) train …`` (or ``koemorph train --nproc N``) runs the
same command in N processes; torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``
and ``MASTER_ADDR``/``MASTER_PORT``, and :func:`init_from_env` joins the process group (NCCL on CUDA,
gloo on the CPU, following ``train.device``). Without ``WORLD_SIZE`` > 1 nothing here runs a collective
and training is the one-process run, unchanged.

What each rank does:

* every rank builds the same sampler plan of *global* batches (per-rank batch size times N) and takes
  rows ``rank::N`` of each (:func:`shard`): N ranks together train on exactly the targets one process
  would with the global batch, each once; a rank with no row left in a short last batch gets a fully
  masked copy of a block (no loss, no gradient) so every rank runs every step;
* the loss of each rank is its share of the global masked mean (the normalisers are summed over ranks,
  :func:`global_counts`) times N, so DDP's averaged gradient is the one-process gradient, and the
  logged loss is the sum of the shares: the global loss;
* after every step the ranks agree on whether to stop (Ctrl-C on any rank, the budget) and on the time
  (rank 0's clock, :class:`SharedClock`), so the LR schedule and the stop step are the same everywhere;
* rank 0 alone validates, logs to MLflow, writes ``last.pt``/``best.pt``, ``metrics.csv`` and the
  summary; the others wait for it at the next collective. ``last.pt`` holds every rank's RNG states
  (``rng_ranks``), so ``--resume`` with the same N restores each rank exactly.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import time

import numpy as np
import torch

COLLECTIVE_TIMEOUT_S = 1800.0  # a collective waits this long for a busy rank 0 (validation) at most
STOP_CODES = (None, "max_steps", "max_minutes", "interrupted")  # index = agreed stop code


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` ranks, ``local_rank`` of ``local_size`` on this host."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that validates, logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process when ``WORLD_SIZE`` is unset)."""
    env = os.environ
    size = int(env.get("WORLD_SIZE", "1"))
    return World(
        rank=int(env.get("RANK", "0")),
        size=size,
        local_rank=int(env.get("LOCAL_RANK", "0")),
        local_size=int(env.get("LOCAL_WORLD_SIZE", str(size))),
    )


def init_from_env(device_name: str) -> tuple[World, torch.device | None]:
    """Join the process group when torchrun started several ranks: ``(world, device)``.

    Every rank calls it. ``device_name`` is ``train.device`` (``auto`` | ``cpu`` | ``cuda``): CUDA uses
    NCCL and the GPU ``cuda:LOCAL_RANK``, the CPU gloo. One process: ``(World(), None)`` (the caller
    picks the device as before). Under DDP, SIGTERM (torchrun stopping the ranks after one failed)
    raises :class:`RankStopped`, so the run ends FAILED instead of vanishing.
    """
    world = world_from_env()
    if not world.distributed:
        return world, None
    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", world.local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        )
    signal.signal(signal.SIGTERM, _stopped)
    return world, device


class RankStopped(RuntimeError):
    """This rank was told to stop (SIGTERM): another rank failed or the launcher is shutting down."""


def rank_failed(world: World, exc: Exception) -> RankStopped:
    """The error a rank ends with when training failed under DDP: which rank, why, and where to resume."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return RankStopped(
        f"rank {world.rank} of {world.size}: training stopped ({type(exc).__name__}: {first}); if another "
        "rank failed, its output says why; last.pt is as last saved, rerun with --resume"
    )


def ending(world: World) -> None:
    """This rank is failing and ends its run: from now on SIGTERM (torchrun stopping the other ranks)
    is ignored, so it finishes ending the MLflow run and leaves by itself (torchrun kills after 30 s)."""
    if world.distributed:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _stopped(signum, frame):
    """SIGTERM under DDP: stop this rank with a clear error (once: later ones are ignored while it ends)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    world = world_from_env()
    raise RankStopped(
        f"rank {world.rank} of {world.size}: training stopped by the launcher (SIGTERM): another rank "
        "failed or the job was cancelled; last.pt is as last saved, rerun with --resume"
    )


def shutdown(world: World, wait: bool = False) -> None:
    """Leave the process group (every rank, at the end of training, also after a failure). ``wait``
    (a run that finished or was interrupted): first wait for all ranks, so none exits while rank 0
    still writes (torchrun stops the others when one rank exits with an error, e.g. after Ctrl-C)."""
    if world.distributed and torch.distributed.is_initialized():
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


HANG_ENV = "KOEMORPH_HANG_AFTER_STEP"


def hang_hook(step: int, world: World) -> None:
    """Test hook: with ``$KOEMORPH_HANG_AFTER_STEP=K:R:PATH`` rank ``R`` writes its process id to
    ``PATH`` right after optimiser step ``K`` and then sleeps until killed, so a test kills a real rank
    at a known step without timing. Unset: nothing."""
    spec = os.environ.get(HANG_ENV, "")
    if not spec:
        return
    at, rank, path = spec.split(":", 2)
    if int(at) == step and int(rank) == world.rank:
        from koemorph.io.atomic import atomic_write_text

        atomic_write_text(path, str(os.getpid()))
        while True:
            time.sleep(1.0)


def shard(batch: list, world: World) -> list:
    """This rank's rows ``rank::size`` of a global batch of blocks; a rank left without a row gets a
    copy of the first block with every target masked (it trains on nothing but takes part in the step)."""
    if not world.distributed:
        return batch
    rows = batch[world.rank :: world.size]
    if rows:
        return rows
    first = batch[0]
    return [dataclasses.replace(first, mask=(False,) * len(first.mask))]


def rows(n: int, world: World):
    """For augmentation (:func:`koemorph.training.augment.augment_batch`): ``(indices, n)``, the rows of
    a global batch of ``n`` blocks that :func:`shard` gives this rank; None for one process."""
    if not world.distributed:
        return None
    idx = np.arange(world.rank, n, world.size)
    return (idx if len(idx) else np.zeros(1, np.int64)), n


def global_counts(mask: torch.Tensor, consecutive: bool, world: World) -> dict | None:
    """The loss normalisers summed over ranks: ``{"mask": real targets, "pair": real neighbour pairs}``
    (float tensors on ``mask``'s device); None for one process (each term normalises itself).
    Every rank calls it once per step."""
    if not world.distributed:
        return None
    pair = (mask[:, 1:] & mask[:, :-1]).sum() if consecutive and mask.shape[1] >= 2 else mask.new_zeros(())
    counts = torch.stack([mask.sum(), pair]).to(torch.float64)
    torch.distributed.all_reduce(counts)
    counts = counts.to(torch.float32)
    return {"mask": counts[0], "pair": counts[1]}


def sum_metrics(metrics: dict, keys: list[str], world: World, device) -> dict:
    """``metrics`` with ``keys`` summed over ranks (each rank holds its share of the global loss terms).
    Every rank calls it once per step."""
    if not world.distributed or not keys:
        return metrics
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return {**metrics, **dict(zip(keys, values.tolist()))}


class SharedClock:
    """Rank 0's clock (seconds) on every rank: :meth:`sync` reads it on rank 0 and shares it; calls
    return the last shared value, so time-based decisions (LR, budget, validation) agree."""

    def __init__(self, clock, world: World, device: torch.device):
        self.clock, self.world, self.device, self.now = clock, world, device, 0.0  # NCCL: a CUDA device

    def __call__(self) -> float:
        return self.now

    def sync(self, stop: str | None = None) -> str | None:
        """Share rank 0's time and agree on the stop reason (the most urgent of all ranks'). Every rank
        calls it at the same points."""
        own = self.clock() if self.world.main else float("-inf")
        values = torch.tensor([own, float(STOP_CODES.index(stop))], dtype=torch.float64, device=self.device)
        if self.world.distributed:
            torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
        now, code = values.tolist()
        self.now = now
        return STOP_CODES[int(code)]


def gather_rng(rng: dict, world: World) -> list[dict] | None:
    """Every rank's RNG states, in rank order, on rank 0 (None elsewhere, and for one process)."""
    if not world.distributed:
        return None
    out = [None] * world.size if world.main else None
    torch.distributed.gather_object(rng, out, dst=0)
    return out


def gather_all(value, world: World) -> list:
    """Every rank's ``value`` (picklable), in rank order, on every rank (``[value]`` for one process)."""
    if not world.distributed:
        return [value]
    out = [None] * world.size
    torch.distributed.all_gather_object(out, value)
    return out


def broadcast(value, world: World):
    """Rank 0's ``value`` on every rank (any picklable value; for one process the value itself)."""
    if not world.distributed:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


class NullTracker:
    """What ranks other than 0 hold instead of a :class:`koemorph.training.tracking.Tracker`: the
    run's id and URI (from rank 0), and logging calls that do nothing."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The model the ranks train: DistributedDataParallel under DDP (gradients averaged over ranks
    during backward), else the model itself."""
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def launch_command(nproc: int, args: list[str]) -> list[str]:
    """The torchrun command ``koemorph train --nproc N`` runs: ``nproc`` local ranks (standalone
    rendezvous on a free port) of ``koemorph train args``, through ``python -m torch.distributed.run``."""
    import sys

    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return [*run, "-m", "cli.main", "train", *args]


def launch(nproc: int, args: list[str]) -> int:
    """Run ``koemorph train args`` on ``nproc`` local ranks and wait; returns the launcher's exit code.

    A terminal's Ctrl-C reaches this process and torchrun (one process group; torchrun passes it on to
    the ranks): this process only keeps waiting until they are gone, so none is left behind. A SIGTERM
    is passed on to torchrun, which stops the ranks. torchrun stops every rank when one fails.
    """
    import subprocess

    proc = subprocess.Popen(launch_command(nproc, args))
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue
