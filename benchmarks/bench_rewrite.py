"""Benchmark the streaming commands on multi-GB checkpoints: `diff` (values), `cast`, and `convert`
(.safetensors -> .pt and back), against a plain sequential read (and read+write+fsync) of the same bytes.

Measures wall time (median of --repeat runs) and peak RSS (/usr/bin/time -v) of each command run as a
subprocess, and compares peak RSS with the largest tensor. The rewrites (cast/convert) run interleaved
with the reference, a plain read + write + fsync of A with a 64 MiB buffer (issue 13's reference), so
each repeat sees the same load; their time is reported divided by the reference's median in the same
run. Files are generated tensor by tensor, so the generator needs only one tensor in memory. Runs are
warm (files in the page cache): dropping the cache needs root, which benchmarks do not assume.
Subprocesses run with bytecode caching on (PYTHONDONTWRITEBYTECODE unset), as an installed package has.

    python benchmarks/bench_rewrite.py [--size-gib 1] [--workdir DIR] [--keep] [--repeat 3] [--rewrites-only]

Writes the Markdown tables to stdout and to benchmarks/rewrite_results.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # run as a script: the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._timing import timed  # noqa: E402

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
            f.write(t.numpy().data)
            del t
    return sum(sizes), max(sizes)


def run(cmd: list[str], repeat: int) -> tuple[float, float]:
    """(median seconds, max peak RSS MiB) of a command."""
    runs = [run_once(cmd) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def run_once(cmd: list[str]) -> tuple[float, float, float]:
    """(seconds, peak RSS MiB, CPU seconds user + system) of one run of a command."""
    return timed(cmd)


def rewrites(work: Path, a: Path, gib: float, repeat: int) -> list[str]:
    """The rewrite rows: each command and the reference interleaved, repeat by repeat."""
    cmds = {"plain read + write + fsync of A, 64 MiB buffer (reference)": plain_copy(a, work / "copy.bin"),
            "plain read + write + fsync of A, 4 MiB buffer": plain_copy(a, work / "copy4.bin", 4),
            "cp A + sync (coreutils: copy_file_range)": ["sh", "-c", f"cp {a} {work / 'copy.cp'} && sync {work / 'copy.cp'}"],
            "convert A.safetensors -o .pt": [STATECLI, "convert", str(a), "-o", str(work / "a.pt")],
            "convert A.pt -o .safetensors": [STATECLI, "convert", str(work / "a.pt"), "-o",
                                             str(work / "back.safetensors")],
            "cast A --dtype half -o .safetensors": [STATECLI, "cast", str(a), "--dtype", "half", "-o",
                                                    str(work / "half.safetensors")],
            "cast A --dtype bfloat16 -o .safetensors": [STATECLI, "cast", str(a), "--dtype", "bfloat16", "-o",
                                                        str(work / "bf.safetensors")],
            "cast A.pt --dtype half -o .pt": [STATECLI, "cast", str(work / "a.pt"), "--dtype", "half", "-o",
                                              str(work / "half.pt")],
            "cast A.pt --dtype float8_e4m3fn -o .pt": [STATECLI, "cast", str(work / "a.pt"), "--dtype",
                                                       "float8_e4m3fn", "-o", str(work / "f8.pt")]}
    runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in cmds}
    for _ in range(repeat):
        for label, cmd in cmds.items():
            runs[label].append(run_once(cmd))
    ref = statistics.median(r[0] for r in runs[next(iter(cmds))])
    best_ref = min(r[0] for r in runs[next(iter(cmds))])
    lines = ["| run | median s | / reference (median) | best s | / reference (best) | CPU s (user+sys) | "
             "peak RSS MiB | throughput (input, median) |", "|---|---|---|---|---|---|---|---|"]
    for label, got in runs.items():
        secs, best = statistics.median(r[0] for r in got), min(r[0] for r in got)
        cpu, rss = statistics.median(r[2] for r in got), max(r[1] for r in got)
        lines.append(f"| {label} | {secs:.2f} | {secs / ref:.2f}x | {best:.2f} | {best / best_ref:.2f}x | {cpu:.2f} | "
                     f"{rss:.0f} | {gib / secs:.2f} GiB/s |")
    return lines


def plain_read(paths: list[Path]) -> list[str]:
    code = ("import sys\nfor p in sys.argv[1:]:\n    f = open(p, 'rb', buffering=0)\n    b = bytearray(64 << 20)\n"
            "    while f.readinto(b):\n        pass\n")
    return [sys.executable, "-c", code, *map(str, paths)]


def plain_copy(src: Path, dst: Path, mib: int = 64) -> list[str]:
    code = ("import sys, os\nsrc, dst = sys.argv[1:]\nb = bytearray(" + str(mib) + " << 20)\n"
            "with open(src, 'rb', buffering=0) as f, open(dst, 'wb') as g:\n"
            "    while (n := f.readinto(b)):\n        g.write(memoryview(b)[:n])\n    g.flush(); os.fsync(g.fileno())\n")
    return [sys.executable, "-c", code, str(src), str(dst)]


def others(work: Path, a: Path, b: Path, gib: float, largest: int, repeat: int, small_mib: int) -> list[str]:
    """Start-up bound rows (a small checkpoint), diff against a plain read of both files, inspect."""
    rows: list[tuple[str, float, float, str]] = []

    def add(label: str, cmd: list[str], moved_gib: float) -> None:
        secs, rss = run(cmd, repeat)
        rows.append((label, secs, rss, f"{moved_gib / secs:.2f} GiB/s" if moved_gib else "-"))

    add("python -c 'import torch' (what a rewrite paid before it read without torch)",
        [sys.executable, "-c", "import torch"], 0.0)
    small = work / "small.safetensors"
    small_bytes, _ = generate(small, small_mib / 1024, max(1, small_mib // 4), perturb=False)
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
    add("statecli inspect A.pt (metadata only)", [STATECLI, "inspect", str(work / "a.pt"), "--format", "json"], 0.0)
    lines = ["| run | median s | peak RSS MiB | RSS / largest tensor | throughput |", "|---|---|---|---|---|"]
    for label, secs, rss, thr in rows:
        lines.append(f"| {label} | {secs:.2f} | {rss:.0f} | {rss / (largest / (1 << 20)):.2f}x | {thr} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--largest-mib", type=int, default=128)
    ap.add_argument("--rewrites-only", action="store_true", help="only the cast/convert rows and their reference")
    ap.add_argument("--results", default=str(HERE / "rewrite_results.md"), help="where the Markdown goes")
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
    if not args.rewrites_only:
        generate(b, args.size_gib, args.largest_mib, perturb=True)
    gen = time.perf_counter() - t0
    gib = nbytes / (1 << 30)
    subprocess.run([STATECLI, "convert", str(a), "-o", str(work / "a.pt")], check=True, capture_output=True)
    load = os.getloadavg()
    lines = [f"Checkpoint A: {gib:.2f} GiB of float32 (largest tensor {largest / (1 << 20):.0f} MiB), generated in "
             f"{gen:.1f} s; warm page cache; {os.cpu_count()} cores; load average before "
             f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; median of {args.repeat}.", "",
             "Rewrites, each run interleaved with the reference (issue 13's target: <= 1.3x the reference, "
             "peak <= 300 MiB):", ""]
    lines += rewrites(work, a, gib, args.repeat)
    load = os.getloadavg()
    lines.append(f"\nLoad average after the rewrites: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}.")
    if not args.rewrites_only:
        lines += ["", "Other rows:", ""] + others(work, a, b, gib, largest, args.repeat, args.small_mib)
    text = "\n".join(lines)
    print(text)
    Path(args.results).write_text(text + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
