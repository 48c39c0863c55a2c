"""The ``hydracompute`` command.

Exit codes: 0 success; 1 a job failed or was cancelled (with ``--wait``); 2 a usage error;
3 the coordinator could not be reached; 4 the coordinator refused the request.
Environment fallbacks: ``HYDRACOMPUTE_URL`` (the coordinator URL of every client command
and of ``worker``), ``HYDRACOMPUTE_STORE`` (the coordinator's store); any other option as
``HYDRACOMPUTE_<COMMAND>_<OPTION>``, e.g. ``HYDRACOMPUTE_WORKER_CORES``.
"""

from hydracompute.cli import admin, credit, jobs, pool, simulate, submit, worker
from hydracompute.cli.base import EXIT_JOB_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE, main

__all__ = [
    "EXIT_JOB_FAILED",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "admin",
    "credit",
    "jobs",
    "main",
    "pool",
    "simulate",
    "submit",
    "worker",
]
