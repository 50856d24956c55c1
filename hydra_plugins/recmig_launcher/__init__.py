"""Hydra launcher plugin: joblib's parallel launcher, with the cores split between the jobs.

``hydra/launcher=local_parallel`` runs ``n_jobs`` jobs at once in separate processes. Each
PyTorch process would otherwise start one thread per core, and the jobs would fight for them;
joblib alone divides by ``n_jobs`` even when the sweep has fewer jobs, leaving cores idle. Here
each job gets ``threads_per_job`` threads when that is set, else the thread count the user
exported (``OMP_NUM_THREADS=4``), else ``cores // min(n_jobs, jobs in the sweep)`` (at least
one).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

log = logging.getLogger(__name__)

#: The thread-pool sizes PyTorch (OpenMP) and the BLAS libraries read when a process starts.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and SLURM narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(n_jobs: int, jobs: int, cores: int, chosen: int | None = None) -> int:
    """``chosen`` if given, else the cores shared by the jobs that run at once."""
    if chosen is not None:
        if chosen < 1:
            raise ValueError(f"hydra.launcher.threads_per_job: must be >= 1, got {chosen}")
        return chosen
    at_once = cores if n_jobs < 0 else n_jobs  # joblib: -1 is one job per core
    return max(1, cores // max(1, min(at_once, jobs)))


def exported_threads() -> int | None:
    """The thread count the user exported, if any (the first of THREAD_VARIABLES set)."""
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


@contextlib.contextmanager
def _thread_environment(threads: int) -> Iterator[None]:
    """Export ``threads`` in every thread variable for the worker processes joblib starts
    (PyTorch reads several: one left unset would give it a different count); restored after."""
    before = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ParallelLauncher(JoblibLauncher):
    def __init__(self, threads_per_job: int | None = None, **joblib_options) -> None:
        super().__init__(**joblib_options)
        self.threads_per_job = threads_per_job

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        n_jobs = int(self.joblib.get("n_jobs", -1))
        jobs = len(job_overrides)
        chosen = self.threads_per_job if self.threads_per_job is not None else exported_threads()
        threads = threads_per_job(n_jobs, jobs, available_cores(), chosen)
        log.info("%d jobs, %d at once, %d threads each", jobs, n_jobs, threads)
        with _thread_environment(threads):
            return super().launch(job_overrides, initial_job_idx)


@dataclass
class ParallelLauncherConf(JobLibLauncherConf):
    _target_: str = "hydra_plugins.recmig_launcher.ParallelLauncher"
    # Threads of each job's PyTorch; None: the cores divided by the jobs running at once.
    threads_per_job: int | None = None


ConfigStore.instance().store(
    group="hydra/launcher", name="recmig_parallel", node=ParallelLauncherConf, provider="recmig"
)
