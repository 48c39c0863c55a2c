"""What a released chunk costs a coordinator whose idle workers are held in long polls.

    .venv/bin/python bench/bench_held.py [--held 1000] [--releases 20]
        [--before-src /path/to/other/src] [--json]

An in-process coordinator (the real ``Coordinator`` service and store, memory backend, no
HTTP) holds ``--held`` idle workers' exchanges (``want`` 1, held up to 600 s: none ends
during the run). A π job of ``--releases`` one-block chunks is held by as many other
workers (backup copies off, ``backup_factor`` 100: at the job's tail the held workers
would otherwise be given copies of the held chunks, not only the released ones); each of
them in turn gives its chunk back, and the run waits until a held worker has taken it
and the looks it set off are over. Printed per released chunk: the exchanges the store
recorded and the process's CPU time. With ``--before-src``, the same in another
checkout's code first, side by side. Say the load average beside the CPU figures; the
exchange counts do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Run in a process of its own, so that each side imports its own code.
RUNNER = r"""
import asyncio, json, sys, time
from hydracompute.coordinator.service import Coordinator
from hydracompute.core.config import SchedulerConfig
from hydracompute.kinds import default_registry
from hydracompute.store import MemoryBackend, Store

held, releases = int(sys.argv[1]), int(sys.argv[2])


async def main():
    config = SchedulerConfig(heartbeat_s=600.0, max_wait_s=600.0, backup_factor=100.0)
    store = Store(MemoryBackend(), default_registry(), config)
    recorded = [0]
    real = store.exchange_many

    def counting(requests):
        recorded[0] += len(requests)
        return real(requests)

    store.exchange_many = counting
    service = Coordinator(store, forget_workers_after_s=None)
    now = time.time()
    store.submit_job("pi", {"samples": releases * 2**20, "seed": 1}, now=now)
    holders = []
    for n in range(releases):
        worker, _ = store.enrol_worker(f"holder {n}", 1, ["pi"], now)
        (lease,) = (await service.exchange(worker.worker_id, [], [], 1, 0.0)).leases
        holders.append((worker.worker_id, lease.lease_id))
    idle = [store.enrol_worker(f"idle {n}", 1, ["pi"], now)[0].worker_id for n in range(held)]
    before = recorded[0]
    waits = [
        asyncio.ensure_future(service.exchange(w, [], [], 1, 600.0)) for w in idle
    ]
    while recorded[0] < before + held:  # every one has looked once and is held
        await asyncio.sleep(0.001)

    async def settled():
        for _ in range(3):  # what the store thread and the held exchanges still have to do
            await service.call(lambda: None)
            for _ in range(20):
                await asyncio.sleep(0)

    await settled()
    looks, cpu = recorded[0], time.process_time()
    for n, (worker_id, lease_id) in enumerate(holders):
        await service.call(store.return_leases, worker_id, [lease_id], time.time())
        while sum(len(w.result().leases) for w in waits if w.done()) < n + 1:
            await asyncio.sleep(0.001)
        await settled()  # each release's looks counted before the next
    looks, cpu = recorded[0] - looks, time.process_time() - cpu
    taken = sum(len(w.result().leases) for w in waits if w.done())
    service.release_waiters()
    await asyncio.gather(*waits)
    await service.stop()
    print(json.dumps({
        "held": held,
        "releases": releases,
        "taken": taken,
        "exchanges_per_release": looks / releases,
        "cpu_ms_per_release": cpu * 1000 / releases,
    }))


asyncio.run(main())
"""


def run(src: Path, held: int, releases: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(held), str(releases)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--before-src", type=Path, help="another checkout's src, run first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent / "src"
    sides = {}
    if args.before_src:
        sides["before"] = run(args.before_src, args.held, args.releases)
    sides["this"] = run(here, args.held, args.releases)
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"load": load, **sides}, indent=1))
        return
    print(f"{args.held} held exchanges, {args.releases} chunks released one at a time")
    names = list(sides)
    print(f"{'':26}" + "".join(f"{n:>14}" for n in names))
    for key in ("taken", "exchanges_per_release", "cpu_ms_per_release"):
        print(f"{key:26}" + "".join(f"{sides[n][key]:>14,.1f}" for n in names))
    print("load average after: " + " ".join(f"{x:.2f}" for x in load))


if __name__ == "__main__":
    main()
