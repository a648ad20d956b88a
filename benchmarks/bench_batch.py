"""`statecli batch scan` over N remote checkpoints (issue 26 targets) on 127.0.0.1 with injected latency
(default 50 ms per request): `--backend http` serves them from the tests' Range HTTP server (a list of
URLs; a content ETag, so each file costs a HEAD even when cached), `--backend s3` from moto's S3 server
behind a delaying WSGI wrapper (a bucket glob: one listing gives every size and ETag):

- `--jobs 1` against `--jobs 16` (target: >= 8x on 2,000 safetensors/.pt files);
- peak RSS and temp files left of the `--jobs 16` run (target: < 500 MiB at 10,000 files, none left);
- a second run with the result cache against the first (target: >= 20x faster);
- with s3, the floor of any warm run: a fresh process that imports s3fs and lists the bucket, nothing else
  (moto lists ~1,000 keys in 0.4 s where S3 takes ~0.1 s: this row says how much of the warm run is that).

Each run is a fresh process (GNU time for RSS). Prints the Markdown rows; `--out FILE` appends them too.
The S3 bucket is filled through moto's backend in this process (seconds, not minutes of PUTs at 10,000).
The 10,000-object run, a few minutes on a quiet 2-core machine:

    .venv/bin/python benchmarks/bench_batch.py --backend s3 --files 10000 --skip-jobs1 --skip-nocache
    .venv/bin/python benchmarks/bench_batch.py [--backend s3] [--files 2000] [--latency 0.05] [--skip-jobs1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._timing import timed  # noqa: E402
from tests.remote.corpus import _pt, safetensors_bytes  # noqa: E402 - the tests' generator
from tests.remote.server import RangeServer  # noqa: E402 - the same server the tests use

STATECLI = [sys.executable, "-m", "statecli"]
# What every warm run over a bucket glob must do before its first record (the s3 floor row).
_LIST_ONLY = "import sys, fsspec; fs, p = fsspec.url_to_fs(sys.argv[1]); fs.glob(p, detail=True)"


def build(root: Path, n: int) -> list[str]:
    """n files, half safetensors, half torch zip .pt, in folders of 500."""
    pt = _pt(0)
    names = []
    for i in range(n):
        folder = root / f"f{i // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{folder.name}/m{i:05d}." + ("safetensors" if i % 2 == 0 else "pt")
        (root / name).write_bytes(safetensors_bytes(2 + i % 5, i) if i % 2 == 0 else pt)
        names.append(name)
    return names


class SlowS3:
    """moto's S3 API server with `latency` seconds slept before each request."""

    def __init__(self) -> None:
        self.latency = 0.0

    def __enter__(self) -> SlowS3:
        from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)

        def slow(environ: Any, start_response: Any) -> Any:
            if self.latency:
                time.sleep(self.latency)
            return app(environ, start_response)

        self.server = make_server("127.0.0.1", 0, slow, threaded=True, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


@contextmanager
def served(backend: str, root: Path, names: list[str], work: Path,
           latency: float) -> Iterator[tuple[list[str], dict[str, str]]]:
    """(the input arguments, the environment) for the runs, the files served with `latency`."""
    if backend == "http":
        with RangeServer(str(root)) as srv:
            srv.behaviour.latency, srv.behaviour.etag = latency, True
            listing = work / "urls.txt"
            listing.write_text("".join(srv.url(n) + "\n" for n in names))
            yield ["--from-list", str(listing)], dict(os.environ)
        return
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    with SlowS3() as s3:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3.url, "AWS_ENDPOINT_URL": s3.url}
        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]  # the server's own state: what PUTs would make, at once
        bucket.create_bucket("bench", "us-east-1")
        for name in names:
            bucket.put_object("bench", name, (root / name).read_bytes())
        s3.latency = latency
        yield ["s3://bench/**/*"], env


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--backend", choices=("http", "s3"), default="http")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--skip-jobs1", action="store_true", help="only --jobs 16 and the cached runs (10,000 files)")
    ap.add_argument("--skip-nocache", action="store_true",
                    help="no --no-cache --jobs 16 run: the cold cache run does the same reads (and says RSS/temp files)")
    ap.add_argument("--out", help="also append the rows to this Markdown file (e.g. benchmarks/batch_results.md)")
    args = ap.parse_args()
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root, work = Path(tmp) / "served", Path(tmp) / "work"
        work.mkdir()
        names = build(root, args.files)
        with served(args.backend, root, names, work, args.latency) as (inputs, env):
            base = [*STATECLI, "batch", "scan", *inputs, "-q"]

            def run(label: str, *extra: str, tmpdir: Path | None = None) -> None:
                out = str(work / f"{len(rows)}.ndjson")
                t, rss, _ = timed([*base, "--ndjson", out, *extra], {**env, "TMPDIR": str(tmpdir)} if tmpdir else env)
                rows.append((label, t, rss))

            if not args.skip_jobs1:
                run("--jobs 1, no cache", "--no-cache", "--jobs", "1")
            private = work / "tmp"  # the run's own TMPDIR: what it leaves there is what it left
            private.mkdir()
            if not args.skip_nocache:
                run("--jobs 16, no cache", "--no-cache", "--jobs", "16", tmpdir=private)
            cache = str(work / "cache")
            run("--jobs 16, cache cold", "--cache-dir", cache, "--jobs", "16", tmpdir=private)
            left = os.listdir(private)
            run("--jobs 16, cache warm (second run)", "--cache-dir", cache, "--jobs", "16")
            if args.backend == "s3":
                t, rss, _ = timed([sys.executable, "-c", _LIST_ONLY, inputs[0]], env)
                rows.append(("floor: import s3fs + list the bucket, no statecli", t, rss))
    lines = [f"# statecli batch scan: {args.files} files over {args.backend}, {args.latency * 1000:.0f} ms latency "
             "per request", "", "| run | seconds | files/s | peak RSS MiB |", "|---|---|---|---|"]
    lines += [f"| {name} | {t:.2f} | {args.files / t:.0f} | {rss:.0f} |" for name, t, rss in rows]
    times = {name: t for name, t, _ in rows}
    if not args.skip_jobs1 and not args.skip_nocache:
        lines.append(f"\n--jobs 16 vs --jobs 1: {times['--jobs 1, no cache'] / times['--jobs 16, no cache']:.1f}x")
    lines.append(f"cache warm vs cold: {times['--jobs 16, cache cold'] / times['--jobs 16, cache warm (second run)']:.1f}x; "
                 f"temp files left by --jobs 16: {len(left)}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
