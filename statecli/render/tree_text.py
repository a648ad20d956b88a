"""A ModuleTree in the terminal (`inspect --tree`): modules with their totals, tensors as leaves.

rich's Tree costs ~100 us a line (6 s for 50,000 tensors), so piped output and big trees are
written as guide-prefixed lines directly, as print_grid does for tables; a small tree on a terminal
keeps rich's Tree."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..analyses.module_tree import ModuleTree, TreeNode
from ..state import Entry
from ..units import fmt_bytes, fmt_count, fmt_shape, plural
from .grid import _plain, console_width
from .text import escape

GUIDES = ("    ", "│   ", "├── ", "└── ")  # rich's own: space, continue, branch, last branch
ASCII_GUIDES = ("    ", "|   ", "+-- ", "`-- ")
RICH_LIMIT = 2_000  # tensors: above it a styled tree is written line by line, not through rich's Tree

Label = tuple[str, str, str]  # a module's (name: bold, class: cyan, totals: dim); a tensor's is a str


def module_label(tree: ModuleTree, node: TreeNode, name: str) -> Label:
    cls = tree.classes.get(node.path)
    return (escape(name), f" ({escape(cls.rsplit('.', 1)[-1])})" if cls else "",
            f"  {plural(node.tensors, 'tensor')}, {fmt_count(node.numel)} elements, {fmt_bytes(node.nbytes)}")


def leaf_label(e: Entry) -> str:
    t = e.tensor
    assert t is not None
    return f"{escape(e.name.rpartition('.')[2])}  {e.kind}  {escape(t.dtype)} {fmt_shape(t.shape)}  {fmt_bytes(t.nbytes)}"


def _items(node: TreeNode) -> list[tuple[bool, Any]]:
    """A module's rows: its submodules (True), then its tensors, in model order."""
    return [(True, c) for c in node.children] + [(False, e) for e in node.leaves if e.tensor is not None]


def tree_lines(tree: ModuleTree, guides: tuple[str, str, str, str] = GUIDES) -> Iterator[tuple[str, Label | str]]:
    """(guide prefix, label) per line, root first, depth first; a loop, not recursion: a name may
    have thousands of dots."""
    yield "", module_label(tree, tree.root, tree.label)
    stack: list[list[Any]] = [[_items(tree.root), 0, ""]]  # [rows, next row, guide prefix]
    nodes = tree.nodes
    while stack:
        frame = stack[-1]
        items, start, prefix = frame
        last = len(items) - 1
        for i in range(start, last + 1):
            is_module, obj = items[i]
            head = prefix + (guides[3] if i == last else guides[2])
            if not is_module:
                yield head, leaf_label(obj)
                continue
            node = nodes[obj]
            yield head, module_label(tree, node, node.name)
            below = _items(node)
            if below:  # this module's rows come next, then the rest of this frame's
                frame[1] = i + 1
                stack.append([below, 0, prefix + (guides[0] if i == last else guides[1])])
                break
        else:
            stack.pop()


def print_tree(con: Any, tree: ModuleTree) -> None:
    """Print `tree` on a rich console."""

    guides = GUIDES if (con.encoding or "").lower().startswith("utf") else ASCII_GUIDES
    width = console_width(con)
    lines: Iterable[tuple[str, Label | str]] = tree_lines(tree, guides)
    if width is not None and any(len(p) + _len(label) > width for p, label in tree_lines(tree, guides)):
        lines = _folded(lines, width, guides)  # written line by line below: rich's Tree would fold the names
    elif not _plain(con) and (tree.root.tensors <= RICH_LIMIT or not _ansi(con)):
        _rich_tree(con, tree)
        return
    if _plain(con) or not _ansi(con):  # no styles: the text rich would write (names escaped), whole lines
        chunk: list[str] = []
        for prefix, label in lines:
            chunk.append(f"{prefix}{label}\n" if isinstance(label, str) else f"{prefix}{''.join(label)}\n")
            if len(chunk) >= 4096:
                con.file.write("".join(chunk))
                chunk = []
        con.file.write("".join(chunk))
        return
    # A big (or folded) tree on a terminal: the SGR codes rich writes for these styles, written here (~1 us a
    # line instead of ~100); NO_COLOR keeps bold and dim, as rich does.
    bold, dim, cyan, off = "\x1b[1m", "\x1b[2m", "" if con.no_color else "\x1b[36m", "\x1b[0m"
    chunk = []
    for prefix, label in lines:
        if isinstance(label, str):
            chunk.append(f"{prefix}{label}\n")
        else:
            cls = f"{cyan}{label[1]}{off}" if label[1] else ""
            chunk.append(f"{prefix}{bold}{label[0]}{off}{cls}{dim}{label[2]}{off}\n")
        if len(chunk) >= 4096:
            con.file.write("".join(chunk))
            chunk = []
    con.file.write("".join(chunk))


def _len(label: Label | str) -> int:
    return len(label) if isinstance(label, str) else sum(map(len, label))


def _folded(lines: Iterable[tuple[str, Label | str]], width: int, guides: tuple[str, str, str, str]
            ) -> Iterator[tuple[str, Label | str]]:
    """The tree's lines for a terminal `width` wide: a line that does not fit keeps its name whole on its own
    line and puts the rest (kind, dtype, shape, size; a module's totals) below it, folded at words."""
    import textwrap

    for prefix, label in lines:
        if len(prefix) + _len(label) <= width:
            yield prefix, label
            continue
        if isinstance(label, str):
            name, _, rest = label.partition("  ")
            yield prefix, name
        else:
            yield prefix, (label[0], label[1], "")
            rest = label[2].strip()
        below = prefix[:-len(guides[3])] + (guides[0] if prefix.endswith(guides[3]) else guides[1]) + "  "
        for piece in textwrap.wrap(rest, max(width - len(below), 20), break_long_words=False):
            yield below, piece if isinstance(label, str) else ("", "", piece)


def _ansi(con: Any) -> bool:
    """A terminal rich writes ANSI escape codes to, and nothing recorded or captured."""
    return (con.color_system is not None and not con.legacy_windows and not con.record and not con.is_jupyter
            and not getattr(con, "_buffer_index", 0) and not getattr(con, "_render_hooks", None))


def _append(text: Any, label: Label | str) -> None:
    if isinstance(label, str):
        text.append(label)
        return
    text.append(label[0], style="bold")
    if label[1]:
        text.append(label[1], style="cyan")
    text.append(label[2], style="dim")


def _rich_tree(con: Any, tree: ModuleTree) -> None:
    from rich.text import Text
    from rich.tree import Tree

    def text(label: Label | str) -> Text:
        t = Text()
        _append(t, label)
        return t

    top = Tree(text(module_label(tree, tree.root, tree.label)))
    stack: list[tuple[TreeNode, Any]] = [(tree.root, top)]
    while stack:
        node, at = stack.pop()
        for is_module, obj in _items(node):
            if is_module:
                sub = tree.nodes[obj]
                stack.append((sub, at.add(text(module_label(tree, sub, sub.name)))))
            else:
                at.add(text(leaf_label(obj)))
    con.print(top)
