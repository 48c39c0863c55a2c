"""End to end on PostgreSQL: a real coordinator process on ``--store postgresql://…`` and a
real worker process run a π job and a Mandelbrot job (whose large outputs and image go
to the blob store in the database) to their exact answers."""

from __future__ import annotations

import math
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from hydracompute.kinds.pi_kernel import count_hits
from tests.e2e_support import Pool, wait_until
from tests.postgres_support import POSTGRES_URL, Schemas, new_schema_name
from tests.test_e2e import MANDELBROT, SEED, direct_mandelbrot, downloaded_counts

pytestmark = pytest.mark.e2e


def test_a_coordinator_on_postgresql_runs_jobs_to_their_exact_answers(
    tmp_path: Path, postgres: Schemas
) -> None:
    import numpy as np

    schema = new_schema_name()
    p = Pool(tmp_path / "pool", target_chunk_s=0.1)
    p.options += ["--store", postgres.url(schema)]
    samples = 10**8 + 4321  # not a whole number of blocks
    try:
        p.start_coordinator()
        p.add_worker(cores=1)
        with p.client() as client:
            wait_until(lambda: p.online_workers() == 1, what="the worker joins")
            pi = client.submit("pi", samples=samples, seed=SEED)
            mandel = client.submit("mandelbrot", **MANDELBROT)
            answer = pi.wait(timeout=300).answer
            mandel.wait(timeout=300)
            counts = downloaded_counts(client, mandel.job_id)
    finally:
        p.close()
    assert answer["hits"] == count_hits(SEED, 0, samples)
    assert answer["samples"] == samples
    assert abs(answer["estimate"] - math.pi) < 6 * answer["stderr"]
    np.testing.assert_array_equal(counts, direct_mandelbrot())
    # The state is in the database, the image among its blobs, not in the data directory.
    assert not list((tmp_path / "pool").glob("*.db"))
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT name FROM {}.blobs WHERE job_id = %s").format(
            sql.Identifier(schema)
        )
        names = {row[0] for row in conn.execute(query, (mandel.job_id,))}
    assert "artefacts/counts.npy" in names
