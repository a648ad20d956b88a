"""Benchmark `statecli inspect` and CLI startup against the design's performance targets.

Targets (from the design):

(a) `statecli inspect` on a safetensors or .pt file of any size is O(tensors), reads no tensor
    bytes and does not import torch; on a 4 GiB file it runs within 2x of `python -c "import statecli"`.
(b) `statecli --help` runs well under 0.5 s.

What it does:

1. Generates, in ``--workdir`` (default: a fresh temp dir under /tmp, deleted at the end unless
   ``--keep``), four checkpoints and reports how long each took to write:
   - ``llama.safetensors`` / ``llama.pt``: a LLaMA-like state dict of ~``--size-gib`` GiB
     (default 4; hidden 2304, MLP 6144, vocab 32000, bfloat16 weights plus a float32
     ``rotary_emb.inv_freq`` buffer per layer: 32 layers, 323 tensors at 4 GiB). The safetensors
     file is written by hand, tensor by tensor, from a 32 MiB block of N(0, 0.02) values, so the
     generator never holds the file in memory; the .pt file is built with ``torch.empty`` + fill
     and ``torch.save`` (this needs the whole state dict, ~4 GiB, in RAM). Generation runs in a child
     process (``--generate-only``), so the measuring process stays small and never imports torch.
   - ``many.safetensors`` / ``many.pt``: ``--many`` (default 5,000) small tensors, a CNN-like
     layout (conv weights + BatchNorm affine params and running stats).
2. Times, as fresh subprocesses (one warm-up, then the median of ``--runs`` >= 5 runs), with the
   peak RSS of every run from GNU ``/usr/bin/time -f %M`` (fallback: ``os.wait4``). The timed
   interpreters cache bytecode in ``WORKDIR/pycache`` (``--no-bytecode-cache`` keeps the
   environment's ``PYTHONDONTWRITEBYTECODE`` etc. as they are):
   - ``python -c "import statecli"``, ``python -c "import statecli.cli"``, ``statecli --help``,
     and ``python -c "import torch"`` for context;
   - ``statecli inspect FILE --format json`` (stdout to /dev/null) for every file, and
     ``statecli inspect FILE`` (table, stdout to /dev/null, COLUMNS=120) for the many-tensor files;
   - for comparison: ``torch.load(FILE, mmap=True, weights_only=True)`` on the .pt files and
     ``safetensors.safe_open(FILE, framework=...).keys()`` on the safetensors files, with
     framework "pt" (imports torch) and "numpy" (does not).
3. Checks, in a fresh interpreter per file, that running the CLI entry ``statecli.cli:main`` for
   ``inspect FILE --format json`` leaves ``torch`` out of ``sys.modules``, and how many bytes the
   process read through read(2) while the command ran (``rchar`` from /proc/self/io; lazy imports
   of statecli's own modules count too). It also checks the JSON's tensor count and lists the
   top-level imports by cumulative time (``python -X importtime``).
4. Prints a Markdown report (medians and minimums in ms, max peak RSS in MiB, ratios against
   ``import statecli`` and ``import statecli.cli``, PASS/FAIL per target) and writes it to
   ``benchmarks/results.md`` (or ``--results``).

Page cache: dropping the page cache needs root, so the main numbers are WARM runs (the files
were just written and sit in the page cache). With ``--cold`` (default on) the file-reading
commands are also timed after evicting just the checkpoint file from the cache with
``posix_fadvise(POSIX_FADV_DONTNEED)`` before each run (unprivileged, best effort; Python and
the libraries stay cached).

Run it with the project's virtual environment (the ``statecli`` console script is looked up
next to the interpreter)::

    .venv/bin/python benchmarks/bench_inspect.py                  # full run, ~4 GiB files
    .venv/bin/python benchmarks/bench_inspect.py --size-gib 0.25 --runs 5 --no-cold   # quick
    .venv/bin/python benchmarks/bench_inspect.py --workdir /tmp/sbench --keep         # keep files
    .venv/bin/python benchmarks/bench_inspect.py --workdir /tmp/sbench --keep --reuse # reuse them

Disk: about 2 x ``--size-gib`` GiB (plus ~60 MiB) in the work dir.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIB = 1024**3
MIB = 1024**2

# LLaMA-like dimensions (head_dim 128, 18 heads); the layer count is derived from --size-gib.
HIDDEN = 2304
INTERMEDIATE = 6144
VOCAB = 32000
HEAD_DIM = 128
FILL_BLOCK_BYTES = 32 * MIB

ST_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32", "int64": "I64"}
ITEMSIZE = {"bfloat16": 2, "float16": 2, "float32": 4, "int64": 8}


# --------------------------------------------------------------------------------------------
# Layouts and generation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One tensor of a generated checkpoint."""

    name: str
    dtype: str  # key of ITEMSIZE
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE[self.dtype]


def llama_layout(size_gib: float) -> list[Spec]:
    """A LLaMA-style decoder state dict of at least ``size_gib`` GiB (bfloat16, inv_freq in float32)."""
    h, i = HIDDEN, INTERMEDIATE

    def layer(n: int) -> list[Spec]:
        p = f"model.layers.{n}."
        return [
            Spec(p + "self_attn.q_proj.weight", "bfloat16", (h, h)),
            Spec(p + "self_attn.k_proj.weight", "bfloat16", (h, h)),
            Spec(p + "self_attn.v_proj.weight", "bfloat16", (h, h)),
            Spec(p + "self_attn.o_proj.weight", "bfloat16", (h, h)),
            Spec(p + "self_attn.rotary_emb.inv_freq", "float32", (HEAD_DIM // 2,)),
            Spec(p + "mlp.gate_proj.weight", "bfloat16", (i, h)),
            Spec(p + "mlp.up_proj.weight", "bfloat16", (i, h)),
            Spec(p + "mlp.down_proj.weight", "bfloat16", (h, i)),
            Spec(p + "input_layernorm.weight", "bfloat16", (h,)),
            Spec(p + "post_attention_layernorm.weight", "bfloat16", (h,)),
        ]

    head = [Spec("model.embed_tokens.weight", "bfloat16", (VOCAB, h))]
    tail = [Spec("model.norm.weight", "bfloat16", (h,)), Spec("lm_head.weight", "bfloat16", (VOCAB, h))]
    fixed = sum(s.nbytes for s in head + tail)
    per_layer = sum(s.nbytes for s in layer(0))
    n_layers = max(1, math.ceil((size_gib * GIB - fixed) / per_layer))
    specs = list(head)
    for n in range(n_layers):
        specs.extend(layer(n))
    return specs + tail


def many_layout(count: int) -> list[Spec]:
    """``count`` small tensors: conv + BatchNorm blocks (6 tensors each), then a classifier."""
    c = 32
    specs: list[Spec] = []
    n = 0
    while len(specs) + 6 <= count - 2:
        p = f"features.{n}."
        specs += [
            Spec(p + "conv.weight", "float32", (c, c, 3, 3)),
            Spec(p + "bn.weight", "float32", (c,)),
            Spec(p + "bn.bias", "float32", (c,)),
            Spec(p + "bn.running_mean", "float32", (c,)),
            Spec(p + "bn.running_var", "float32", (c,)),
            Spec(p + "bn.num_batches_tracked", "int64", ()),
        ]
        n += 1
    specs += [Spec("classifier.weight", "float32", (10, c)), Spec("classifier.bias", "float32", (10,))]
    k = 0
    while len(specs) < count:
        specs.append(Spec(f"heads.{k}.weight", "float32", (10, c)))
        k += 1
    return specs


def _fill_block() -> bytes:
    """FILL_BLOCK_BYTES of bfloat16 N(0, 0.02) values (reused cyclically as tensor contents)."""
    import torch

    g = torch.Generator().manual_seed(0)
    t = (torch.randn(FILL_BLOCK_BYTES // 2, generator=g) * 0.02).to(torch.bfloat16)
    return t.view(torch.uint8).numpy().tobytes()


def _special_values(spec: Spec) -> bytes | None:
    """Realistic contents for the few tensors whose values are not weights (inv_freq, counters)."""
    if spec.name.endswith("inv_freq"):
        vals = [1.0 / (10000.0 ** (2 * k / HEAD_DIM)) for k in range(HEAD_DIM // 2)]
        return struct.pack(f"<{len(vals)}f", *vals)
    if spec.name.endswith("num_batches_tracked"):
        return struct.pack("<q", 1000)
    if spec.name.endswith(("layernorm.weight", "norm.weight", "running_var", "bn.weight")):
        one = {"bfloat16": b"\x80\x3f", "float16": b"\x00\x3c", "float32": struct.pack("<f", 1.0)}[spec.dtype]
        return one * spec.numel
    return None


def _spans(block_len: int, nbytes: int, start: int) -> Iterator[tuple[int, int]]:
    """(offset, length) pieces covering ``nbytes`` of a block read cyclically from ``start`` (8-aligned)."""
    pos = start % block_len
    pos -= pos % 8
    left = nbytes
    while left:
        take = min(left, block_len - pos)
        yield pos, take
        left -= take
        pos = 0


def write_safetensors(path: Path, specs: Sequence[Spec], block: bytes) -> None:
    """Write a safetensors file tensor by tensor (header first, then the data, streaming)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "generator": "statecli benchmarks"}}
    offset = 0
    for s in specs:
        header[s.name] = {"dtype": ST_DTYPES[s.dtype], "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for n, s in enumerate(specs):
            special = _special_values(s)
            if special is not None:
                f.write(special)
            else:
                view = memoryview(block)
                for off, k in _spans(len(block), s.nbytes, n * 4099 * 8):
                    f.write(view[off:off + k])
        f.flush()
        os.fsync(f.fileno())


def write_torch(path: Path, specs: Sequence[Spec], block: bytes) -> None:
    """torch.save a dict of tensors made with torch.empty + fill (holds the whole dict in RAM)."""
    import torch

    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "int64": torch.int64}
    src = torch.frombuffer(bytearray(block), dtype=torch.uint8)
    sd: dict[str, Any] = {}
    for n, s in enumerate(specs):
        t = torch.empty(s.shape, dtype=dtypes[s.dtype])
        flat = t.view(-1).view(torch.uint8) if s.shape else t.view(1).view(torch.uint8)
        special = _special_values(s)
        if special is not None:
            flat.copy_(torch.frombuffer(bytearray(special), dtype=torch.uint8))
        else:
            pos = 0
            for off, k in _spans(len(block), s.nbytes, n * 4099 * 8):
                flat[pos:pos + k].copy_(src[off:off + k])
                pos += k
        sd[s.name] = t
    torch.save(sd, path)
    del sd, src
    gc.collect()
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@dataclass
class Checkpoint:
    label: str
    path: Path
    tensors: int
    gen_s: float | None  # None: reused from an earlier run

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def generate(workdir: Path, size_gib: float, many: int, reuse: bool) -> list[Checkpoint]:
    big, small = llama_layout(size_gib), many_layout(many)
    jobs = [
        ("llama.safetensors", big, write_safetensors),
        ("llama.pt", big, write_torch),
        ("many.safetensors", small, write_safetensors),
        ("many.pt", small, write_torch),
    ]
    block: bytes | None = None
    out: list[Checkpoint] = []
    for name, specs, writer in jobs:
        path = workdir / name
        stamp = workdir / (name + ".layout")
        layout_id = f"{len(specs)}:{sum(s.nbytes for s in specs)}"
        if reuse and path.exists() and stamp.exists() and stamp.read_text() == layout_id:
            print(f"  reusing {path} ({path.stat().st_size / GIB:.2f} GiB)", flush=True)
            out.append(Checkpoint(name, path, len(specs), None))
            continue
        if block is None:
            block = _fill_block()
        print(f"  writing {path} ({len(specs)} tensors, {sum(s.nbytes for s in specs) / GIB:.2f} GiB of data) ...",
              end="", flush=True)
        t0 = time.perf_counter()
        writer(path, specs, block)
        dt = time.perf_counter() - t0
        print(f" {dt:.1f} s", flush=True)
        stamp.write_text(layout_id)
        out.append(Checkpoint(name, path, len(specs), dt))
    return out


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str  # what was run, as it reads in the table
    file: str  # checkpoint label or ""
    walls: list[float] = field(default_factory=list)  # seconds
    rss: list[int] = field(default_factory=list)  # bytes
    failures: list[str] = field(default_factory=list)
    group: str = "warm"

    @property
    def median_ms(self) -> float:
        return statistics.median(self.walls) * 1000 if self.walls else float("nan")

    @property
    def min_ms(self) -> float:
        return min(self.walls) * 1000 if self.walls else float("nan")

    @property
    def rss_mib(self) -> float:
        return max(self.rss) / MIB if self.rss else float("nan")


def evict(path: Path) -> None:
    """Best-effort: drop ``path``'s pages from the page cache (works unprivileged for clean pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


TIME_BIN = shutil.which("time", path="/usr/bin:/bin")


def run_once(argv: Sequence[str], env: dict[str, str]) -> tuple[float, int, int, str]:
    """Run ``argv`` with stdout to /dev/null; return (wall s, peak RSS bytes, exit code, stderr tail).

    Peak RSS comes from GNU time (``/usr/bin/time -f %M``), whose small process forks the command: a
    child forked straight from this (bigger) Python process inherits its RSS high-water mark into
    ``ru_maxrss``. Without GNU time it falls back to ``os.wait4`` (RSS then has this process's RSS as a
    floor). The wall time includes time's fork/exec (about 1 ms), the same for every command.
    """
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r", suffix=".time") as tfile:
        full = [TIME_BIN, "-f", "%M", "-o", tfile.name, *argv] if TIME_BIN else list(argv)
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        rss = usage.ru_maxrss * 1024
        if TIME_BIN:
            lines = tfile.read().split()
            rss = int(lines[-1]) * 1024 if lines and lines[-1].isdigit() else -1
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
    return wall, rss, proc.returncode, tail


def bench(name: str, file: str, argv: Sequence[str], env: dict[str, str], runs: int, warmup: int,
          cold_path: Path | None = None) -> Result:
    res = Result(name, file, group="cold" if cold_path else "warm")
    for n in range(warmup + runs):
        if cold_path is not None:
            evict(cold_path)
        wall, rss, rc, tail = run_once(argv, env)
        if rc != 0:
            res.failures.append(f"exit {rc}: {tail.strip().splitlines()[-1] if tail.strip() else ''}")
        if n >= warmup:
            res.walls.append(wall)
            res.rss.append(rss)
    flag = f"  FAILED {res.failures[0]}" if res.failures else ""
    print(f"  {res.group:4} {name:<52} {file:<18} median {res.median_ms:8.1f} ms  min {res.min_ms:8.1f} ms  "
          f"RSS {res.rss_mib:7.1f} MiB{flag}", flush=True)
    return res


CHECK_SCRIPT = r"""
import json, sys
path, out = sys.argv[1], sys.argv[2]
def rchar():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return -1
from statecli.cli import main
before_mods = set(sys.modules)
before = rchar()
sys.argv = ["statecli", "inspect", path, "--format", "json"]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
after = rchar()
heavy = sorted(m for m in ("torch", "numpy", "safetensors", "pandas") if m in sys.modules)
new = sorted(m for m in set(sys.modules) - before_mods if "." not in m)
with open(out, "w") as f:
    json.dump({"exit": code, "torch": "torch" in sys.modules, "heavy": heavy, "read_bytes": after - before,
               "new_top_level_modules": new}, f)
"""


@dataclass
class Check:
    file: str
    size: int
    expected: int
    reported: int | None
    torch_imported: bool | None
    heavy: list[str]
    read_bytes: int | None
    exit_code: int | None
    note: str = ""


def check_inspect(ck: Checkpoint, statecli: str, python: str, env: dict[str, str], tmp: Path) -> Check:
    out = tmp / f"check-{ck.label}.json"
    proc = subprocess.run([python, "-c", CHECK_SCRIPT, str(ck.path), str(out)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    info: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    note = "" if proc.returncode == 0 else f"check script exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    reported: int | None = None
    js = subprocess.run([statecli, "inspect", str(ck.path), "--format", "json"], env=env, capture_output=True, text=True)
    try:
        reported = int(json.loads(js.stdout)["summary"]["total"]["tensors"])
    except (ValueError, KeyError, TypeError) as exc:
        note += f" json not parsed ({type(exc).__name__}; exit {js.returncode}: {js.stderr.strip()[-200:]})"
    return Check(ck.label, ck.size, ck.tensors, reported, info.get("torch"), info.get("heavy", []),
                 info.get("read_bytes"), info.get("exit"), note.strip())


def import_breakdown(python: str, path: Path, env: dict[str, str], top: int = 10) -> list[tuple[str, float]]:
    """Top-level modules by cumulative import time (ms) for ``inspect FILE --format json`` (-X importtime)."""
    proc = subprocess.run([python, "-X", "importtime", "-m", "statecli", "inspect", str(path), "--format", "json"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows: list[tuple[str, float]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum, name = line.split("|", 2)
        if name.startswith("  "):  # nested: leading spaces beyond the one after '|'
            continue
        rows.append((name.strip(), int(cum) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:top]


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt_size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def render(results: list[Result], checks: list[Check], cks: list[Checkpoint], args: argparse.Namespace,
           env_line: str, imports: list[tuple[str, float]]) -> str:
    base = next(r for r in results if r.name == 'python -c "import statecli"')
    base_cli = next(r for r in results if r.name == 'python -c "import statecli.cli"')
    sizes = {c.label: c for c in cks}
    lines = [
        "## `statecli` performance",
        "",
        env_line,
        "",
        f"Median and minimum of {args.runs} runs after {args.warmup} warm-up run(s), each a fresh process; peak RSS is "
        "the largest `ru_maxrss` of those runs. **Warm page cache** (the checkpoints were just written; dropping the "
        "cache needs root) unless the row says *cold*, meaning the checkpoint file (only) was evicted with "
        "`posix_fadvise(DONTNEED)` before each run.",
        "",
        "| command | file | median ms | min ms | peak RSS MiB | × `import statecli` | × `import statecli.cli` |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        file = f"{r.file} ({fmt_size(sizes[r.file].size)}, {sizes[r.file].tensors} tensors)" if r.file else ""
        name = r.name + (" *(cold)*" if r.group == "cold" else "")
        fail = " **FAILED**" if r.failures else ""
        lines.append(f"| `{name}`{fail} | {file} | {r.median_ms:.0f} | {r.min_ms:.0f} | {r.rss_mib:.0f} | "
                     f"{r.median_ms / base.median_ms:.2f} | {r.median_ms / base_cli.median_ms:.2f} |")
    lines += [
        "",
        "### `inspect` checks (fresh interpreter running `statecli.cli:main`, `inspect FILE --format json`)",
        "",
        "| file | size | tensors (expected / reported) | torch imported | other heavy modules | bytes read via read(2) "
        "during the command | exit |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    for c in checks:
        rb = fmt_size(c.read_bytes) if c.read_bytes is not None and c.read_bytes >= 0 else "?"
        lines.append(f"| {c.file} | {fmt_size(c.size)} | {c.expected} / {c.reported} | "
                     f"{'**yes**' if c.torch_imported else 'no' if c.torch_imported is False else '?'} | "
                     f"{', '.join(c.heavy) or '-'} | {rb} | {c.exit_code} |" + (f" {c.note}" if c.note else ""))
    if imports:
        lines += ["", "### Where `inspect llama.safetensors --format json` spends its imports (`-X importtime`, "
                  "top-level modules, cumulative; one run)", "", "| module | ms |", "|---|---:|"]
        lines += [f"| {name} | {ms:.0f} |" for name, ms in imports]
    lines += ["", "### Targets", ""]
    lines += targets(results, checks, base, base_cli, cks)
    gen = [c for c in cks if c.gen_s is not None]
    if gen:
        lines += ["", "### Generation (not part of the targets)", "", "| file | size | tensors | write s |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {c.label} | {fmt_size(c.size)} | {c.tensors} | {c.gen_s:.1f} |" for c in gen]
    return "\n".join(lines) + "\n"


def targets(results: list[Result], checks: list[Check], base: Result, base_cli: Result,
            cks: list[Checkpoint]) -> list[str]:
    out: list[str] = []
    big = {c.label for c in cks if c.label.startswith("llama")}
    for r in results:
        if r.name.startswith("statecli inspect") and r.file in big and r.group == "warm" and "--format json" in r.name:
            ratio = r.median_ms / base.median_ms
            ok = ratio <= 2.0 and not r.failures
            out.append(f"- (a) `inspect {r.file} --format json`: {r.median_ms:.0f} ms = {ratio:.2f}× "
                       f"`import statecli` ({base.median_ms:.0f} ms), target ≤ 2×: **{'PASS' if ok else 'FAIL'}** "
                       f"({r.median_ms / base_cli.median_ms:.2f}× `import statecli.cli`, {base_cli.median_ms:.0f} ms)")
    for c in checks:
        ok = c.torch_imported is False and c.exit_code == 0 and c.reported == c.expected
        out.append(f"- (a) `inspect {c.file}`: torch not imported, exit 0, tensor count right: "
                   f"**{'PASS' if ok else 'FAIL'}**")
    small = [r for r in results if r.file.startswith("many") and r.group == "warm" and r.name.startswith("statecli inspect")]
    for r in small:
        out.append(f"- (a) O(tensors): `{r.name}` on {r.file}: {r.median_ms:.0f} ms ({r.median_ms / base.median_ms:.2f}× "
                   "`import statecli`)")
    helps = [r for r in results if r.name == "statecli --help"]
    for r in helps:
        ok = r.median_ms < 500 and not r.failures
        out.append(f"- (b) `statecli --help`: {r.median_ms:.0f} ms, target < 500 ms: **{'PASS' if ok else 'FAIL'}**")
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Metadata at scale: 50,000-tensor files of every kind (issue 13: inspect/size/scan <= 1 s)
# --------------------------------------------------------------------------------------------

SCALE_BEGIN, SCALE_END = "<!-- scale rows: begin -->", "<!-- scale rows: end -->"
SCALE_SHARDS = 5


def _generate_scale(workdir: Path, n: int) -> int:
    """--generate-scale: the four scale checkpoints (this child imports torch). Names as a real model
    names them (model.layers.<i>.<module>.weight), tiny tensors: the cost is all metadata."""
    import torch
    from safetensors.torch import save_file

    names = [f"model.layers.{i // 10}.mod{i % 10}.weight" for i in range(n)]
    stamp = workdir / "scale.layout"
    if stamp.exists() and stamp.read_text() == str(n):
        print(f"  reusing the {n}-tensor files", flush=True)
        return 0
    t0 = time.perf_counter()
    torch.save({k: torch.zeros(1) for k in names}, workdir / "scale.pt")
    torch.save({k: torch.zeros(1) for k in names}, workdir / "scale_legacy.pt", _use_new_zipfile_serialization=False)
    save_file({k: torch.zeros(4, 4) for k in names}, str(workdir / "scale.safetensors"))
    folder = workdir / "scale_sharded"
    folder.mkdir(exist_ok=True)
    per = math.ceil(n / SCALE_SHARDS)
    wmap: dict[str, str] = {}
    for s in range(SCALE_SHARDS):
        shard = f"model-{s + 1:05d}-of-{SCALE_SHARDS:05d}.safetensors"
        part = names[s * per:(s + 1) * per]
        save_file({k: torch.zeros(4, 4) for k in part}, str(folder / shard))
        wmap |= dict.fromkeys(part, shard)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": n * 64}, "weight_map": wmap}))
    stamp.write_text(str(n))
    print(f"  wrote the {n}-tensor files in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


def scale_section(python: str, statecli: str, workdir: Path, env: dict[str, str], args: argparse.Namespace) -> str:
    """Time inspect (JSON and table), size and scan on each scale file; the Markdown section."""
    n = args.scale
    print(f"generating the {n}-tensor files:", flush=True)
    subprocess.run([python, str(Path(__file__).resolve()), "--generate-scale", "--workdir", str(workdir),
                    "--scale", str(n)], check=True)
    files = [("zip .pt", workdir / "scale.pt"), ("legacy .pt", workdir / "scale_legacy.pt"),
             ("safetensors", workdir / "scale.safetensors"), (f"sharded ({SCALE_SHARDS} shards)", workdir / "scale_sharded")]
    cmds = [("inspect -f json", ["inspect", "{f}", "--format", "json"]), ("inspect (table)", ["inspect", "{f}"]),
            ("inspect --tree", ["inspect", "{f}", "--tree"]),
            ("size", ["size", "{f}"]), ("size -f json", ["size", "{f}", "--format", "json"]),
            ("scan -f json", ["scan", "{f}", "--format", "json"])]
    load_before = os.getloadavg()
    rows: list[tuple[str, str, Result]] = []
    print("timing:", flush=True)
    for label, path in files:
        for name, argv in cmds:
            full = [statecli] + [a.format(f=path) for a in argv]
            rows.append((label, name, bench(f"statecli {name}", label, full, env, args.scale_runs, 1)))
    load_after = os.getloadavg()
    out = [SCALE_BEGIN, f"## {n:,}-tensor files (metadata at scale)", "",
           f"Median and minimum of {args.scale_runs} fresh processes after 1 warm-up (warm page cache), peak RSS the "
           f"largest of those runs; stdout to /dev/null, COLUMNS=120. Load average (1/5/15 min) "
           f"{' / '.join(f'{x:.2f}' for x in load_before)} before, {' / '.join(f'{x:.2f}' for x in load_after)} after "
           f"({os.cpu_count()} CPUs, shared with other work: medians). Target (issue 13): <= 1 s.", "",
           "| file | command | median ms | min ms | peak RSS MiB | <= 1 s |", "|---|---|---:|---:|---:|---|"]
    for label, name, r in rows:
        ok = "FAILED" if r.failures else ("yes" if r.median_ms <= 1000 else "no")
        out.append(f"| {label} | `statecli {name}` | {r.median_ms:.0f} | {r.min_ms:.0f} | {r.rss_mib:.0f} | {ok} |")
    out.append(SCALE_END)
    return "\n".join(out) + "\n"


def _write_section(results: Path, section: str) -> None:
    """Replace the scale section of `results` (or append it), keeping the rest of the report."""
    text = results.read_text() if results.exists() else ""
    if SCALE_BEGIN in text and SCALE_END in text:
        head, _, rest = text.partition(SCALE_BEGIN)
        _, _, tail = rest.partition(SCALE_END)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    results.write_text(text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--workdir", type=Path, default=None, help="where to write the checkpoints (default: temp dir in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (default: delete it at the end)")
    p.add_argument("--reuse", action="store_true", help="reuse checkpoints already in --workdir with the same layout")
    p.add_argument("--size-gib", type=float, default=4.0, help="size of the LLaMA-like checkpoints (default 4)")
    p.add_argument("--many", type=int, default=5000, help="tensor count of the many-tensor checkpoints (default 5000)")
    p.add_argument("--runs", type=int, default=7, help="timed runs per command, median reported (>= 5; default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones (default 1)")
    p.add_argument("--cold", action=argparse.BooleanOptionalAction, default=True,
                   help="also time file-reading commands after evicting the file with posix_fadvise (default on)")
    p.add_argument("--bytecode-cache", action=argparse.BooleanOptionalAction, default=True,
                   help="let the timed interpreters cache bytecode (PYTHONPYCACHEPREFIX in the work dir, "
                        "PYTHONDONTWRITEBYTECODE unset), as an installed package would have (default on)")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results.md",
                   help="where to write the Markdown report (default benchmarks/results.md)")
    p.add_argument("--scale", type=int, default=50_000,
                   help="tensor count of the metadata-scale files (zip .pt, legacy .pt, safetensors, sharded "
                        "folder; default 50000, 0 skips them)")
    p.add_argument("--scale-runs", type=int, default=5, help="timed runs per scale command (>= 3; default 5)")
    p.add_argument("--scale-only", action="store_true",
                   help="only the scale rows: their section of --results is replaced, the rest kept")
    p.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--generate-scale", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs < 5:
        p.error("--runs must be >= 5")
    if args.scale_runs < 3:
        p.error("--scale-runs must be >= 3")
    if args.scale_only and args.scale <= 0:
        p.error("--scale-only needs --scale > 0")
    if (args.generate_only or args.generate_scale) and args.workdir is None:
        p.error("--generate-only needs --workdir")
    return args


def _generate_child(args: argparse.Namespace) -> int:
    """--generate-only: write the checkpoints and a manifest (runs in its own process, which imports torch)."""
    cks = generate(args.workdir, args.size_gib, args.many, args.reuse)
    manifest = [{"label": c.label, "path": str(c.path), "tensors": c.tensors, "gen_s": c.gen_s} for c in cks]
    (args.workdir / "manifest.json").write_text(json.dumps(manifest))
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.generate_scale:
        return _generate_scale(args.workdir, args.scale)
    if args.generate_only:
        return _generate_child(args)
    python = sys.executable
    statecli = str(Path(python).parent / "statecli")
    if not os.access(statecli, os.X_OK):
        statecli = shutil.which("statecli") or sys.exit("statecli console script not found next to the interpreter")

    created = args.workdir is None
    workdir: Path = (args.workdir or Path(tempfile.mkdtemp(prefix="statecli-bench-", dir="/tmp"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, COLUMNS="120")
    env.pop("STATECLI_DEBUG", None)
    if args.bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    print(f"work dir: {workdir}", flush=True)
    try:
        if args.scale_only:
            section = scale_section(python, statecli, workdir, env, args)
            print()
            print(section)
            _write_section(args.results, section)
            print(f"wrote {args.results}")
            return 0
        # Generation runs in a child so that this process stays small (it forks every timed command).
        print("generating checkpoints:", flush=True)
        gen = [python, str(Path(__file__).resolve()), "--generate-only", "--workdir", str(workdir),
               "--size-gib", str(args.size_gib), "--many", str(args.many)] + (["--reuse"] if args.reuse else [])
        subprocess.run(gen, check=True)
        cks = [Checkpoint(m["label"], Path(m["path"]), m["tensors"], m["gen_s"])
               for m in json.loads((workdir / "manifest.json").read_text())]
        by = {c.label: c for c in cks}

        from statecli import __version__

        env_line = (f"statecli {__version__}, Python {platform.python_version()}, torch {_version('torch')}, "
                    f"safetensors {_version('safetensors')}, typer {_version('typer')}, rich {_version('rich')}, "
                    f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
                    f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.0f} GiB RAM; "
                    f"bytecode cache {'on' if args.bytecode_cache else 'as in the environment'}; "
                    f"peak RSS via {'GNU time' if TIME_BIN else 'os.wait4 (this process is the floor)'}.")

        r, w = args.runs, args.warmup
        results: list[Result] = []
        print("timing:", flush=True)
        results.append(bench('python -c "import statecli"', "", [python, "-c", "import statecli"], env, r, w))
        results.append(bench('python -c "import statecli.cli"', "", [python, "-c", "import statecli.cli"], env, r, w))
        results.append(bench("statecli --help", "", [statecli, "--help"], env, r, w))
        results.append(bench('python -c "import torch"', "", [python, "-c", "import torch"], env, r, w))

        def file_cmds(ck: Checkpoint) -> list[tuple[str, list[str]]]:
            f = str(ck.path)
            cmds = [("statecli inspect FILE --format json", [statecli, "inspect", f, "--format", "json"])]
            if ck.label.startswith("many"):
                cmds.append(("statecli inspect FILE", [statecli, "inspect", f]))
            if ck.label.endswith(".pt"):
                cmds.append(("torch.load(FILE, mmap=True, weights_only=True)", [
                    python, "-c", "import sys, torch; torch.load(sys.argv[1], mmap=True, weights_only=True)", f]))
            else:
                for fw in ("pt", "numpy"):
                    cmds.append((f'safe_open(FILE, framework="{fw}").keys()', [
                        python, "-c", f"import sys; from safetensors import safe_open; "
                                      f"f = safe_open(sys.argv[1], framework='{fw}'); list(f.keys())", f]))
            return cmds

        order = ["llama.safetensors", "llama.pt", "many.safetensors", "many.pt"]
        for label in order:
            for name, cmd in file_cmds(by[label]):
                results.append(bench(name, label, cmd, env, r, w))
        if args.cold:
            for label in order:
                for name, cmd in file_cmds(by[label]):
                    if name == "statecli inspect FILE":
                        continue
                    results.append(bench(name, label, cmd, env, r, w, cold_path=by[label].path))

        print("checking inspect (torch import, bytes read, tensor count):", flush=True)
        checks = [check_inspect(by[label], statecli, python, env, workdir) for label in order]
        for c in checks:
            print(f"  {c.file:<18} torch imported: {c.torch_imported}  heavy: {c.heavy}  read: {c.read_bytes}  "
                  f"tensors {c.expected}/{c.reported}  exit {c.exit_code} {c.note}", flush=True)
        imports = import_breakdown(python, by["llama.safetensors"].path, env)

        report = render(results, checks, cks, args, env_line, imports)
        if args.scale > 0:
            report = report.rstrip("\n") + "\n\n" + scale_section(python, statecli, workdir, env, args)
        print()
        print(report)
        args.results.write_text(report)
        print(f"wrote {args.results}")
        failed = any(x.failures for x in results) or any(c.torch_imported or c.exit_code != 0 for c in checks)
        return 1 if failed else 0
    finally:
        if created and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")


if __name__ == "__main__":
    sys.exit(main())
