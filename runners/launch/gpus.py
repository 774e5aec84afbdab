"""Which GPUs a run may use: a lease on as many of this host's GPUs as its engine needs.

A parallel sweep (Hydra's joblib launcher with `n_jobs` > 1) starts several cells at once; cells
must never share a GPU, or their timings skew each other. Each run takes an exclusive lock on the
GPUs it needs (one file lock per GPU in a host-wide folder, so two sweeps on one host respect each
other too), waits while none are free, and its child process sees only those GPUs
(`CUDA_VISIBLE_DEVICES`). A scheduler that already gave the job its own GPUs (SLURM sets
`CUDA_VISIBLE_DEVICES` per job) leaves only those to lease from. The launcher stays Hydra's: this
only decides which GPU each of its jobs gets.
"""
from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from backends.contract.nvml import visible_handles

_POLL_S = 2.0


def visible_gpus() -> list[str]:
    """This process's GPUs as CUDA_VISIBLE_DEVICES entries (indices or UUIDs)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip()]
    try:
        return [str(i) for i in range(len(visible_handles()[1]))]
    except Exception:  # noqa: BLE001 — no NVML: no GPU to lease
        return []


def lease_dir() -> Path:
    folder = Path(os.environ.get("QUANTBENCH_GPU_LEASES") or Path(tempfile.gettempdir()) / f"quantbench-gpus-{os.getuid()}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Lease:
    gpus: list[str]
    fds: list[int] = field(default_factory=list)
    waited_s: float = 0.0

    def env(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)}

    def release(self) -> None:
        for fd in self.fds:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self.fds = []

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try(folder: Path, gpu: str) -> int | None:
    fd = os.open(folder / f"gpu-{gpu.replace('/', '_')}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    return fd


def acquire(needed: int, gpus: list[str] | None = None, timeout_s: float | None = None,
            label: str = "run") -> Lease:
    """Lease `needed` GPUs of `gpus` (default: the visible ones), waiting while they are taken.

    Raises RuntimeError when the host has fewer GPUs than needed, or TimeoutError after `timeout_s`."""
    gpus = visible_gpus() if gpus is None else gpus
    if needed > len(gpus):
        raise RuntimeError(f"{label} needs {needed} GPU(s); this host shows {len(gpus)} "
                           f"({', '.join(gpus) or 'none'})")
    folder = lease_dir()
    t0 = time.monotonic()
    told = False
    while True:
        held: list[tuple[str, int]] = []
        for gpu in gpus:
            fd = _try(folder, gpu)
            if fd is not None:
                held.append((gpu, fd))
                if len(held) == needed:
                    return Lease([g for g, _ in held], [f for _, f in held], round(time.monotonic() - t0, 3))
        for _, fd in held:  # not enough free: give back the partial set, so two runs cannot deadlock
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        waited = time.monotonic() - t0
        if timeout_s is not None and waited > timeout_s:
            raise TimeoutError(f"{label}: no {needed} free GPU(s) among {', '.join(gpus)} after {waited:.0f} s")
        if not told:
            print(f"[quantbench] {label}: waiting for {needed} free GPU(s) of {len(gpus)} (held by other cells)",
                  file=sys.stderr)
            told = True
        time.sleep(_POLL_S)
