"""The coordinator's own cost of one exchange: its application and its store, in process.

A π job's exchanges (one real result in, one chunk out, 64 workers at a time) are sent
straight to the coordinator's ASGI application over a SQLite file, with no HTTP server and
no sockets: what is measured is the code of this project (the exchange's route, the store
thread, SQLite), not uvicorn's. Prints the process's CPU time per exchange.

CPU time on a shared machine varies by ±10% from run to run. For a figure free of that
noise, count instructions with valgrind for two numbers of exchanges and divide the
difference by the difference (start-up cancels out):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/bench_exchange_cost.py --exchanges N

    .venv/bin/python bench/bench_exchange_cost.py [--exchanges 6400] [--jobs 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_coordinator import BLOCKS, SEED, hit_table
from hydracompute.coordinator.app import create_app
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind, Role
from hydracompute.kinds import default_registry
from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.store import open_store

WORKERS = 64
Message = dict[str, Any]


class InProcess:
    """Requests to an ASGI application by direct calls, each as uvicorn would send it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def request(self, path: str, body: Any, secret: str | None) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
        if secret:
            headers.append((b"authorization", b"Bearer " + secret.encode()))
        scope: Message = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8765),
            "state": {},
        }
        messages = [{"type": "http.request", "body": raw, "more_body": False}]
        status, chunks = 0, []

        async def receive() -> Message:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, json.loads(b"".join(chunks) or b"null")


async def run(exchanges: int, jobs: int) -> float:
    """CPU seconds of the process per exchange (both threads, start-up excluded)."""
    table = hit_table()
    with tempfile.TemporaryDirectory() as tmp:
        config = SchedulerConfig(target_chunk_s=0.01)
        store = open_store(f"sqlite:///{Path(tmp) / 'pool.db'}", default_registry(), config)
        now = time.time()
        _, admin = store.credentials.issue(CredentialKind.API_KEY, "bench", now, Role.ADMIN)
        _, join = store.credentials.issue(CredentialKind.JOIN_TOKEN, "bench", now)
        app = create_app(store)
        client = InProcess(app)
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        outbox: asyncio.Queue[Message] = asyncio.Queue()
        lifespan = asyncio.create_task(
            app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put
            )
        )
        await inbox.put({"type": "lifespan.startup"})
        await outbox.get()
        job = {"kind": "pi", "params": {"samples": BLOCKS * BLOCK_SAMPLES, "seed": SEED}}
        for _ in range(jobs):
            status, answer = await client.request("/api/v1/jobs", job, admin)
            assert status == 201, answer
        workers = []
        for n in range(WORKERS):
            enrol = {"name": f"w{n}", "cores": 1, "kinds": ["pi"], "join_token": join}
            status, answer = await client.request("/api/v1/workers", enrol, None)
            assert status == 201, answer
            workers.append((answer["worker_id"], answer["secret"]))
        results: dict[str, list[Message]] = {worker_id: [] for worker_id, _ in workers}

        async def exchange(worker_id: str, secret: str) -> None:
            body = {"results": results[worker_id], "want": 1, "wait_s": 0}
            path = f"/api/v1/workers/{worker_id}/exchange"
            status, answer = await client.request(path, body, secret)
            assert status == 200, answer
            results[worker_id] = [
                {
                    "lease_id": g["lease_id"],
                    "compute_s": 0.5,
                    "output": {
                        "hits": int(table[g["chunk"]["start"] : g["chunk"]["stop"]].sum()),
                        "samples": (g["chunk"]["stop"] - g["chunk"]["start"]) * BLOCK_SAMPLES,
                    },
                }
                for g in answer["leases"]
            ]

        began = time.process_time()
        done = 0
        while done < exchanges:
            group = workers[: min(WORKERS, exchanges - done)]
            await asyncio.gather(*(exchange(w, s) for w, s in group))
            done += len(group)
        spent = time.process_time() - began
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await lifespan
    return spent / exchanges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=6400)
    parser.add_argument("--jobs", type=int, default=10, help="running jobs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    per_exchange = asyncio.run(run(args.exchanges, args.jobs))
    if args.json:
        print(json.dumps({"exchanges": args.exchanges, "cpu_s_per_exchange": per_exchange}))
        return
    print(
        f"{args.exchanges} exchanges through the application and the store, in process: "
        f"{per_exchange * 1e6:.0f} µs of CPU each"
    )


if __name__ == "__main__":
    main()
