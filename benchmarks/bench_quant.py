"""Benchmark the metadata path of a quantized 70B-shaped Hugging Face folder (issue 24's target: as
fast as the unquantized folder, <= 0.6 s): `statecli size` and `inspect --no-hf-config -f json` of
Llama-3-70B's shapes stored as GPTQ int4 group 128 (qweight/qzeros/scales/g_idx per linear: 2,403
stored entries, 723 tensors once grouped, 560 of them quantized) against the same folder in bfloat16
(bench_hf.py's, 723 entries).

Both folders are header-only sparse shards (made with truncate: no weights on disk) with a config.json
(the GPTQ one has its quantization_config); `size` classifies against the config's model description,
which the warm-up round caches (as any second run finds it). Every timed command is a fresh process; the figure is the
median of --runs interleaved rounds after a warm-up round, with the peak RSS and CPU seconds (user +
system, what a shared machine distorts least). It prints the README row.

    .venv/bin/python benchmarks/bench_quant.py                 # ~1 minute on 2 cores
    .venv/bin/python benchmarks/bench_quant.py --runs 9
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # run as a script: the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._timing import timed  # noqa: E402
from benchmarks.bench_hf import CONFIG, make_folder, tensors, write_shards  # noqa: E402

BIN = Path(sys.executable).parent
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True,
        "checkpoint_format": "gptq"}


def gptq_items() -> list[tuple[str, str, list[int]]]:
    """(name, safetensors dtype, shape) of the 70B model with every decoder linear stored as GPTQ."""
    out: list[tuple[str, str, list[int]]] = []
    for name, shape in tensors(CONFIG):
        if ".layers." not in name or len(shape) != 2:
            out.append((name, "F16", shape))
            continue
        rows, cols = shape  # [out, in]
        stem = name.removesuffix(".weight")
        out += [(stem + ".qweight", "I32", [cols // 8, rows]), (stem + ".qzeros", "I32", [cols // 128, rows // 8]),
                (stem + ".scales", "F16", [cols // 128, rows]), (stem + ".g_idx", "I32", [cols])]
    return out


def make_gptq_folder(folder: Path) -> int:
    """config.json with quantization_config, SHARDS header-only sparse shards and the index."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG | {"torch_dtype": "float16", "quantization_config": GPTQ}))
    items = gptq_items()
    write_shards(folder, items)
    return len(items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="statecli-bench-quant-"))
    try:
        make_folder(work / "bf16")
        entries = make_gptq_folder(work / "gptq")
        env = dict(os.environ, COLUMNS="120", STATECLI_CACHE_DIR=str(work / "cache"))
        sc = str(BIN / "statecli")
        cases = [(f"{cmd} {kind}", [sc, *cmd.split(), str(work / kind), *extra])
                 for cmd, extra in (("size", []), ("inspect", ["--no-hf-config", "-f", "json"]))
                 for kind in ("bf16", "gptq")]
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in cases}
        for i in range(args.runs + 1):
            for name, cmd in cases:
                r = timed(cmd, env)
                if i:
                    results[name].append(r)
        check = json.loads(subprocess.run([sc, "size", str(work / "gptq"), "-f", "json"], env=env, check=True,
                                          capture_output=True, text=True).stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: (statistics.median(r[0] for r in v), max(r[1] for r in v), statistics.median(r[2] for r in v))
           for k, v in results.items()}
    print(f"load average before: {load}; {entries} GPTQ entries; {args.runs} interleaved rounds; "
          f"GPTQ logical parameters: {check['parameters']:,}")
    print("| case | median wall | peak RSS | median CPU |\n|---|---:|---:|---:|")
    for k, (t, m, c) in med.items():
        print(f"| `{k}` | {t:.2f} s | {m:.0f} MiB | {c:.2f} s |")
    g, b = med["size gptq"], med["size bf16"]
    print("\nREADME row:")
    print(f"| `size`, 70B-shaped GPTQ int4 HF folder (2,403 entries -> 560 logical weights) | {g[0]:.2f} s | "
          f"{g[1]:.0f} MiB | same folder in bf16: {b[0]:.2f} s |")


if __name__ == "__main__":
    main()
