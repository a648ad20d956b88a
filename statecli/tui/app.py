"""The textual app behind `statecli browse`: the module tree on the left, the selected module's
entries on the right, one entry's values read on demand; with two checkpoints, what moved where."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Static, Tree
from textual.widgets.tree import TreeNode

from ..errors import StatecliError
from ..render.text import escape
from ..state import KINDS, Entry
from ..state import ROOT as ROOT_NAME
from ..units import fmt_bytes
from .labels import (
    change_text,
    entry_cells,
    entry_head,
    fit_table,
    gguf_line,
    kind_style,
    name_cell,
    node_label,
    stats_text,
)
from .model import ROOT, Browse, Filter, Node, parents

ROW_LIMIT = 300  # rows in the table at once (textual lays out each row): beyond, pick a submodule or filter
TYPING_PAUSE = 0.3  # seconds without a keystroke before the name filter applies
TREE_MIN = 20  # cells the tree keeps when the table needs the room for its longest name


class BrowserApp(App[None]):
    """Browse one checkpoint (or two: A with B's changes) without loading it."""

    TITLE = "statecli browse"
    CSS = """
    #search { dock: top; display: none; }
    #main { height: 1fr; }
    #tree { border-right: solid $primary-background; }
    #right { width: 1fr; }
    #module { height: auto; padding: 0 1; }
    #tensors { height: 1fr; }
    #detail { height: auto; max-height: 50%; padding: 0 1; border-top: solid $primary-background; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("/", "search", "filter names"),
        Binding("k", "kind", "kind filter"),
        Binding("s", "stats", "values"),
        Binding("escape", "clear", "clear filter"),
    ]

    def __init__(self, data: Browse) -> None:
        super().__init__()
        self.data = data
        self.flt = Filter()
        self.nodes: Mapping[str, Node] = {}
        self.below: tuple[Entry, ...] = ()  # every entry below the module shown
        self.module = ROOT
        self.rows: list[Entry] = []
        self.shown: tuple[str, Filter] | None = None  # the table's module and filter: refilled only on a change
        self.typing: Timer | None = None
        self.entry: Entry | None = None
        self.detail = Text()  # what the detail pane shows (tests read it)
        self.kinds = [k for k in KINDS if any(e.kind == k for e in data.entries())]
        self.longest = max((name_cell(e, ROOT).cell_len for e in data.entries()), default=0)  # the root's names
        self.table_note = ""  # the columns the table's width moved out or left out
        self.tree_width = self.tree_width_for = 0  # the tree's width, and the screen width it was set for

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: part of a name, or /regex; enter to go back to the tree", id="search")
        with Horizontal(id="main"):
            yield Tree(Text(""), data=ROOT, id="tree")
            with Vertical(id="right"):
                yield Static(id="module")
                yield DataTable(id="tensors", cursor_type="row", zebra_stripes=True)
                yield Static(Text("select a module, then a tensor", style="dim"), id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = escape(self.data.title)
        self.size_panes()
        self.populate()
        self.query_one("#tree", Tree).focus()

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self._refit)  # after the table's own resize, or it keeps the old widths

    def _refit(self) -> None:
        if self.tree_width_for == self.size.width:
            return
        self.size_panes()
        self.shown = None
        self.show_module(self.module)

    def size_panes(self) -> None:
        """The tree takes 40% of the width (50% with two checkpoints), less (down to TREE_MIN) where the
        table needs the room to show the longest name whole once its other columns are gone. Sized from
        the root's names, so the tree does not jump as the user moves between modules."""
        total = self.size.width
        share = total // 2 if self.data.two else total * 2 // 5
        need = max(self.longest, len("name")) + self._table_frame()
        self.tree_width = max(min(share, total - need), min(TREE_MIN, share))
        self.tree_width_for = total
        self.query_one("#tree", Tree).styles.width = self.tree_width

    def _table_frame(self) -> int:
        """Cells of the table that hold no text: the vertical scrollbar, and the name column's padding (the
        other columns' padding is grid.fit's gap between columns)."""
        table = self.query_one("#tensors", DataTable)
        return int(table.styles.scrollbar_size_vertical) + 2 * table.cell_padding

    # --- the tree ---------------------------------------------------------------------------------

    def populate(self) -> None:
        """(Re)build the tree for the current filter; modules in model order, top levels expanded."""
        self.module_tree = self.data.tree(self.flt)
        self.nodes = self.module_tree.nodes
        tops = _scales(self.nodes)
        tree: Tree[str] = self.query_one("#tree", Tree)
        tree.clear()
        self.shown = None
        root = self.nodes[ROOT]
        tree.root.set_label(node_label(root, self.data.two, tops.get(0, 0.0), root_name=self.data.inspected.checkpoint.path))
        tree.root.data = ROOT

        made: dict[str, TreeNode[str]] = {ROOT: tree.root}

        def add(parent: TreeNode[str], path: str, depth: int) -> None:
            node = self.nodes[path]
            label = node_label(node, self.data.two, tops.get(depth, 0.0))
            if node.children:
                made[path] = parent.add(label, data=path, expand=depth < 2)
                for c in node.children:
                    add(made[path], c, depth + 1)
            else:
                made[path] = parent.add_leaf(label, data=path)

        for c in root.children:
            add(tree.root, c, 1)
        tree.root.expand()
        # Stay on the module the user was looking at (or its nearest ancestor the filter kept).
        keep = next(p for p in reversed(parents(f"{self.module}.x")) if p in made)  # the module, then its parents
        up = made[keep].parent
        while up is not None:
            up.expand()
            up = up.parent
        self.call_after_refresh(tree.move_cursor, made[keep])
        self.show_module(keep)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        self.show_module(event.node.data or ROOT)

    def show_module(self, path: str) -> None:
        """Fill the table with every entry below the module and say what the module holds."""
        node = self.nodes.get(path)
        if node is None or self.shown == (path, self.flt):
            return
        self.module, self.shown = path, (path, self.flt)
        self.below = self.module_tree.entries_under(path)
        self.rows = list(self.below[:ROW_LIMIT])
        cells = [entry_cells(e, path, self.data.keys.get(e.name), self.data.two) for e in self.rows]
        fitted = fit_table(cells, self.data.two, self.size.width - self.tree_width - self._table_frame())
        self.table_note = fitted.note
        table = self.query_one("#tensors", DataTable)
        table.clear(columns=True)
        table.add_columns(*fitted.heads)
        for i, row in enumerate(fitted.rows):
            table.add_row(*row, key=str(i))
        self.query_one("#module", Static).update(self._module_line(node))
        self.show_entry(self.rows[0] if self.rows else None)

    def _module_line(self, node: Node) -> Text:
        out = Text(escape(node.path or ROOT_NAME), style="bold")
        out.append(f"  {node.tensors} tensors  {fmt_bytes(node.nbytes)}")
        for kind, n in node.kinds:
            out.append(f"  {n} {kind}", style=kind_style(kind))
        bpw = gguf_line(self.data.inspected.gguf, node.path)
        if bpw is not None:
            out.append("\n")
            out.append_text(bpw)
        if len(self.below) > ROW_LIMIT:
            out.append(f"\nthe first {ROW_LIMIT:,} of {len(self.below):,} entries: pick a submodule or filter (/)",
                       style="yellow")
        if node.change is not None and node.moved:
            out.append("\n")
            out.append_text(change_text(node.change, 0.0))
        elif node.change is not None:
            out.append("\nequal in both checkpoints", style="dim")
        if self.table_note:
            out.append(f"\n{self.table_note}", style="dim")
        if self.flt.text or self.flt.kind:
            out.append(f"\nfilter: {escape(self.flt.text) or '-'}  kind: {self.flt.kind or 'all'}", style="magenta")
        return out

    # --- the entry ---------------------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        i = int(event.row_key.value or 0)
        self.show_entry(self.rows[i] if i < len(self.rows) else None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_stats()  # enter on a row: its values, as `s`

    def show_entry(self, e: Entry | None) -> None:
        self.entry = e
        if e is None:
            self._detail(Text("no entries here (check the filter)", style="dim"))
            return
        self._detail(entry_head(e, self.data.keys.get(e.name)))

    def _detail(self, text: Text) -> None:
        self.detail = text
        self.query_one("#detail", Static).update(text)

    def action_stats(self) -> None:
        """Read the highlighted tensor's values (in both checkpoints) in a thread: the tree stays live."""
        e = self.entry
        if e is None or e.tensor is None:
            return
        self._detail(entry_head(e, self.data.keys.get(e.name), hint=False) + Text("\nreading values...", style="dim"))
        self.run_worker(lambda: self._read_stats(e), thread=True, exclusive=True, group="stats")

    def _read_stats(self, e: Entry) -> None:
        from ..analyses.show import show

        out = entry_head(e, self.data.keys.get(e.name), hint=False)
        sides = [("A ", self.data.compared.a), ("B ", self.data.compared.b)] if self.data.compared is not None \
            else [("", self.data.inspected.checkpoint)]
        for side, ck in sides:
            if not any(x.name == e.name for x in ck.entries):
                out.append(f"\n{side}has no {escape(e.name)}", style="dim")
                continue
            try:
                out.append_text(Text("\n") + stats_text(show(ck, e.name, bins=32), side))
            except StatecliError as exc:
                out.append(f"\n{side}{escape(exc.message)}", style="red")
            except Exception as exc:  # noqa: BLE001 - a bug in one tensor's read must not end the session
                out.append(f"\n{side}internal error reading values: {type(exc).__name__}: {escape(str(exc))}", style="red")
        self.call_from_thread(self._show_stats, e, out)

    def _show_stats(self, e: Entry, text: Text) -> None:
        if self.entry is e:  # the user may have moved on while the values were read
            self._detail(text)

    # --- filters -----------------------------------------------------------------------------------

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        # Rebuilding a tree of a thousand modules per keystroke lags: wait for a pause in the typing.
        if self.typing is not None:
            self.typing.stop()
        self.typing = self.set_timer(TYPING_PAUSE, lambda: self._refilter(Filter(event.value, self.flt.kind)))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.typing is not None:
            self.typing.stop()
        self._refilter(Filter(event.value, self.flt.kind))
        self.query_one("#tree", Tree).focus()

    def action_kind(self) -> None:
        """Cycle through the kinds present: all -> parameter -> buffer -> ... -> all."""
        order: list[str | None] = [None, *self.kinds]
        nxt = order[(order.index(self.flt.kind) + 1) % len(order)] if self.flt.kind in order else None
        self._refilter(Filter(self.flt.text, nxt))

    def action_clear(self) -> None:
        if self.typing is not None:
            self.typing.stop()
        box = self.query_one("#search", Input)
        box.value = ""
        box.display = False
        self._refilter(Filter())
        self.query_one("#tree", Tree).focus()

    def _refilter(self, flt: Filter) -> None:
        try:
            flt.matcher()
        except StatecliError as exc:
            self._detail(Text(exc.message, style="red"))
            return
        self.flt = flt
        self.populate()


def _scales(nodes: Mapping[str, Node]) -> dict[int, float]:
    """The largest finite change at each depth: a module's bar is relative to its peers."""
    out: dict[int, float] = {}
    for path, n in nodes.items():
        rel = n.change.rel_change if n.change is not None and n.moved else None
        if rel is not None and rel == rel and rel != float("inf"):
            depth = path.count(".") + 1 if path else 0
            out[depth] = max(out.get(depth, 0.0), rel)
    return out


def run(data: Browse, **kwargs: Any) -> None:
    """Run the browser in this terminal until the user quits. Without a terminal on stdin and
    stdout (a pipe, a CI job) it refuses at once instead of waiting for keys that never come."""
    import sys

    from ..errors import UsageError

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(None, "statecli browse is interactive and needs a terminal on stdin and stdout",
                         "use inspect --tree, diff --by-module or --format html in scripts")
    BrowserApp(data).run(**kwargs)
