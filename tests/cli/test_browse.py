"""`statecli browse`: driven headless by textual's own pilot through the tree, the tensor table,
values on demand, the filters and the two-checkpoint mode; hostile names stay literal."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from statecli.analyses.diff import diff
from statecli.analyses.inspect import inspect
from statecli.cli import app as cli
from statecli.load import load_checkpoint
from statecli.tui import Browse, Filter, browse_data

runner = CliRunner()


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(4, 3)
        self.norm = torch.nn.BatchNorm1d(3)
        self.dec = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A and B differ only in dec.2 (the last layer of a fine-tune)."""
    torch.manual_seed(0)
    sd = Net().state_dict()
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(sd, a)
    sd = {k: v.clone() for k, v in sd.items()}
    sd["dec.2.weight"] += 0.5
    torch.save(sd, b)
    return a, b


def data_for(a: Path, b: Path | None = None) -> Browse:
    ck = load_checkpoint(str(a))
    compared = diff(ck, load_checkpoint(str(b)), by_module=True) if b is not None else None
    return browse_data(inspect(ck), compared)


def drive(data: Browse, script: Callable[[Any, Any], Awaitable[None]], size: tuple[int, int] = (160, 40)) -> None:
    """Run the app headless and hand (app, pilot) to `script`."""
    pytest.importorskip("textual")
    from statecli.tui.app import BrowserApp

    async def main() -> None:
        app = BrowserApp(data)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await script(app, pilot)

    asyncio.run(main())


async def until(pilot: Any, cond: Callable[[], bool], seconds: float = 10.0) -> None:
    """Pause the app until cond() holds (then the caller asserts): keys and timers lag on a loaded machine,
    and a query may find no widget while a screen is switching."""
    for _ in range(int(seconds / 0.05)):
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - NoMatches mid-switch: look again
            pass
        await pilot.pause(0.05)


def labels(app: Any) -> dict[str, str]:
    """Every tree line's text by module path."""
    tree = app.query_one("#tree")
    out: dict[str, str] = {}

    def walk(node: Any) -> None:
        out[node.data] = node.label.plain
        for c in node.children:
            walk(c)

    walk(tree.root)
    return out


def table(app: Any) -> list[list[str]]:
    t = app.query_one("#tensors")
    return [[c.plain for c in t.get_row_at(i)] for i in range(t.row_count)]


def table_by_head(app: Any) -> list[dict[str, str]]:
    """The table's rows as {column heading: cell}: which columns show depends on the width."""
    heads = [c.label.plain for c in app.query_one("#tensors").columns.values()]
    return [dict(zip(heads, r)) for r in table(app)]


def test_tree_shows_the_modules_with_counts_sizes_and_kinds(pair: tuple[Path, Path]) -> None:
    async def script(app: Any, pilot: Any) -> None:
        shown = labels(app)
        assert list(shown) == ["", "enc", "norm", "dec", "dec.0", "dec.2"]  # model order
        assert shown["enc"].startswith("enc  2 tensors  60 B")
        assert "2 param" in shown["norm"] and "3 buffer" in shown["norm"]
        assert shown[""].startswith(str(pair[0]))
        styles = {str(s.style) for s in app.query_one("#tree").root.children[1].label.spans}
        assert "green" in styles and "cyan" in styles  # parameter green, buffer cyan, as the tables

    drive(data_for(pair[0]), script)


def test_selecting_a_module_shows_its_tensors_and_values_on_demand(pair: tuple[Path, Path]) -> None:
    async def script(app: Any, pilot: Any) -> None:
        assert len(table(app)) == 11  # the root: every entry
        await pilot.press("down", "down")  # (root) -> enc -> norm
        assert app.module == "norm"
        rows = table(app)
        assert [r[0] for r in rows] == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
        assert rows[2][1:4] == ["buffer", "inferred (BatchNorm name)", "float32"]
        assert rows[4][3:7] == ["int64", "[]", "8 B", "cpu"]
        await pilot.press("tab", "down", "s")  # the table, its second row (bias), read its values
        await app.workers.wait_for_complete()
        await pilot.pause()
        shown = app.detail.plain
        assert shown.startswith("norm.bias\nparameter")
        assert "min 0  max 0  mean 0" in shown and "zeros 100.00%" in shown  # BatchNorm bias starts at zero

    drive(data_for(pair[0]), script)


def test_filters_narrow_the_tree_and_the_table(pair: tuple[Path, Path]) -> None:
    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("/", *"running", "enter")  # enter applies the filter and goes back to the tree
        await until(pilot, lambda: list(labels(app)) == ["", "norm"])
        assert list(labels(app)) == ["", "norm"]
        assert [r[0] for r in table(app)] == ["norm.running_mean", "norm.running_var"]
        await pilot.press("/", "backspace", "backspace", *"ng_var")
        await until(pilot, lambda: len(table(app)) == 1)  # typing applies the filter after a pause (a timer)
        assert [r[0] for r in table(app)] == ["norm.running_var"]
        await pilot.press("escape", "k")  # clear, then the kinds in turn: parameter first
        await until(pilot, lambda: app.flt == Filter("", "parameter") and len(table(app)) == 8)
        assert app.flt == Filter("", "parameter")
        assert all(r[1] == "parameter" for r in table(app)) and len(table(app)) == 8
        await pilot.press("k")
        await until(pilot, lambda: app.flt.kind == "buffer" and len(table(app)) == 3)
        assert app.flt.kind == "buffer" and len(table(app)) == 3

    drive(data_for(pair[0]), script)


def test_two_paths_show_change_figures_only_where_values_moved(pair: tuple[Path, Path]) -> None:
    data = data_for(*pair)
    changes = {p: n.change for p, n in data.tree().nodes.items() if n.change is not None}
    by_depth = {m.module: m for d in (1, 2) for m in diff(load_checkpoint(str(pair[0])), load_checkpoint(str(pair[1])),
                                                        depth=d, by_module=True).modules}
    assert changes["dec.2"].rel_change == by_depth["dec.2"].rel_change  # diff --by-module --depth 2's own figure
    assert changes["dec.2"].rel_change > changes["dec"].rel_change > changes[""].rel_change > 0
    assert changes["enc"].changed == 0 and changes["dec"].changed == 1 and changes[""].changed == 1

    async def script(app: Any, pilot: Any) -> None:
        shown = labels(app)
        for moved in ("", "dec", "dec.2"):
            assert "Δ" in shown[moved] and "cos" in shown[moved] and "max|d| 0.5" in shown[moved], shown[moved]
        for same in ("enc", "norm", "dec.0"):
            assert shown[same].startswith(f"{same.split('.')[-1]}  equal  ") and "Δ" not in shown[same], shown[same]
            assert "cos" not in shown[same], shown[same]
        assert list(shown) == ["", "enc", "norm", "dec", "dec.0", "dec.2"]  # model order, not sorted by change
        await pilot.press("down", "down", "down", "down", "down")
        assert app.module == "dec.2"
        rows = table_by_head(app)
        assert rows[0]["name"] == "weight" and rows[0]["status"] == "changed" and rows[1]["status"] == "equal"
        await pilot.press("tab", "s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "A values" in app.detail.plain and "B values" in app.detail.plain

    drive(data, script)


def test_hostile_names_render_literally(tmp_path: Path) -> None:
    name = "[bold]evil\x1b[2J\x1b]0;title\x07.w"
    path = tmp_path / "[b]hostile.pt"
    torch.save({name: torch.ones(2), "[red]x[/red].b": torch.zeros(1)}, path)

    async def script(app: Any, pilot: Any) -> None:
        shown = labels(app)
        module = "[bold]evil\x1b[2J\x1b]0;title\x07"
        assert shown[module].startswith("[bold]evil\\x1b[2J\\x1b]0;title\\x07  1 tensors")
        assert shown["[red]x[/red]"].startswith("[red]x[/red]  1 tensors")
        assert shown[""].startswith(f"{path}  2 tensors") and app.sub_title == str(path)
        assert [r[0] for r in table(app)] == ["[bold]evil\\x1b[2J\\x1b]0;title\\x07.w", "[red]x[/red].b"]
        svg = app.export_screenshot()
        assert "\x1b" not in svg and "\x07" not in svg
        assert "[red]x[/red]" in svg.replace("&#160;", " ")

    drive(data_for(path), script)


def test_missing_textual_is_one_line_naming_the_extra(pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "textual", None)  # import textual -> ImportError
    result = runner.invoke(cli, ["browse", str(pair[0])])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "statecli: error: statecli browse needs the optional textual package; install the tui extra: "
        "pip install 'torch-statecli[tui]'"]


def test_command_hands_both_checkpoints_to_the_app(pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("textual")
    import statecli.tui.app

    seen: list[Browse] = []
    monkeypatch.setattr(statecli.tui.app, "run", lambda data, **kw: seen.append(data))
    result = runner.invoke(cli, ["browse", str(pair[0]), str(pair[1])])
    assert result.exit_code == 0, result.output
    (data,) = seen
    assert data.two and data.title == f"{pair[0]} -> {pair[1]}"
    assert data.tree()["dec.2"].moved and not data.tree()["enc"].moved


def test_a_filter_keeps_the_module_in_view(pair: tuple[Path, Path]) -> None:
    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("down", "down", "down", "down")  # (root) enc norm dec dec.0
        assert app.module == "dec.0"
        await pilot.press("/", *"dec.", "enter")
        await pilot.pause()
        assert app.module == "dec.0" and app.query_one("#tree").cursor_node.data == "dec.0"
        await pilot.press("escape", "/", *"norm", "enter")  # dec.0 is filtered out: back to its nearest kept parent
        await pilot.pause()
        assert app.module == "" and app.query_one("#tree").cursor_node.data == ""

    drive(data_for(pair[0]), script)


def test_without_a_terminal_browse_refuses_at_once(pair: tuple[Path, Path]) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "statecli", "browse", str(pair[0])], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "needs a terminal" in proc.stderr and proc.stdout == ""


MINILM_NAMES = ["embeddings.word_embeddings.weight", "embeddings.position_ids",
                "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.output.LayerNorm.weight",
                "encoder.layer.0.intermediate.dense.bias", "pooler.dense.weight"]


def test_at_80_columns_every_name_shows_whole(tmp_path: Path) -> None:
    """Issue 21 item 12: at 80x30 the table drops other columns (and the tree gives room) before a name is cut."""
    from tests.cli.test_browse_snapshot import screen_text

    path = tmp_path / "m.pt"
    torch.save({n: torch.zeros(2, 3) for n in MINILM_NAMES}, path)

    def visible(app: Any) -> list[str]:
        t = app.query_one("#tensors")
        name = next(c for c in t.columns.values() if c.label.plain == "name")
        assert name.get_render_width(t) + int(t.styles.scrollbar_size_vertical) <= t.size.width  # no cut column
        return screen_text(app.export_screenshot())

    async def script(app: Any, pilot: Any) -> None:
        await pilot.pause(0.2)
        assert [r["name"] for r in table_by_head(app)] == MINILM_NAMES
        screen = visible(app)
        for n in MINILM_NAMES:  # each on its own screen line, whole
            assert any(line.endswith(n) or f" {n} " in line for line in screen), (n, screen)
        assert "kind" not in table_by_head(app)[0] and "device cpu" in app.query_one("#module").render().plain
        await pilot.resize_terminal(200, 30)  # room again: the columns come back
        await until(pilot, lambda: "shape" in table_by_head(app)[0])
        assert table_by_head(app)[0]["kind"] == "parameter" and table_by_head(app)[0]["shape"] == "[2, 3]"
        screen = visible(app)
        assert all(any(f" {n} " in line for line in screen) for n in MINILM_NAMES)

    drive(data_for(path), script, size=(80, 30))
