"""Benchmark the streaming commands on multi-GB checkpoints: `diff` (values), `cast`, and `convert`
(.safetensors -> .pt and back), against a plain sequential read (and read+write) of the same bytes.

Measures wall time (median of --repeat runs) and peak RSS (/usr/bin/time -v) of each command run as a
subprocess, and compares peak RSS with the largest tensor. Files are generated tensor by tensor, so
the generator needs only one tensor in memory. Runs are warm (files in the page cache): dropping the
cache needs root, which benchmarks do not assume.

    python benchmarks/bench_rewrite.py [--size-gib 3] [--workdir DIR] [--keep] [--repeat 3]

Writes the Markdown table to stdout and to benchmarks/rewrite_results.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATECLI = str(Path(sys.executable).with_name("statecli"))


def generate(path: Path, size_gib: float, largest_mib: int, perturb: bool) -> tuple[int, int]:
    """A safetensors file of float32 tensors written one at a time; returns (bytes, largest tensor)."""
    import torch

    from statecli.formats.safetensors import encode_header

    total = int(size_gib * (1 << 30))
    sizes: list[int] = []
    big = largest_mib << 20
    while sum(sizes) + big <= total:
        sizes.append(big if len(sizes) % 4 == 0 else big // 2)
    items = [(f"model.layers.{i}.weight", "F32", (s // 4 // 1024, 1024), s) for i, s in enumerate(sizes)]
    with open(path, "wb") as f:
        f.write(encode_header(items, {"format": "pt"}))
        for i, (_, _, shape, _) in enumerate(items):
            g = torch.Generator().manual_seed(i)
            t = torch.randn(shape, generator=g)
            if perturb and i % 3 == 0:
                t[0, :8] += 1e-3
            f.write(memoryview(t.numpy()))
            del t
    return sum(sizes), max(sizes)


def run(cmd: list[str], repeat: int) -> tuple[float, float]:
    """(median seconds, max peak RSS MiB) of a command."""
    times, rss = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        rss.append(int(m.group(1)) / 1024 if m else float("nan"))
    return statistics.median(times), max(rss)


def plain_read(paths: list[Path]) -> list[str]:
    code = ("import sys\nfor p in sys.argv[1:]:\n    f = open(p, 'rb', buffering=0)\n    b = bytearray(64 << 20)\n"
            "    while f.readinto(b):\n        pass\n")
    return [sys.executable, "-c", code, *map(str, paths)]


def plain_copy(src: Path, dst: Path) -> list[str]:
    code = ("import sys, os\nsrc, dst = sys.argv[1:]\nb = bytearray(64 << 20)\n"
            "with open(src, 'rb', buffering=0) as f, open(dst, 'wb') as g:\n"
            "    while (n := f.readinto(b)):\n        g.write(memoryview(b)[:n])\n    g.flush(); os.fsync(g.fileno())\n")
    return [sys.executable, "-c", code, str(src), str(dst)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=3.0)
    ap.add_argument("--largest-mib", type=int, default=256)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--small-mib", type=int, default=10, help="size of the small checkpoint (start-up bound rows)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="statecli-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    a, b = work / "a.safetensors", work / "b.safetensors"
    t0 = time.perf_counter()
    nbytes, largest = generate(a, args.size_gib, args.largest_mib, perturb=False)
    generate(b, args.size_gib, args.largest_mib, perturb=True)
    gen = time.perf_counter() - t0
    gib = nbytes / (1 << 30)
    rows: list[tuple[str, float, float, str]] = []

    def add(label: str, cmd: list[str], moved_gib: float) -> None:
        secs, rss = run(cmd, args.repeat)
        rows.append((label, secs, rss, f"{moved_gib / secs:.2f} GiB/s"))

    add("python -c 'import torch' (what a rewrite paid before it read without torch)",
        [sys.executable, "-c", "import torch"], 0.0)
    small = work / "small.safetensors"
    small_bytes, _ = generate(small, args.small_mib / 1024, max(1, args.small_mib // 4), perturb=False)
    small_gib = small_bytes / (1 << 30)
    add(f"statecli convert small ({small_bytes >> 20} MiB) -o .pt", [STATECLI, "convert", str(small), "-o",
                                                                     str(work / "small.pt")], small_gib)
    add(f"statecli cast small.pt ({small_bytes >> 20} MiB) --dtype half -o .pt",
        [STATECLI, "cast", str(work / "small.pt"), "--dtype", "half", "-o", str(work / "small-half.pt")], small_gib)
    add(f"statecli cast small ({small_bytes >> 20} MiB) --dtype bfloat16 -o .safetensors",
        [STATECLI, "cast", str(small), "--dtype", "bfloat16", "-o", str(work / "small-bf.safetensors")], small_gib)
    add("plain read of A and B (baseline)", plain_read([a, b]), 2 * gib)
    add("statecli diff A B (values, rtol/atol defaults)", [STATECLI, "diff", str(a), str(b), "-q", "--format", "json"],
        2 * gib)
    add("plain read+write of A (baseline)", plain_copy(a, work / "copy.bin"), gib)
    add("statecli cast A --dtype half -o .safetensors",
        [STATECLI, "cast", str(a), "--dtype", "half", "-o", str(work / "half.safetensors")], gib)
    add("statecli cast A --dtype bfloat16 -o .safetensors",
        [STATECLI, "cast", str(a), "--dtype", "bfloat16", "-o", str(work / "bf.safetensors")], gib)
    add("statecli convert A -o .pt", [STATECLI, "convert", str(a), "-o", str(work / "a.pt")], gib)
    add("statecli cast A.pt --dtype half -o .pt", [STATECLI, "cast", str(work / "a.pt"), "--dtype", "half", "-o",
                                                   str(work / "half.pt")], gib)
    add("statecli cast A.pt --dtype float8_e4m3fn -o .pt", [STATECLI, "cast", str(work / "a.pt"), "--dtype",
                                                            "float8_e4m3fn", "-o", str(work / "f8.pt")], gib)
    add("statecli convert A.pt -o .safetensors", [STATECLI, "convert", str(work / "a.pt"), "-o",
                                                  str(work / "back.safetensors")], gib)
    add("statecli inspect A.pt (metadata only)", [STATECLI, "inspect", str(work / "a.pt"), "--format", "json"], 0.0)
    lines = [f"Checkpoints: {gib:.2f} GiB of float32 each ({len(rows)} runs, median of {args.repeat}); "
             f"largest tensor {largest / (1 << 20):.0f} MiB; generated in {gen:.1f} s; warm page cache.",
             "", "| run | median s | peak RSS MiB | RSS / largest tensor | throughput |", "|---|---|---|---|---|"]
    for label, secs, rss, thr in rows:
        ratio = rss / (largest / (1 << 20))
        lines.append(f"| {label} | {secs:.2f} | {rss:.0f} | {ratio:.2f}x | {thr if not thr.startswith('0.00') else '-'} |")
    text = "\n".join(lines)
    print(text)
    (HERE / "rewrite_results.md").write_text(text + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
