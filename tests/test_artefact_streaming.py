"""Artefact downloads through the HTTP API: rendered into the blob folder beside the SQLite
file on the first download, then streamed from it, equal to the in-memory renderer's."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from hydracompute.kinds.mandelbrot import MandelbrotKind
from hydracompute.store import SQLiteBackend
from tests.test_api import Pool, open_pool, registry_with_pi

MANDEL = MandelbrotKind()


def run_mandelbrot(pool: Pool, params: dict[str, object]) -> str:
    response = pool.client.post("/api/v1/jobs", json={"kind": "mandelbrot", "params": params})
    job_id: str = response.json()["job_id"]
    worker = pool.enrol(kinds=("mandelbrot",), cores=2)
    leases = pool.exchange(worker, want=2)["leases"]
    while leases:
        results = []
        for lease in leases:
            chunk = lease["chunk"]
            output = MANDEL.compute(lease["params"], chunk["start"], chunk["stop"])
            results.append({"lease_id": lease["lease_id"], "output": output})
        pool.clock.advance(0.01)
        leases = pool.exchange(worker, results, want=2)["leases"]
    assert pool.job(job_id)["state"] == "done"
    return job_id


def test_artefacts_are_rendered_into_the_blob_folder_and_streamed_from_it(
    tmp_path: Path,
) -> None:
    kinds = registry_with_pi()
    kinds.register(MandelbrotKind())
    backend = SQLiteBackend(tmp_path / "pool.db")
    with open_pool(kinds=kinds, backend=backend) as pool:
        job_id = run_mandelbrot(pool, {"width": 300, "height": 140, "max_iter": 120})
        store = pool.coordinator.store
        params = store.get_job(job_id).params
        outputs = store.job_outputs(job_id)
        folder = tmp_path / "pool.db-blobs" / "jobs" / job_id / "artefacts"
        assert not folder.exists()  # nothing rendered before the first download
        for name in ("counts.npy", "image.png"):
            url = f"/api/v1/jobs/{job_id}/artefacts/{name}"
            first, again = pool.client.get(url), pool.client.get(url)
            assert first.status_code == again.status_code == 200
            assert first.content == again.content == (folder / name).read_bytes()
            assert first.headers["content-length"] == str(len(first.content))
            assert first.headers["content-disposition"] == (
                f'attachment; filename="{job_id}-{name}"'
            )
            reference = MANDEL.render(params, outputs, name)
            assert reference is not None and first.headers["content-type"] == reference.media_type
            if name == "counts.npy":
                assert first.content == reference.data  # byte for byte
            else:
                np.testing.assert_array_equal(
                    np.asarray(Image.open(io.BytesIO(first.content))),
                    np.asarray(Image.open(io.BytesIO(reference.data))),
                )
        pool.refused(404, "GET", f"/api/v1/jobs/{job_id}/artefacts/..%2Fpool.db")
