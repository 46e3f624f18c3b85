"""Benchmark 4: platform overhead = end-to-end HTTP latency / pure model compute, same request.

    .venv/bin/python benchmarks/serving_overhead.py [--repeat 20] [--steps 25,4]

Server: a real `bentoml serve bentos.bg_service.service:BgService` subprocess (BGP_BASE_DIR, a
registry with one brand), requests sent one at a time (batch 1) over HTTP with multipart upload
and the JSON/base64 answer decoded. Model compute: `BgPipeline.generate` in this process on the
same base, adapter, image, mask, category, seed, steps and guidance. The headline ratio B / A
compares the SAME requests: B = their mean end-to-end HTTP latency, A = the mean model time the
server itself measured for them (bgp_model_seconds: slot activation + denoising + decoding), so
drifts of the shared machine's load cancel out. For reference: the model run in this process,
`Engine.generate` in this process (queue + batching + cache, no HTTP), and the service's own
request latency (bgp_request_latency_seconds: validation, PNG encoding, base64 included).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import serving_common as common

SERVICE = "bentos.bg_service.service:BgService"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base: Path, registry: str, work: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "BGP_BASE_DIR": str(base), "BGP_REGISTRY": registry, "BGP_WORK_DIR": str(work),
           "BGP_POLL_INTERVAL_S": "0", "BENTOML_HOME": str(work / "bentoml"), "HF_HUB_OFFLINE": "1"}
    log = open(work / "server.log", "wb")  # noqa: SIM115 - kept for the server's lifetime
    proc = subprocess.Popen([str(common.ROOT / ".venv" / "bin" / "bentoml"), "serve", SERVICE, "--host", "127.0.0.1",
                             "--port", str(port)], cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(work / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("server not ready after 180 s")


def server_totals(url: str) -> dict[str, float]:
    """Sums and counts of the service's request latency and model time (Prometheus text)."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    wanted = {'bgp_request_latency_seconds_sum{endpoint="generate"}': "request_s",
              'bgp_request_latency_seconds_count{endpoint="generate"}': "requests",
              "bgp_model_seconds_sum": "model_s", "bgp_model_seconds_count": "batches"}
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            out[wanted[name]] = float(value)
    return out


def measure(http, url, pipe, engine, steps, guidance, repeat, rgb, mask, png) -> list:
    import base64

    import torch

    from bg_platform.serving import parse_generate

    fields = {"category": "wood", "brand": "acme", "seed": "7", "steps": str(steps), "guidance": str(guidance)}
    req = parse_generate(engine.config, engine.categories, image=png, category="wood", brand="acme", seed=7,
                         steps=steps, guidance=guidance)

    def over_http():
        r = http.post(f"{url}/generate", files={"image": ("p.png", png, "image/png")}, data=fields)
        r.raise_for_status()
        return base64.b64decode(r.json()["images"][0])

    def compute():
        with torch.no_grad():
            return pipe.generate([rgb], [mask], ["wood"], [7], slots=["slot0"], steps=steps, guidance=guidance).images[0]

    def in_engine():
        return engine.generate(req)

    for fn in (over_http, compute, in_engine):
        fn()
    # interleaved, so drifts in the shared machine's load hit all three alike
    http_s, compute_s, engine_s = [], [], []
    before = server_totals(url)
    for _ in range(repeat):
        http_s += common.timed(over_http, 1, warmup=0)
        compute_s += common.timed(compute, 1, warmup=0)
        engine_s += common.timed(in_engine, 1, warmup=0)
    after = server_totals(url)
    d = {k: after[k] - before[k] for k in after}
    assert d["requests"] == repeat and d["batches"] == repeat, d  # batch 1: one model batch per request
    model_ms, server_ms = d["model_s"] / repeat * 1000, d["request_s"] / repeat * 1000
    http_mean = sum(http_s) / len(http_s) * 1000
    h, c, e = (common.median_ms(x) for x in (http_s, compute_s, engine_s))
    return [steps, model_ms, server_ms, http_mean, f"{http_mean / model_ms:.3f}", f"{http_mean - model_ms:.1f}",
            c, e, h, f"{h / c:.3f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--steps", default="25,4", help="denoising steps to measure (25 = the service default)")
    ap.add_argument("--guidance", type=float, default=3.0)
    args = ap.parse_args()
    env = common.environment()
    import httpx

    from bg_platform.model.components import load
    from bg_platform.model.lora import load_adapter
    from bg_platform.model.pipeline import BgPipeline
    from bg_platform.serving import Engine, ServingConfig

    root = Path(tempfile.mkdtemp(prefix="bgp-bench-overhead-"))
    base, fp = common.build_base(root)
    registry = str(root / "registry")
    folders = common.write_adapters(root, base, fp, ["acme"], registry=registry)
    rgb, mask, png = common.product(0)
    proc, url = start_server(base, registry, root)
    rows = []
    try:
        pipe = BgPipeline(load(base), lora_slots=4, max_rank=16)  # the service's defaults
        meta, tensors = load_adapter(folders["acme"], fp)
        pipe.slots.activate("slot0", "acme", pipe.slots.prepare(meta, tensors))
        engine = Engine(ServingConfig(base_dir=str(base), registry_root=registry, poll_interval_s=0,
                                      work_dir=str(root / "engine")))
        with httpx.Client(timeout=300) as http:
            for steps in [int(s) for s in args.steps.split(",")]:
                rows.append(measure(http, url, pipe, engine, steps, args.guidance, args.repeat, rgb, mask, png))
        engine.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    common.table(f"Platform overhead at batch 1 (64 px, guidance {args.guidance}, {args.repeat} requests per row)",
                 ["steps", "A: model ms in server (mean)", "server request ms (mean)", "B: HTTP end-to-end ms (mean)",
                  "B / A", "B - A ms", "model ms in this process (median)", "Engine.generate ms (median)",
                  "HTTP ms (median)", "HTTP / in-process model (medians)"], rows)
    print(env)


if __name__ == "__main__":
    main()
