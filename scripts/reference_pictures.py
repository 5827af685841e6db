"""The reference pictures README shows (docs/*.png), made through the API as a client makes them.

python scripts/reference_pictures.py    # starts the service on a free port, fits Swagger UI's examples as jobs
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.families.registry import BY_KIND  # noqa: E402
from tests.live_server import live_server  # noqa: E402

# (file, family, example, changes to the example, plot query)
PICTURES: list[tuple[str, str, str, dict[str, Any], dict[str, str]]] = [
    ("plot-gaussian-2d.png", "gaussian", "three_clusters_2d", {}, {}),
    ("plot-gaussian-1d.png", "gaussian", "two_groups_1d", {}, {}),
    ("plot-coins.png", "coins", "do_batzoglou", {}, {}),
    ("plot-trace.png", "coins", "do_batzoglou", {"n_init": 4, "seed": 3, "init": None}, {"view": "trace"}),
    ("plot-hmm.png", "hmm", "dishonest_casino", {}, {}),
    ("plot-animation.gif", "gaussian", "three_clusters_2d",
     {"trace": "params", "init": {"method": "random"}, "seed": 2, "tol": 1e-9}, {"view": "animation"}),
]  # fmt: skip


def job(base_url: str, kind: str, body: dict[str, Any]) -> str:
    created = httpx.post(f"{base_url}/v1/jobs/{kind}", json=body, timeout=60).json()
    deadline = time.monotonic() + 120  # a bound on a hang
    while time.monotonic() < deadline:
        status = httpx.get(f"{base_url}/v1/jobs/{created['id']}", timeout=60).json()["status"]
        if status == "succeeded":
            return str(created["id"])
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"{kind} job {status}")
        time.sleep(0.1)
    raise RuntimeError(f"{kind} job did not finish")


def main() -> None:
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    with live_server({"EM_LOG_LEVEL": "WARNING"}) as server:
        for name, kind, example, changes, query in PICTURES:
            body = {**BY_KIND[kind].examples[example]["value"], **changes}
            body = {key: value for key, value in body.items() if value is not None}
            job_id = job(server.url, kind, body)
            response = httpx.get(f"{server.url}/v1/jobs/{job_id}/plot", params=query, timeout=120)
            response.raise_for_status()
            (docs / name).write_bytes(response.content)
            print(f"wrote docs/{name} ({len(response.content):,} bytes)")


if __name__ == "__main__":
    main()
