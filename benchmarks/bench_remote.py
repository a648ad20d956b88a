"""Remote checkpoints over a local HTTP server with injected latency per request: inspect of one file,
of a 15-shard folder, and diff of two remote files against download-then-diff. Prints a Markdown table.

    python benchmarks/bench_remote.py [--latency 0.05] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.remote.server import GIB, RangeServer  # noqa: E402 - the same server the tests use
from tests.remote.server import sparse_safetensors as _sparse_safetensors  # noqa: E402


def _make(root: Path, diff_mib: int) -> None:
    import numpy as np
    import torch
    from safetensors.numpy import save_file
    from torch.serialization import skip_data

    _sparse_safetensors(root / "big.safetensors")
    with skip_data():
        torch.save({f"layer{i}.weight": torch.empty(GIB // 12) for i in range(3)}, root / "big.pt")
    shards = root / "sharded"
    shards.mkdir()
    wmap = {}
    for i in range(15):
        name = f"model-{i + 1:05d}-of-00015.safetensors"
        save_file({f"layers.{i}.{k}": np.zeros((64, 64), np.float32) for k in ("q", "k", "v", "o")}, str(shards / name))
        wmap.update({f"layers.{i}.{k}": name for k in ("q", "k", "v", "o")})
    (shards / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    rng = np.random.default_rng(0)
    n = diff_mib * (1 << 20) // 4 // 8
    a = {f"w{i}": rng.standard_normal(n, dtype=np.float32) for i in range(8)}
    save_file(a, str(root / "a.safetensors"))
    a["w3"][7] += 1
    save_file(a, str(root / "b.safetensors"))


def _run(args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "statecli", *args], capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"statecli {' '.join(args)} failed: {proc.stderr.strip()}")
    return time.perf_counter() - t0


def _download_then_diff(srv: RangeServer, tmp: Path) -> float:
    t0 = time.perf_counter()
    import fsspec

    fs = fsspec.filesystem("http")
    for name in ("a.safetensors", "b.safetensors"):
        fs.get_file(srv.url(name), str(tmp / name))  # one streaming GET per file
    _run(["diff", str(tmp / "a.safetensors"), str(tmp / "b.safetensors")])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--diff-mib", type=int, default=256, help="size of each diffed file")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "served"
        root.mkdir()
        _make(root, opts.diff_mib)
        with RangeServer(str(root)) as srv:
            srv.behaviour.latency = opts.latency
            cases = [
                ("inspect 1 GiB .safetensors", lambda: _run(["inspect", srv.url("big.safetensors")])),
                ("inspect 1 GiB .pt (3 tensors)", lambda: _run(["inspect", srv.url("big.pt")])),
                ("inspect 15-shard folder (index)", lambda: _run(["inspect", srv.url("sharded/model.safetensors.index.json")])),
                (f"diff two remote {opts.diff_mib} MiB files", lambda: _run(["diff", srv.url("a.safetensors"),
                                                                             srv.url("b.safetensors")])),
            ]
            print(f"latency {opts.latency * 1000:.0f} ms per request; median of {opts.repeat}; wall time of a "
                  f"`python -m statecli` subprocess\n")
            print("| case | time | requests | bytes transferred |")
            print("|---|---:|---:|---:|")
            for label, fn in cases:
                times, reqs, sent = [], 0, 0
                for _ in range(opts.repeat):
                    srv.log.reset()
                    times.append(fn())
                    reqs, sent = len(srv.log.requests), srv.log.bytes_sent
                print(f"| {label} | {statistics.median(times):.2f} s | {reqs} | {sent:,} |")
            times = []
            for _ in range(opts.repeat):
                with tempfile.TemporaryDirectory(dir=d) as t:
                    srv.log.reset()
                    times.append(_download_then_diff(srv, Path(t)))
            print(f"| download both, then diff locally | {statistics.median(times):.2f} s | {len(srv.log.requests)} | "
                  f"{srv.log.bytes_sent:,} |")
    print(f"\n{os.cpu_count()} CPUs; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
