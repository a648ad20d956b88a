"""Benchmark `statecli inspect` of a 70B-shaped split GGUF against gguf-py's `gguf-dump --json`.

Target (issue 23): `inspect` of a 70B-shaped split GGUF (5 parts, ~700 tensors, a 150k vocabulary)
<= 0.3 s and <= 60 MiB, within 1.2x of `gguf_dump.py --json` doing less (it maps whole files, reads one
part per run and prints no summaries), measured side by side in one run.

The model is llama-3-70B's layout (80 blocks of 9 tensors, hidden 8192, FFN 28672, 8 KV heads, vocab
152,064, Q4_K_M-like types: Q4_K, Q6_K for attn_v/ffn_down/output, F32 norms) with a 152,064-token
vocabulary, scores, token types and 150,000 merges in part 1. Tensor data are holes: each part is
written header-first and then truncated to its full size (sparse files, a few MiB on disk for ~40 GB).

Timed, as fresh processes (one warm-up, the median of --runs):
- `statecli inspect PART1 --format json` (all 5 parts' headers: the split model as one checkpoint);
- `statecli inspect PART1` (the table view: summaries by type/block, metadata);
- `gguf-dump --json` of each part (the sum over the 5 parts: what the dump needs for the same model);
- `gguf-dump --json` of part 1 alone (the one holding the vocabulary);
- `python -c "import statecli.cli"`: the startup every statecli command pays, for scale (a loaded
  machine inflates every row alike).

    .venv/bin/python benchmarks/bench_gguf.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._timing import timed  # noqa: E402

HIDDEN, FFN, KV, VOCAB, BLOCKS, PARTS = 8192, 28672, 1024, 152_064, 80, 5
TYPES = {"F32": (0, 1, 4), "Q4_K": (12, 256, 144), "Q6_K": (14, 256, 210)}
U32, F32V, STR, ARR, I32, U16 = 4, 6, 8, 9, 5, 2


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", vtype) + payload


def _tensors() -> list[tuple[str, tuple[int, ...], str]]:
    """(name, torch-order shape, type) of llama-3-70B as llama.cpp's Q4_K_M stores it."""
    out = [("token_embd.weight", (VOCAB, HIDDEN), "Q4_K")]
    for i in range(BLOCKS):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", (HIDDEN,), "F32"), (b + "attn_q.weight", (HIDDEN, HIDDEN), "Q4_K"),
                (b + "attn_k.weight", (KV, HIDDEN), "Q4_K"), (b + "attn_v.weight", (KV, HIDDEN), "Q6_K"),
                (b + "attn_output.weight", (HIDDEN, HIDDEN), "Q4_K"), (b + "ffn_norm.weight", (HIDDEN,), "F32"),
                (b + "ffn_gate.weight", (FFN, HIDDEN), "Q4_K"), (b + "ffn_up.weight", (FFN, HIDDEN), "Q4_K"),
                (b + "ffn_down.weight", (HIDDEN, FFN), "Q6_K")]
    return out + [("output_norm.weight", (HIDDEN,), "F32"), ("output.weight", (VOCAB, HIDDEN), "Q6_K")]


def _vocab_kvs() -> list[bytes]:
    tokens = [f"tok{i}" for i in range(VOCAB)]
    merges = [f"t{i} o{i}" for i in range(150_000)]
    meta = [_kv("general.architecture", STR, _s("llama")), _kv("general.name", STR, _s("bench-70b")),
            _kv("general.file_type", U32, struct.pack("<I", 15)), _kv("llama.block_count", U32, struct.pack("<I", 80)),
            _kv("llama.embedding_length", U32, struct.pack("<I", HIDDEN)),
            _kv("tokenizer.ggml.model", STR, _s("gpt2")),
            _kv("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, VOCAB) + b"".join(_s(t) for t in tokens)),
            _kv("tokenizer.ggml.token_type", ARR, struct.pack("<IQ", I32, VOCAB) + struct.pack(f"<{VOCAB}i", *([1] * VOCAB))),
            _kv("tokenizer.ggml.merges", ARR, struct.pack("<IQ", STR, len(merges)) + b"".join(_s(m) for m in merges)),
            _kv("tokenizer.chat_template", STR, _s("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% endfor %}"))]
    return meta


def write_model(folder: Path) -> list[Path]:
    tensors = _tensors()
    per = -(-len(tensors) // PARTS)
    paths = []
    for p in range(PARTS):
        mine = tensors[p * per:(p + 1) * per]
        kvs = [_kv("split.no", U16, struct.pack("<H", p)), _kv("split.count", U16, struct.pack("<H", PARTS)),
               _kv("split.tensors.count", I32, struct.pack("<i", len(tensors)))]
        if p == 0:
            kvs = _vocab_kvs() + kvs
        infos, offset = [], 0
        for name, shape, tname in mine:
            tid, block, size = TYPES[tname]
            numel = 1
            for d in shape:
                numel *= d
            dims = tuple(reversed(shape))
            infos.append(_s(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, tid, offset))
            offset += -(-(numel // block * size) // 32) * 32
        head = b"GGUF" + struct.pack("<IQQ", 3, len(mine), len(kvs)) + b"".join(kvs) + b"".join(infos)
        head += b"\0" * (-len(head) % 32)
        path = folder / f"bench-70b-{p + 1:05d}-of-{PARTS:05d}.gguf"
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(len(head) + offset)  # the data: a hole
        paths.append(path)
    return paths


def _median(cmd: list[str], runs: int) -> tuple[float, float, float]:
    """(median seconds, largest peak RSS MiB, median CPU seconds): CPU seconds are what a shared,
    loaded machine inflates least (wall time waits for the other processes' turns)."""
    timed(cmd)
    results = [timed(cmd) for _ in range(runs)]
    return (statistics.median(r[0] for r in results), max(r[1] for r in results),
            statistics.median(r[2] for r in results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "gguf_results.md")
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        parts = write_model(Path(tmp))
        first = str(parts[0])
        rows = [("python -c 'import statecli.cli' (startup, for scale)",
                 *_median([sys.executable, "-c", "import statecli.cli"], args.runs))]
        sc_json = _median([sys.executable, "-c", _QUIET.format(argv=["inspect", first, "--format", "json"])], args.runs)
        sc_table = _median([sys.executable, "-c", _QUIET.format(argv=["inspect", first])], args.runs)
        dumps = [_median([str(bindir / "gguf-dump"), "--json", str(p)], args.runs) for p in parts]
        dump_sum = (sum(d[0] for d in dumps), max(d[1] for d in dumps), sum(d[2] for d in dumps))
        rows.append(("statecli inspect --format json (5 parts as one)", *sc_json))
        rows.append(("statecli inspect (table)", *sc_table))
        rows.append(("gguf-dump --json, part 1 (the vocabulary)", *dumps[0]))
        rows.append(("gguf-dump --json, 5 parts (sum of 5 runs)", *dump_sum))
    ratio = sc_json[0] / dump_sum[0]
    lines = ["# GGUF inspect benchmark", "",
             f"70B-shaped split GGUF: {PARTS} parts, {len(_tensors())} tensors, {VOCAB:,}-token vocabulary, 150,000 "
             f"merges; median of {args.runs} warm runs, peak RSS the largest run's.", "",
             "| command | seconds | CPU seconds | peak RSS MiB |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {secs:.3f} | {cpu:.3f} | {rss:.0f} |" for name, secs, rss, cpu in rows]
    lines += ["", f"statecli json / gguf-dump (5 parts): {ratio:.2f}x (target <= 1.2x); "
              f"statecli json {sc_json[0]:.3f} s, {sc_json[2]:.3f} CPU s (target <= 0.3 s), {sc_json[1]:.0f} MiB "
              "(target <= 60 MiB)", "", "README row:", "", readme_row(sc_table, dump_sum)]
    text = "\n".join(lines) + "\n"
    print(text)
    args.results.write_text(text)


def readme_row(table: tuple[float, float, float], dump_sum: tuple[float, float, float]) -> str:
    """The README performance table's GGUF row, from this run's figures."""
    return (f"| `inspect`, 70B-shaped split GGUF (5 parts, 152k vocabulary + 150k merges)* | {table[0]:.2f} s "
            f"({table[2]:.2f} s CPU) | {table[1]:.0f} MiB | `gguf-dump --json` of the 5 parts: {dump_sum[0]:.1f} s, "
            f"{dump_sum[1]:.0f} MiB |")


# The CLI with stdout to /dev/null (what a pipe costs is not the reader's).
_QUIET = ("import os, sys\nfd = os.open(os.devnull, os.O_WRONLY)\nos.dup2(fd, 1)\n"
          "sys.argv = ['statecli', *{argv!r}]\nfrom statecli.cli import main\nmain()\n")

if __name__ == "__main__":
    main()
