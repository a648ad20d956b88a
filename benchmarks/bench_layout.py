"""Benchmark the value passes on the layout of real checkpoints (issue 27): many mid-size tensors.

Files (float32, tensor by tensor, a few MiB of memory): `a.pt` and `a.safetensors`, --size-gib of 4 MiB
tensors (a 250M-parameter model's shape at 1 GiB); `b.safetensors`, its fine-tuned copy (every value
moved); `many.safetensors`, 10,000 small tensors. Each statecli run is timed back to back with its
reference in the same run (best of --repeat, interleaved), and the load average is recorded:

| statecli | reference |
|---|---|
| `diff a.pt b.safetensors` | `cat a.pt b.safetensors > /dev/null` |
| `inspect --stats a.pt` / `a.safetensors` | torch loop: `torch.load(mmap=True)`, mean/std/min/max/isnan per tensor |
| `check --no-nan --no-inf a.safetensors` / `a.pt` | a warm read of the file (`cat`) |
| `check a.pt` (no value rules: start-up, safety scan, header) | the same; the difference is the NaN/Inf scan |
| `inspect --stats many.safetensors` | the torch loop over `safetensors.torch.load_file` |

    python benchmarks/bench_layout.py [--size-gib 1] [--repeat 3] [--label run] [--big] [--workdir DIR --keep]

`--big` adds the 4 GiB pair (about 13 GiB of disk while it runs). Appends a section to
benchmarks/layout_results.md and prints it.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
TENSOR = 4 << 20

TORCH_LOOP_PT = """
import sys, torch
sd = torch.load(sys.argv[1], mmap=True, weights_only=True)
for k, t in sd.items():
    float(t.mean()); float(t.std()); float(t.min()); float(t.max()); bool(torch.isnan(t).any())
"""
TORCH_LOOP_ST = """
import sys, torch
from safetensors.torch import load_file
for k, t in load_file(sys.argv[1]).items():
    float(t.mean()); float(t.std()); float(t.min()); float(t.max()); bool(torch.isnan(t).any())
"""


def write_safetensors(path: Path, sizes: list[int], seed: int, noise: bool) -> None:
    """float32 tensors of the given byte sizes; with `noise`, the same values moved by ~1e-3 (a fine-tune)."""
    import numpy as np

    from statecli.formats.safetensors import encode_header

    items = [(f"model.layers.{i // 8}.w{i % 8}.weight", "F32", (s // 4 // 256, 256) if s >= 1024 else (s // 4,), s)
             for i, s in enumerate(sizes)]
    with open(path, "wb") as f:
        f.write(encode_header(items, {"format": "pt"}))
        for i, s in enumerate(sizes):
            t = np.random.default_rng(i).standard_normal(s // 4, dtype=np.float32) * 0.02
            if noise:
                t += np.random.default_rng(i + seed).standard_normal(s // 4, dtype=np.float32) * 1e-4
            f.write(memoryview(t))


def make(work: Path, gib: float, tag: str) -> tuple[Path, Path, Path]:
    n = max(1, int(gib * (1 << 30)) // TENSOR) + 1
    sizes = [TENSOR] * n
    a, b, pt = work / f"a{tag}.safetensors", work / f"b{tag}.safetensors", work / f"a{tag}.pt"
    if not a.exists():
        write_safetensors(a, sizes, 0, False)
        write_safetensors(b, sizes, 1000, True)
        subprocess.run([STATECLI, "convert", str(a), "-o", str(pt)], check=True, capture_output=True)
    return a, b, pt


def best(cmd: list[str], ref: list[str], repeat: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(best seconds, peak MiB) of the command and of its reference, run interleaved after a warm-up of each."""
    got: list[list[tuple[float, float]]] = [[], []]
    for i in range(repeat + 1):
        for j, c in enumerate((cmd, ref)):
            secs, rss, _ = timed(c)
            if i:
                got[j].append((secs, rss))
    return min(got[0]), min(got[1])


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def cat(*paths: Path) -> list[str]:
    return ["sh", "-c", 'cat "$@" > /dev/null', "cat", *map(str, paths)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--big", action="store_true", help="also the 4 GiB files (~13 GiB of disk)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--label", default="run")
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="statecli-layout-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []

    def add(label: str, cmd: list[str], ref_label: str, ref: list[str]) -> None:
        (s, m), (rs, rm) = best(cmd, ref, args.repeat)
        line = f"| {label} | {s:.2f} s | {m:.0f} MiB | {ref_label} {rs:.2f} s, {rm:.0f} MiB | {rs / s:.0%} |"
        rows.append(line)
        print(line, file=sys.stderr)

    add("`statecli --version` (start-up, in every row below)", [STATECLI, "--version"], "`python -c 'import numpy'`",
        py("import numpy"))
    sizes = [(args.size_gib, "")] + ([(4.0, "4")] if args.big else [])
    for gib, tag in sizes:
        a, b, pt = make(work, gib, tag)
        g = f"{a.stat().st_size / (1 << 30):.2f} GiB, {TENSOR >> 20} MiB tensors"
        add(f"`diff a.pt b.safetensors` ({g})", [STATECLI, "diff", str(pt), str(b), "-q", "-f", "json"],
            "`cat` of both", cat(pt, b))
        add(f"`diff a.safetensors b.safetensors` ({g})", [STATECLI, "diff", str(a), str(b), "-q", "-f", "json"],
            "`cat` of both", cat(a, b))
        add(f"`inspect --stats a.pt` ({g})", [STATECLI, "inspect", str(pt), "--stats", "-q", "-f", "json"],
            "torch loop", py(TORCH_LOOP_PT, str(pt)))
        add(f"`inspect --stats a.safetensors` ({g})", [STATECLI, "inspect", str(a), "--stats", "-q", "-f", "json"],
            "torch loop", py(TORCH_LOOP_ST, str(a)))
        add(f"`check --no-nan --no-inf a.safetensors` ({g})",
            [STATECLI, "check", str(a), "--no-nan", "--no-inf", "-f", "json"], "`cat`", cat(a))
        add(f"`check --no-nan --no-inf a.pt` ({g})", [STATECLI, "check", str(pt), "--no-nan", "--no-inf", "-f", "json"],
            "`cat`", cat(pt))
        # The same command without the value rules: start-up, the safety scan and the header; the
        # difference between the two rows is the NaN/Inf scan itself.
        add(f"`check a.pt` (no value rules: the scan's fixed part) ({g})", [STATECLI, "check", str(pt), "-f", "json"],
            "`cat`", cat(pt))
        for p in (a, b, pt) if tag and not args.keep else ():
            p.unlink()
    many = work / "many.safetensors"
    if not many.exists():
        write_safetensors(many, [4096 if i % 4 else 65536 for i in range(10_000)], 0, False)
    add("`inspect --stats` (10,000 small tensors)", [STATECLI, "inspect", str(many), "--stats", "-q", "-f", "json"],
        "torch loop", py(TORCH_LOOP_ST, str(many)))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    head = [f"### {args.label} ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load average at the end "
            f"{load}; best of {args.repeat}, each run interleaved with its reference)", "",
            "| run | best | peak RSS | reference, same run | reference / run |", "|---|---:|---:|---|---:|"]
    text = "\n".join(head + rows) + "\n"
    print(text)
    with open(HERE / "layout_results.md", "a", encoding="utf-8") as f:
        f.write("\n" + text)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
