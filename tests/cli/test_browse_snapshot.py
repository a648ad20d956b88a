"""`statecli browse` as a picture: the pilot walks a fixed small checkpoint, exports the screen as SVG
(textual's own export) and compares it with tests/cli/snapshots/browse.svg.

The SVG is deterministic for a given screen (rich derives its ids from the content); ids are still
normalised so a reformatted export does not fail. Under the textual version the snapshot was made with,
the whole SVG must match (colours, layout, every glyph); under another version, the screen's text,
line by line (a new theme must not fail the test, a changed label must).

    STATECLI_UPDATE_SNAPSHOTS=1 python -m pytest tests/cli/test_browse_snapshot.py   # rewrite it
"""

from __future__ import annotations

import asyncio
import html
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SNAPSHOT = Path(__file__).parent / "snapshots" / "browse.svg"
SIZE = (120, 30)
KEYS = ["down", "down", "enter", "tab", "down", "s"]  # to enc, into its entries, enc.weight's values


def _checkpoint(folder: Path) -> str:
    """A fixed checkpoint: no randomness, so its statistics and histogram never change."""
    from safetensors.numpy import save_file

    arange = np.arange(48, dtype=np.float32)
    save_file({"enc.weight": (np.sin(arange) / 4).reshape(8, 6), "enc.bias": np.linspace(-1, 1, 8, dtype=np.float32),
               "norm.weight": np.ones(8, np.float32), "norm.running_mean": np.zeros(8, np.float32),
               "norm.num_batches_tracked": np.array(7, np.int64), "head.weight": (np.cos(arange[:16]) / 3).reshape(2, 8)},
              str(folder / "tiny.safetensors"))
    return "tiny.safetensors"


def _screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pytest.importorskip("textual")
    from statecli.analyses.inspect import inspect
    from statecli.load import load_checkpoint
    from statecli.tui import browse_data
    from statecli.tui.app import BrowserApp

    monkeypatch.chdir(tmp_path)  # the title shows the path as given: keep it free of the temp folder
    for var in ("NO_COLOR", "FORCE_COLOR", "TEXTUAL_THEME", "TEXTUAL_ANIMATIONS", "COLORTERM"):
        monkeypatch.delenv(var, raising=False)  # the caller's terminal settings must not change the picture
    app = BrowserApp(browse_data(inspect(load_checkpoint(_checkpoint(tmp_path)))))
    svg = ""

    async def main() -> None:
        nonlocal svg
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            for key in KEYS:
                await pilot.press(key)
                await pilot.pause()
            await pilot.pause(0.1)
            svg = app.export_screenshot()

    asyncio.run(main())
    return svg


def normalise(svg: str) -> str:
    return re.sub(r"terminal-\d+", "terminal", svg).strip() + "\n"


def screen_text(svg: str) -> list[str]:
    """The characters on screen, row by row, from the SVG's text runs (layout-level, theme-free)."""
    rows: dict[float, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text[^>]*\bx="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg, re.DOTALL):
        x, y, text = float(m.group(1)), float(m.group(2)), html.unescape(m.group(3)).replace("\xa0", " ")
        rows.setdefault(y, []).append((x, text))
    return ["".join(t for _, t in sorted(runs)).rstrip() for _, runs in sorted(rows.items())]


def _version() -> str:
    import textual

    return str(textual.__version__)


def test_browse_matches_the_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = normalise(_screen(tmp_path, monkeypatch))
    header = f"<!-- statecli browse snapshot, textual {_version()} -->\n"
    if os.environ.get("STATECLI_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(header + got)
    first, _, want = SNAPSHOT.read_text().partition("\n")
    lines = screen_text(got)
    assert any("tiny.safetensors" in line for line in lines) and any("enc.weight" in line for line in lines)
    assert any("min -0.25  max 0.25" in line for line in lines), "the values of enc.weight are not shown"
    if first == header.strip():
        if got != want:
            (tmp_path / "browse.svg").write_text(got)
        assert got == want, (f"the browse screen changed (new picture: {tmp_path / 'browse.svg'}); if intended, "
                             "rerun with STATECLI_UPDATE_SNAPSHOTS=1")
    else:  # another textual: its colours and glyph metrics may differ, the text on screen may not
        assert lines == screen_text(want), "the text on the browse screen changed; rerun with STATECLI_UPDATE_SNAPSHOTS=1"


def test_screen_text_reads_rows() -> None:
    svg = ('<text class="r1" x="0" y="20" textLength="24">ab</text><text x="24" y="20">&#160;c</text>'
           '<text x="0" y="44.4">d&amp;e</text>')
    assert screen_text(svg) == ["ab c", "d&e"]


def seventy_b_folder(folder: Path) -> Path:
    """A Llama-2-70B-shaped Hugging Face folder: 15 safetensors shards, 723 bfloat16 tensors with the
    real shapes (~138 GB declared), each shard a real header over a sparse data section."""
    import json
    import struct

    hidden, inter, kv, vocab = 8192, 28672, 1024, 32000
    names: list[tuple[str, list[int]]] = [("model.embed_tokens.weight", [vocab, hidden])]
    for i in range(80):
        p = f"model.layers.{i}"
        names += [(f"{p}.input_layernorm.weight", [hidden]), (f"{p}.mlp.down_proj.weight", [hidden, inter]),
                  (f"{p}.mlp.gate_proj.weight", [inter, hidden]), (f"{p}.mlp.up_proj.weight", [inter, hidden]),
                  (f"{p}.post_attention_layernorm.weight", [hidden]), (f"{p}.self_attn.k_proj.weight", [kv, hidden]),
                  (f"{p}.self_attn.o_proj.weight", [hidden, hidden]), (f"{p}.self_attn.q_proj.weight", [hidden, hidden]),
                  (f"{p}.self_attn.v_proj.weight", [kv, hidden])]
    names += [("model.norm.weight", [hidden]), ("lm_head.weight", [vocab, hidden])]
    folder.mkdir(exist_ok=True)
    per = -(-len(names) // 15)
    weight_map: dict[str, str] = {}
    for s in range(15):
        shard = f"model-{s + 1:05d}-of-00015.safetensors"
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in names[s * per:(s + 1) * per]:
            n = 2 * int(np.prod(shape))
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = shard
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        with open(folder / shard, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            f.truncate(8 + len(text) + offset)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def test_browse_opens_a_70b_shaped_folder(tmp_path: Path) -> None:
    """Headers only: the tree shows all 80 layers and 723 tensors. Timed (printed, not asserted):
    docs/performance.md quotes it."""
    import time

    pytest.importorskip("textual")
    from statecli.analyses.inspect import inspect
    from statecli.load import load_checkpoint
    from statecli.tui import browse_data
    from statecli.tui.app import BrowserApp

    folder = seventy_b_folder(tmp_path / "llama-70b")
    seen: dict[str, object] = {}

    async def main() -> None:
        t0 = time.perf_counter()
        app = BrowserApp(browse_data(inspect(load_checkpoint(str(folder)))))
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.pause()
            seen["open_s"] = time.perf_counter() - t0
            tree: Any = app.query_one("#tree")
            seen["root"] = tree.root.label.plain
            model = next(c for c in tree.root.children if c.data == "model")
            layers = next(c for c in model.children if c.data == "model.layers")
            seen["layers"] = len(layers.children)

    asyncio.run(main())
    print(f"\nbrowse of a 70B-shaped 15-shard folder: open + first screen {seen['open_s']:.2f} s")
    assert "723 tensors" in str(seen["root"]) and seen["layers"] == 80
    assert sum(os.stat(p).st_blocks for p in folder.iterdir()) * 512 < 64 << 20, "the shards are not sparse"


def test_doc_pictures_exist_and_stay_small() -> None:
    """Every picture the README and docs/ show is in docs/pictures/ (scripts/make_pictures.py) and under
    200 KB."""
    root = Path(__file__).resolve().parents[2]
    shown = [(page.parent / rel).resolve() for page in [root / "README.md", *(root / "docs").glob("*.md")]
             for rel in re.findall(r"\]\(((?:docs/)?pictures/[^)]+)\)", page.read_text())]
    assert len(set(shown)) >= 7
    for path in shown:
        assert path.parent == root / "docs" / "pictures", path
        assert path.is_file() and path.stat().st_size < 200_000, path
