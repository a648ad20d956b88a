"""Dequantized values of a GGUF (issue 23's value target): `statecli inspect --stats` against gguf-py's own
`dequantize` followed by numpy reductions (mean/std/min/max/isnan per tensor), same file, same run, warm cache.

The file: --tensors tensors of 4096 x 2048 (8.4 M weights each), half Q8_0 and half Q4_0, quantized by
gguf-py (`gguf.quants.quantize`) from seeded normal values. Timed as fresh processes, best of --repeat,
interleaved; peak RSS beside each (statecli streams block range by block range; the reference holds a
tensor's float32 copy at a time).

    python benchmarks/bench_gguf_values.py [--tensors 8] [--repeat 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if str(Path(__file__).resolve().parent.parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._timing import timed  # noqa: E402

STATECLI = str(Path(sys.executable).with_name("statecli"))
REFERENCE = """
import sys, numpy as np, gguf
for t in gguf.GGUFReader(sys.argv[1]).tensors:
    x = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
    float(x.mean()); float(x.std()); float(x.min()); float(x.max()); bool(np.isnan(x).any())
"""


def write(path: Path, n: int) -> None:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    for i in range(n):
        qtype = gguf.GGMLQuantizationType.Q8_0 if i % 2 == 0 else gguf.GGMLQuantizationType.Q4_0
        x = np.random.default_rng(i).standard_normal((4096, 2048), dtype=np.float32) * 0.02
        w.add_tensor(f"blk.{i}.ffn_up.weight", gguf.quants.quantize(x, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp())
    path = work / "values.gguf"
    if not path.exists():
        write(path, args.tensors)
    runs: dict[str, list[tuple[float, float, float]]] = {"statecli": [], "reference": []}
    cmds = {"statecli": [STATECLI, "inspect", str(path), "--stats", "-f", "json"],
            "reference": [sys.executable, "-c", REFERENCE, str(path)]}
    for i in range(args.repeat + 1):
        for name, cmd in cmds.items():
            secs, rss, cpu = timed(cmd)
            if i:
                runs[name].append((secs, rss, cpu))
    (s, s_rss, s_cpu), (r, r_rss, r_cpu) = min(runs["statecli"]), min(runs["reference"])
    print(f"| `inspect --stats`, GGUF {args.tensors} x 8.4 M weights (Q8_0 + Q4_0) | {s:.2f} s ({s_cpu:.2f} s CPU) | "
          f"{s_rss:.0f} MiB | gguf-py dequantize + numpy reductions: {r:.2f} s ({r_cpu:.2f} s CPU), {r_rss:.0f} MiB "
          f"({r / s:.0%}) |")


if __name__ == "__main__":
    main()
