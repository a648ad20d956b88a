"""Make the pictures of the README and docs/commands.md (docs/pictures/): each view as statecli draws
it, exported as SVG by rich
(the commands' own colour output, replayed into a recording console) and by textual (`browse`, driven
headless by its pilot); the HTML report as a headless-Chromium screenshot (PNG) when Chromium is there.

    python scripts/make_pictures.py            # rewrite docs/pictures/*
    python scripts/make_pictures.py --check    # exit 1 if a picture is over 200 KB

The inputs are sample_checkpoints/ and a pair built here in a temp folder (a base model and a
"fine-tune" that moved only the last blocks' q_proj/v_proj, as a LoRA merge would), so the
pictures answer the docs' questions with a known answer.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "pictures"
WIDTH = 112
MAX_BYTES = 200_000


def _pair(folder: Path) -> tuple[str, str]:
    """base.safetensors and finetuned.safetensors: 6 blocks; blocks 4 and 5's q_proj/v_proj moved."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    base: dict[str, torch.Tensor] = {"embed.weight": torch.randn(512, 64, generator=g) * 0.02}
    for i in range(6):
        p = f"layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            base[f"{p}.attention.{proj}.weight"] = torch.randn(64, 64, generator=g) * 0.05
        base[f"{p}.mlp.up_proj.weight"] = torch.randn(256, 64, generator=g) * 0.05
        base[f"{p}.mlp.down_proj.weight"] = torch.randn(64, 256, generator=g) * 0.05
        base[f"{p}.norm.weight"] = torch.ones(64)
    base["lm_head.weight"] = torch.randn(512, 64, generator=g) * 0.02
    tuned = {k: v.clone() for k, v in base.items()}
    for i, scale in ((4, 0.05), (5, 0.12)):
        for proj in ("q_proj", "v_proj"):
            w = tuned[f"layers.{i}.attention.{proj}.weight"]
            w += scale * (torch.randn(64, 4, generator=g) @ torch.randn(4, 64, generator=g)) * 0.05
    save_file(base, folder / "base.safetensors")
    save_file(tuned, folder / "finetuned.safetensors")
    return "base.safetensors", "finetuned.safetensors"


def rich_svg(args: list[str], name: str, title: str) -> Path:
    """Run `statecli ARGS` in-process with colour on, replay its output into a recording console."""
    from rich.console import Console
    from rich.text import Text
    from typer.testing import CliRunner

    from statecli.cli import app

    env = {"COLUMNS": str(WIDTH), "FORCE_COLOR": "1", "TERM": "xterm-256color", "NO_COLOR": None, "GITHUB_ACTIONS": None}
    result = CliRunner().invoke(app, args, env=env, color=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    con = Console(record=True, width=WIDTH, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    con.print(Text.from_ansi(result.output.rstrip("\n")), no_wrap=True, overflow="ignore", crop=False)
    path = OUT / f"{name}.svg"
    con.save_svg(str(path), title=title)
    return path


def textual_svg(args: list[str], name: str, keys: list[str], size: tuple[int, int] = (150, 36)) -> Path:
    """`statecli browse ARGS` headless: press `keys`, save the screen as SVG."""
    from statecli.analyses.diff import diff
    from statecli.analyses.inspect import inspect
    from statecli.load import load_checkpoint
    from statecli.tui import browse_data
    from statecli.tui.app import BrowserApp

    ck = load_checkpoint(args[0])
    compared = diff(ck, load_checkpoint(args[1]), by_module=True) if len(args) > 1 else None
    app = BrowserApp(browse_data(inspect(ck), compared))

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            for key in keys:
                await pilot.press(key)
                await pilot.pause()
            await pilot.pause(0.2)
            app.save_screenshot(filename=f"{name}.svg", path=str(OUT))

    asyncio.run(main())
    return OUT / f"{name}.svg"


def html_png(args: list[str], name: str, tmp: Path) -> Path | None:
    """The HTML report rendered by headless Chromium (no network), or None without Chromium."""
    from typer.testing import CliRunner

    from statecli.cli import app

    browser = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if browser is None:
        print("no chromium: the HTML report picture is left as it is", file=sys.stderr)
        return None
    page = tmp / "report.html"
    page.write_text(CliRunner().invoke(app, [*args, "--format", "html"]).stdout)
    shot = OUT / f"{name}.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1000,900", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return shot


def make() -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    made: list[Path | None] = []
    with tempfile.TemporaryDirectory(prefix="statecli-pictures-") as folder:
        tmp = Path(folder)
        for sample in ("transformer.pt", "cnn.pt"):
            shutil.copy(ROOT / "sample_checkpoints" / sample, tmp / sample)
        cwd = os.getcwd()
        os.chdir(tmp)  # short relative names in every picture, no temp paths
        try:
            base, tuned = _pair(tmp)
            made += [
                rich_svg(["diff", base, tuned, "--by-module", "--depth", "2"], "diff-by-block",
                         "statecli diff --by-module --depth 2"),
                rich_svg(["diff", base, tuned, "--by-module", "--depth", "4", "--sort", "change"], "diff-by-projection",
                         "statecli diff --by-module --depth 4 --sort change"),
                rich_svg(["inspect", "cnn.pt", "--stats", "--filter", "conv|fc"], "inspect-stats",
                         "statecli inspect --stats"),
                rich_svg(["size", "transformer.pt", "--depth", "2"], "size", "statecli size --depth 2"),
                textual_svg(["transformer.pt"], "browse", ["down", "down", "enter", "tab", "down", "s"]),
                textual_svg([base, tuned], "browse-diff", ["down"] * 8 + ["enter", "down", "enter", "tab", "s"]),
                html_png(["diff", base, tuned, "--depth", "2"], "html-report", tmp),
            ]
        finally:
            os.chdir(cwd)
    return [p for p in made if p is not None]


def main(argv: list[str]) -> int:
    paths = sorted(OUT.glob("*")) if "--check" in argv else make()
    big = [p for p in paths if p.stat().st_size > MAX_BYTES]
    for p in paths:
        print(f"{p.relative_to(ROOT)}  {p.stat().st_size:,} bytes")
    for p in big:
        print(f"{p.relative_to(ROOT)} is over {MAX_BYTES:,} bytes", file=sys.stderr)
    return 1 if big else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

