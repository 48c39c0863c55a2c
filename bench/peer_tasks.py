"""The Celery app and no-op task that ``bench_peers.py`` measures.

A module of its own because the ``celery worker`` subprocess has to import it by name
(``celery -A peer_tasks worker``, with this folder on its path). Broker and result backend
are the same Redis database, by default ``redis://127.0.0.1:6379/15``; the benchmark flushes
it before and after a run, so use a database nothing else keeps data in.
``HYDRA_BENCH_REDIS_URL`` overrides the URL.
"""

from __future__ import annotations

import os

from celery import Celery

REDIS_URL = os.environ.get("HYDRA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")

app = Celery("peer_tasks", broker=REDIS_URL, backend=REDIS_URL)
# Celery's defaults otherwise (prefetch multiplier 4, early acks). The optimizing guide suggests
# a multiplier of 64 or more for many short tasks; here that changed nothing measurable (480 vs
# 462 and 628 vs 606 tasks/s, 20,000 tasks, 2 processes), so the benchmark keeps the defaults.
app.conf.update(broker_connection_retry_on_startup=True)


@app.task
def noop() -> None:
    """Do nothing; the measurement is the round trip through broker, worker and backend."""
