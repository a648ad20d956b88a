"""Benchmark the value commands (issue 13): startup on a small checkpoint, `diff` and `--stats` against a
plain read / a plain torch loop, `cast` against read + write + fsync, the metadata floor, and (with
transformers) a 70B-shaped Hugging Face folder with and without the model-description cache.

Every command runs as a fresh subprocess; wall time is the median of --repeat runs, peak RSS the max
(GNU /usr/bin/time). Files are generated tensor by tensor (float32, a fine-tune: B = A + noise), warm
page cache unless --cold (posix_fadvise DONTNEED on the inputs before each run, best effort).

    python benchmarks/bench_values.py [--size-gib 1] [--repeat 3] [--label after] [--skip-big] [--skip-hf]

Appends a Markdown section (labelled) to benchmarks/values_results.md and prints it.
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
import time
from collections.abc import Callable
from pathlib import Path

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # run as a script: the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._timing import evict, timed  # noqa: E402

HERE = Path(__file__).resolve().parent
STATECLI = str(Path(sys.executable).with_name("statecli"))

TORCH_STATS = """
import sys, torch
from safetensors import safe_open
for p in sys.argv[1:]:
    with safe_open(p, framework="pt") as f:
        for k in f.keys():
            t = f.get_tensor(k).reshape(-1)
            for s in range(0, t.numel(), 1 << 22):
                c = t[s:s + (1 << 22)].to(torch.float64)
                fin = torch.isfinite(c)
                v = c[fin]
                int(torch.isnan(c).sum()); int(torch.isinf(c).sum()); int((c == 0).sum())
                float(v.min()); float(v.max()); float(v.mean()); float(v.std())
"""


def generate(path: Path, total: int, largest: int, seed_offset: int, noise: bool, tiny: int = 0) -> int:
    """A float32 safetensors file of ~`total` bytes (or `tiny` 64-element tensors); returns bytes written."""
    import numpy as np

    from statecli.formats.safetensors import encode_header

    if tiny:
        sizes = [256] * tiny
    else:
        sizes = []
        while sum(sizes) + largest <= total:
            sizes.append(largest if len(sizes) % 4 == 0 else largest // 2)
        sizes = sizes or [total // 4 * 4]
    items = [(f"model.layers.{i}.weight", "F32", (s // 4,), s) for i, s in enumerate(sizes)]
    with open(path, "wb") as f:
        f.write(encode_header(items, {"format": "pt"}))
        for i, s in enumerate(sizes):
            rng = np.random.default_rng(i)
            t = rng.standard_normal(s // 4, dtype=np.float32)
            if noise:
                t += np.random.default_rng(i + seed_offset).standard_normal(s // 4, dtype=np.float32) * 1e-3
            f.write(memoryview(t))
    return sum(sizes)


def _once(cmd: list[str], cold: list[Path] | None, env: dict[str, str] | None) -> tuple[float, float]:
    if cold:
        evict(cold)
    secs, rss, _ = timed(cmd, env)
    return secs, rss


def run(cmd: list[str], repeat: int, cold: list[Path] | None = None, envs: list[dict[str, str] | None] | None = None
        ) -> list[tuple[float, float]]:
    """(median seconds, max peak RSS MiB) of a command under each env, runs interleaved (A B A B ...) so
    a busy machine's load falls on both alike; one untimed warm-up run of each first."""
    envs = envs or [None]
    times: list[list[float]] = [[] for _ in envs]
    rss: list[list[float]] = [[] for _ in envs]
    for i in range(repeat + 1):
        for j, env in enumerate(envs):
            secs, peak = _once(cmd, cold, env)
            if i or cold:
                times[j].append(secs)
                rss[j].append(peak)
    return [(statistics.median(t), max(r)) for t, r in zip(times, rss)]


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


TORCH_SHAPES = ("import sys, torch\nsd = torch.load(sys.argv[1], mmap=True, weights_only=True)\n"
                "print(sum(len(t.shape) for t in sd.values()))\n")
PLAIN_READ = ("import sys\nb = bytearray(64 << 20)\nfor p in sys.argv[1:]:\n    f = open(p, 'rb', buffering=0)\n"
              "    while f.readinto(b):\n        pass\n")
PLAIN_COPY = ("import sys, os\nsrc, dst = sys.argv[1:]\nb = bytearray(64 << 20)\n"
              "with open(src, 'rb', buffering=0) as f, open(dst, 'wb') as g:\n"
              "    while (n := f.readinto(b)):\n        g.write(memoryview(b)[:n])\n    g.flush(); os.fsync(g.fileno())\n")


def hf_folder(work: Path, layers: int) -> Path | None:
    """A 70B-shaped Llama folder: config.json + safetensors shards whose headers name 80 layers' tensors
    (data zero-length would be refused, so each tensor is a 1-element stand-in of the right name)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return None
    from statecli.formats.safetensors import encode_header

    d = work / "llama70b"
    d.mkdir(exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
           "intermediate_size": 28672, "num_attention_heads": 64, "num_key_value_heads": 8,
           "num_hidden_layers": layers, "vocab_size": 128256, "torch_dtype": "bfloat16",
           "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
    (d / "config.json").write_text(json.dumps(cfg))
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for i in range(layers):
        names += [f"model.layers.{i}.{m}.weight" for m in (
            "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
            "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")]
    shards = 15
    index: dict[str, str] = {}
    for s in range(shards):
        part = names[s::shards]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        with open(d / fname, "wb") as f:
            f.write(encode_header([(n, "BF16", (1,), 2) for n in part], {"format": "pt"}))
            f.write(b"\0\0" * len(part))
        index.update(dict.fromkeys(part, fname))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    return d


def targets(got: dict[str, tuple[float, float]]) -> list[str]:
    """Issue 13's targets, each checked against the reference measured in the same run."""
    def find(prefix: str) -> tuple[float, float] | None:
        return next((v for k, v in got.items() if k.startswith(prefix)), None)

    def find_all(pred: Callable[..., bool]) -> tuple[float, float] | None:
        return next((v for k, v in got.items() if pred(k)), None)

    out = ["| target | measured | verdict |", "|---|---|---|"]

    def check(what: str, figure: str, ok: bool) -> None:
        out.append(f"| {what} | {figure} | {'met' if ok else '**not met**'} |")

    for label in ("inspect -f json (", "size -f json ("):
        m, ref = find_all(lambda k, w=label: k.startswith(w) and k.endswith(".pt)")), find("torch.load(mmap=True) + shapes")
        if m and ref:
            check(f"`{label.split(' (')[0]}` of the big .pt: <= 150 ms, <= 40 MiB, >= 9x faster than "
                  "torch.load(mmap=True) + shapes", f"{m[0] * 1000:.0f} ms, {m[1]:.0f} MiB, {ref[0] / m[0]:.1f}x",
                  m[0] <= 0.15 and m[1] <= 40 and ref[0] / m[0] >= 9)
    for label, secs_rss in got.items():
        if "(10 MiB" in label and not label.startswith(("inspect -f", "size -f")):
            check(f"`{label}` <= 0.5 s", f"{secs_rss[0]:.2f} s", secs_rss[0] <= 0.5)
    for temp, need in (("warm", 0.5), ("cold", 0.8)):
        d = find_all(lambda k, t=temp: k.startswith("diff A B (") and t in k)
        r = find_all(lambda k, t=temp: k.startswith("plain read of A and B (") and t in k)
        if d and r:
            check(f"`diff`, {temp} cache: >= {need:.0%} of a plain read of both files", f"{r[0] / d[0]:.0%}",
                  r[0] / d[0] >= need)
    st = find_all(lambda k: k.startswith("inspect --stats (") and "10 MiB" not in k)
    loop = find("plain torch loop")
    if st and loop:
        check("`--stats` at least as fast as a plain torch loop", f"{st[0]:.2f} s vs {loop[0]:.2f} s", st[0] <= loop[0])
    copy = next((v for k, v in got.items() if k.startswith("plain read + write + fsync")), None)
    for k, v in got.items():
        if copy and k.startswith(("cast --dtype half (", "convert -o .pt (")) and "10 MiB" not in k:
            check(f"`{k}` <= 1.3x read + write + fsync, <= 300 MiB", f"{v[0] / copy[0]:.2f}x, {v[1]:.0f} MiB",
                  v[0] / copy[0] <= 1.3 and v[1] <= 300)
    first, bare = find("inspect 70B-shaped folder with config.json (first"), find("python -c 'import torch, transformers'")
    cls, rep = find("python -c 'import torch, transformers; "), find("inspect 70B-shaped folder with config.json (rep")
    if first and bare and cls:
        check("70B-shaped HF folder, first run <= import of torch + transformers + 1 s",
              f"{first[0]:.2f} s: +{first[0] - bare[0]:.2f} s over `import torch, transformers`, "
              f"+{first[0] - cls[0]:.2f} s over that + the model class's modules", first[0] - cls[0] <= 1.0)
    if rep:
        check("70B-shaped HF folder, repeated <= 0.3 s", f"{rep[0]:.2f} s", rep[0] <= 0.3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--largest-mib", type=int, default=128)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--label", default="run")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--cold", action="store_true", help="also time diff with the inputs evicted first")
    ap.add_argument("--baseline", help="a PYTHONPATH holding an older statecli/ to time side by side (before)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="statecli-vbench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, float, float, str, str]] = []
    got: dict[str, tuple[float, float]] = {}  # label -> (median s, peak MiB): the targets table reads these
    base_env = {**os.environ, "PYTHONPATH": args.baseline} if args.baseline else None

    def add(label: str, cmd: list[str], moved: float = 0.0, cold: list[Path] | None = None,
            env: dict[str, str] | None = None) -> float:
        envs: list[dict[str, str] | None] = [env]
        if base_env is not None and cmd[0] == STATECLI:
            envs.append({**base_env, **(env or {})})
        res = run(cmd, args.repeat, cold, envs)
        secs, rss = res[0]
        before = f"{res[1][0]:.3f} s, {res[1][1]:.0f} MiB" if len(res) > 1 else "-"
        rows.append((label, secs, rss, f"{moved / secs / (1 << 30):.2f} GiB/s" if moved else "-", before))
        got[label] = (secs, rss)
        print(rows[-1], file=sys.stderr)
        return secs

    sa, sb = work / "small_a.safetensors", work / "small_b.safetensors"
    n_small = generate(sa, 10 << 20, 2 << 20, 0, False)
    generate(sb, 10 << 20, 2 << 20, 1000, True)
    ta, tb = work / "tiny_a.safetensors", work / "tiny_b.safetensors"
    generate(ta, 0, 0, 0, False, tiny=900)
    generate(tb, 0, 0, 1000, True, tiny=900)
    add("python -c 'import numpy'", py("import numpy"))
    add("python -c 'import torch'", py("import torch"))
    add("statecli --version", [STATECLI, "--version"])
    add("inspect -f json (10 MiB)", [STATECLI, "inspect", str(sa), "-f", "json"])
    add("size -f json (10 MiB)", [STATECLI, "size", str(sa), "-f", "json"])
    add("diff A B (10 MiB, values differ)", [STATECLI, "diff", str(sa), str(sb), "-q", "-f", "json"], 2 * n_small)
    add("inspect --stats (10 MiB)", [STATECLI, "inspect", str(sa), "--stats", "-q", "-f", "json"], n_small)
    add("check --no-nan --no-inf (10 MiB)", [STATECLI, "check", str(sa), "--no-nan", "--no-inf", "-f", "json"], n_small)
    add("cast --dtype half (10 MiB)", [STATECLI, "cast", str(sa), "--dtype", "half", "-o",
                                        str(work / "small_half.safetensors")], n_small)
    add("convert -o .pt (10 MiB)", [STATECLI, "convert", str(sa), "-o", str(work / "small.pt")], n_small)
    add("strip --pattern (10 MiB .pt)", [STATECLI, "strip", str(work / "small.pt"), "--pattern", r"layers\.1\.", "-o",
                                         str(work / "small_stripped.pt")], n_small)
    add("diff A B (900 tiny tensors)", [STATECLI, "diff", str(ta), str(tb), "-q", "-f", "json"])
    if not args.skip_big:
        a, b = work / "a.safetensors", work / "b.safetensors"
        total = int(args.size_gib * (1 << 30))
        n = generate(a, total, args.largest_mib << 20, 0, False)
        generate(b, total, args.largest_mib << 20, 1000, True)
        gib = f"{n / (1 << 30):.2f} GiB"
        add(f"plain read of A and B ({gib} each, warm)", py(PLAIN_READ, str(a), str(b)), 2 * n)
        add(f"diff A B ({gib} each, warm)", [STATECLI, "diff", str(a), str(b), "-q", "-f", "json"], 2 * n)
        if args.cold:
            add("plain read of A and B (cold)", py(PLAIN_READ, str(a), str(b)), 2 * n, cold=[a, b])
            add("diff A B (cold)", [STATECLI, "diff", str(a), str(b), "-q", "-f", "json"], 2 * n, cold=[a, b])
        add(f"plain torch loop: min/max/mean/std/nan/inf/zeros ({gib})", py(TORCH_STATS, str(a)), n)
        add(f"inspect --stats ({gib})", [STATECLI, "inspect", str(a), "--stats", "-q", "-f", "json"], n)
        add(f"plain read + write + fsync ({gib})", py(PLAIN_COPY, str(a), str(work / "copy.bin")), n)
        add(f"cast --dtype half ({gib})", [STATECLI, "cast", str(a), "--dtype", "half", "-o",
                                          str(work / "half.safetensors")], n)
        add(f"convert -o .pt ({gib})", [STATECLI, "convert", str(a), "-o", str(work / "a.pt")], n)
        add(f"inspect -f json ({gib} .pt)", [STATECLI, "inspect", str(work / "a.pt"), "-f", "json"])
        add(f"size -f json ({gib} .pt)", [STATECLI, "size", str(work / "a.pt"), "-f", "json"])
        add(f"torch.load(mmap=True) + shapes ({gib} .pt)", py(TORCH_SHAPES, str(work / "a.pt")))
        for p in (a, b, work / "copy.bin", work / "half.safetensors", work / "a.pt"):
            p.unlink(missing_ok=True)
    if not args.skip_hf:
        d = hf_folder(work, 80)
        if d is not None:
            cache = work / "xdg-cache"
            env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
            add("inspect 70B-shaped folder --no-hf-config", [STATECLI, "inspect", str(d), "-f", "json",
                                                              "--no-hf-config"], env=env)
            add("python -c 'import torch, transformers'", py("import torch, transformers"))
            add("python -c 'import torch, transformers; transformers.LlamaForCausalLM'",
                py("import torch, transformers; transformers.LlamaForCausalLM"))
            firsts = []
            for i in range(args.repeat):  # each first run gets an empty cache of its own
                fresh = {**os.environ, "XDG_CACHE_HOME": str(work / f"xdg-first-{i}")}
                firsts.append(_once([STATECLI, "inspect", str(d), "-f", "json"], None, fresh))
            label = "inspect 70B-shaped folder with config.json (first run, empty cache)"
            got[label] = (statistics.median(t for t, _ in firsts), max(r for _, r in firsts))
            rows.append((label, *got[label], "-", "-"))
            shutil.rmtree(cache, ignore_errors=True)
            subprocess.run([STATECLI, "inspect", str(d), "-f", "json"], capture_output=True, env=env)
            add("inspect 70B-shaped folder with config.json (repeated)", [STATECLI, "inspect", str(d), "-f", "json"],
                env=env)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, load average at the end {load}"
    lines = [f"### {args.label} ({time.strftime('%Y-%m-%d %H:%M')}, {machine}; median of {args.repeat})", "",
             "| run | median s | peak RSS MiB | throughput | before (--baseline) |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {secs:.3f} | {rss:.0f} | {thr} | {before} |" for label, secs, rss, thr, before in rows]
    lines += ["", *targets(got)]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(HERE / "values_results.md", "a", encoding="utf-8") as f:
        f.write("\n" + text)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
