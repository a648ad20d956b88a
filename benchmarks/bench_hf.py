"""Benchmark `statecli inspect` of a 70B-shaped Hugging Face folder with a config.json: the first run
(builds the model with transformers on meta, stores its description) against repeated runs (the
description and results from the cache, no torch or transformers import), with the references
`python -c "import torch, transformers"` and `statecli inspect --no-hf-config` (the metadata path).

The folder holds Llama-3-70B's config.json and 15 safetensors shards (723 tensors, bfloat16) whose
headers declare the real shapes over sparse files made with truncate: ~141 GB apparent, a few KiB on
disk, no weights. Every timed command is a fresh process; the figure is the median of --runs rounds
(after a warm-up round; each round runs every case once, so a busy machine slows all cases alike),
with the peak RSS from os.wait4. "first run" points STATECLI_CACHE_DIR at an empty folder each
time; "repeated" reuses one. It also checks that the cached and built JSON agree
(notes aside) and that a cache hit leaves torch and transformers out of sys.modules, and prints where a
first run's CPU time goes: import torch+transformers, model class import, build on meta, key mapping, rest.

    .venv/bin/python benchmarks/bench_hf.py                 # ~1-2 minutes on 2 cores
    .venv/bin/python benchmarks/bench_hf.py --runs 3 --results /tmp/hf.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
    "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001,
    "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
}
SHARDS = 15


def tensors(c: dict) -> list[tuple[str, list[int]]]:
    h, i, v, kv = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_key_value_heads"]
    hd = h // c["num_attention_heads"]
    out = [("model.embed_tokens.weight", [v, h])]
    for n in range(c["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [(p + "self_attn.q_proj.weight", [h, h]), (p + "self_attn.k_proj.weight", [kv * hd, h]),
                (p + "self_attn.v_proj.weight", [kv * hd, h]), (p + "self_attn.o_proj.weight", [h, h]),
                (p + "mlp.gate_proj.weight", [i, h]), (p + "mlp.up_proj.weight", [i, h]),
                (p + "mlp.down_proj.weight", [h, i]), (p + "input_layernorm.weight", [h]),
                (p + "post_attention_layernorm.weight", [h])]
    return out + [("model.norm.weight", [h]), ("lm_head.weight", [v, h])]


def make_folder(folder: Path) -> int:
    """config.json, 15 header-only shards (sparse), and the index; returns the tensor count."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2))
    items = [(key, "BF16", shape) for key, shape in tensors(CONFIG)]
    write_shards(folder, items)
    return len(items)


_ITEMSIZE = {"BF16": 2, "F16": 2, "I32": 4}


def write_shards(folder: Path, items: list[tuple[str, str, list[int]]]) -> None:
    """(key, safetensors dtype, shape) items as SHARDS header-only safetensors shards whose declared
    bytes are a sparse hole, and model.safetensors.index.json."""
    per = -(-len(items) // SHARDS)
    weight_map: dict[str, str] = {}
    total = 0
    for s in range(SHARDS):
        name = f"model-{s + 1:05d}-of-{SHARDS:05d}.safetensors"
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for key, dtype, shape in items[s * per:(s + 1) * per]:
            n = _ITEMSIZE[dtype]
            for d in shape:
                n *= d
            header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[key] = name
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / name, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offset)  # sparse: the declared bytes, none written
        total += offset
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one fresh process; stdout discarded."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{cmd} failed ({status})")
    return elapsed, usage.ru_maxrss / 1024


Case = tuple[str, list[str], dict[str, str], "Path | None"]  # name, command, environment, cache to empty first


def interleaved(cases: list[Case], runs: int) -> list[tuple[str, float, float, float]]:
    """(name, median s, min s, max peak RSS MiB) per case: one warm-up round, then `runs` rounds that
    run every case once each, so a busy machine slows all cases alike rather than one series."""
    times: list[list[float]] = [[] for _ in cases]
    rss: list[list[float]] = [[] for _ in cases]
    for i in range(runs + 1):
        for n, (_, cmd, env, fresh_cache) in enumerate(cases):
            if fresh_cache is not None:
                shutil.rmtree(fresh_cache, ignore_errors=True)
            t, m = timed(cmd, env)
            if i:
                times[n].append(t)
                rss[n].append(m)
    return [(c[0], statistics.median(t), min(t), max(m)) for c, t, m in zip(cases, times, rss, strict=True)]


BREAKDOWN = r"""
import contextlib, io, json, sys, time
T = time.process_time
marks = {"build on meta": 0.0, "key mapping": 0.0}
outer = []  # a stage timed inside another (a build inside the key mapping) counts in the outer one
def wrap(obj, name, label):
    orig = getattr(obj, name)
    def timed(*a, **k):
        if outer:
            return orig(*a, **k)
        outer.append(label)
        t = T()
        try:
            return orig(*a, **k)
        finally:
            marks[label] += T() - t
            outer.pop()
    setattr(obj, name, timed)
t0 = T()
import torch, transformers
t1 = T()
cls = getattr(transformers, sys.argv[2])
t2 = T()  # statecli's own imports count in "rest"
from statecli.modeldef import hf, loader
wrap(cls, "_from_config", "build on meta")
wrap(hf, "_loader", "key mapping")
wrap(loader.HfLoader, "verdict", "key mapping")
wrap(loader.HfLoader, "map_keys", "key mapping")
from statecli.cli import app
sys.argv = ["statecli", "inspect", sys.argv[1], "--format", "json"]
try:
    with contextlib.redirect_stdout(io.StringIO()):
        app()
except SystemExit:
    pass
t4 = T()
print(json.dumps({"import torch+transformers": t1 - t0, "model class import": t2 - t1, **marks,
                  "rest": t4 - t2 - sum(marks.values())}))
"""


def breakdown(folder: Path, env: dict[str, str], runs: int) -> list[tuple[str, float]]:
    """CPU seconds of each stage of a first run, in one fresh process with an empty cache (median of
    `runs`): torch+transformers, the model class's modules, transformers' build on meta (`_from_config`),
    the key mapping (conversion mapping, from_pretrained's loading step on meta, key matches), and the
    rest of statecli (start-up, reading the headers, the description store, the report)."""
    got: list[dict[str, float]] = []
    for i in range(runs):
        cache = folder.parent / f"breakdown{i}"
        out = subprocess.run([sys.executable, "-c", BREAKDOWN, str(folder), CONFIG["architectures"][0]],
                             env=dict(env, STATECLI_CACHE_DIR=str(cache)), capture_output=True, text=True, check=True)
        got.append(json.loads(out.stdout.strip().splitlines()[-1]))
        shutil.rmtree(cache, ignore_errors=True)
    return [(k, statistics.median(g[k] for g in got)) for k in got[0]]


def json_of(folder: Path, env: dict[str, str]) -> dict:
    out = subprocess.run([str(BIN / "statecli"), "inspect", str(folder), "--format", "json"], env=env,
                         capture_output=True, text=True, check=False)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--results", default=str(HERE / "hf_results.md"))
    args = ap.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="statecli-bench-hf-"))
    try:
        folder = work / "llama70b"
        count = make_folder(folder)
        # Bytecode caching on, as for anyone who installed statecli (a DONTWRITEBYTECODE environment
        # would recompile torch and transformers in every run and double every figure).
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
        env["COLUMNS"] = "120"
        fresh = dict(env, STATECLI_CACHE_DIR=str(work / "fresh"))
        warm = dict(env, STATECLI_CACHE_DIR=str(work / "warm"))
        statecli = str(BIN / "statecli")
        insp = [statecli, "inspect", str(folder), "--format", "json"]
        py = sys.executable
        rows = interleaved([
            ('`python -c "import torch, transformers"`', [py, "-c", "import torch, transformers"], env, None),
            ('`python -c "import torch, transformers; transformers.LlamaForCausalLM"` (the model class)',
             [py, "-c", "import torch, transformers; transformers.LlamaForCausalLM"], env, None),
            ("`inspect --no-hf-config` (metadata path)", insp + ["--no-hf-config"], env, None),
            ("`inspect`, cache disabled (`STATECLI_NO_CACHE=1`, as before)", insp,
             dict(env, STATECLI_NO_CACHE="1"), None),
            ("`inspect`, first run (empty cache)", insp, fresh, work / "fresh"),
            ("`inspect`, repeated (cached description)", insp, warm, None),
        ], args.runs)
        # Checks: the cached answer equals the built one, and a hit imports neither torch nor transformers.
        built = json_of(folder, dict(env, STATECLI_NO_CACHE="1"))
        cached = json_of(folder, warm)
        built.pop("notes", None)
        cached.pop("notes", None)
        same = built == cached
        probe = ("import sys, atexit\n"
                 "atexit.register(lambda: sys.stderr.write('HEAVY=' + ','.join(sorted(m for m in ('torch', "
                 "'transformers') if m in sys.modules)) + '\\n'))\n"
                 "from statecli.cli import main\nsys.argv = ['statecli', 'inspect', sys.argv[1], '--format', 'json']\n"
                 "main()\n")
        err = subprocess.run([sys.executable, "-c", probe, str(folder)], env=warm, capture_output=True, text=True,
                             check=False).stderr
        heavy = next((x[6:] for x in err.splitlines() if x.startswith("HEAVY=")), "?") or "none"
        stages = breakdown(folder, env, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    imp, cls, meta, first, repeated = (rows[i][1] for i in (0, 1, 2, 4, 5))
    lines = [
        "# `inspect` of a 70B-shaped Hugging Face folder (benchmarks/bench_hf.py)", "",
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{count} tensors in {SHARDS} header-only shards; {args.runs} rounds of fresh processes, each round "
        f"running every case once (after a warm-up round); load average before: {load}.", "",
        "| run | median | min | peak RSS |", "|---|---:|---:|---:|",
        *[f"| {name} | {t * 1000:,.0f} ms | {lo * 1000:,.0f} ms | {m:,.0f} MiB |" for name, t, lo, m in rows], "",
        f"- first run - import of torch + transformers: {first - imp:+.2f} s (target <= +1 s): "
        f"{'PASS' if first - imp <= 1 else 'FAIL'}; of which importing the model class's modules "
        f"(modeling_llama and what it imports, unavoidable for a build): {cls - imp:+.2f} s; "
        f"first run - that import: {first - cls:+.2f} s",
        f"- repeated - metadata path: {repeated - meta:+.2f} s (target <= +0.3 s): "
        f"{'PASS' if repeated - meta <= 0.3 else 'FAIL'}",
        f"- cached JSON equals the built JSON (notes aside): {same}",
        f"- modules among torch/transformers imported on a cache hit: {heavy}",
        "", "Where a first run's time goes (CPU seconds in one fresh process, empty cache, median of "
        f"{args.runs}; `rest` is statecli's own part: start-up, headers, description store, report):", "",
        "| stage | CPU s |", "|---|---:|", *[f"| {name} | {secs:.2f} |" for name, secs in stages], "",
        f"- first run beyond the model class's import: {sum(v for k, v in stages[2:]):.2f} CPU s (target <= 1 s): "
        f"{'PASS' if sum(v for k, v in stages[2:]) <= 1 else 'FAIL'}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text)


if __name__ == "__main__":
    main()
