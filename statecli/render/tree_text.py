"""A ModuleTree in the terminal (`inspect --tree`): modules with their totals, tensors as leaves.

rich's Tree costs ~100 us a line (6 s for 50,000 tensors), so piped output and big trees are
written as guide-prefixed lines directly, as print_grid does for tables; a small tree on a terminal
keeps rich's Tree."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..analyses.module_tree import ModuleTree, TreeNode, tree_path
from ..state import Entry
from ..units import fmt_bytes, fmt_count, fmt_shape
from .grid import _plain
from .text import escape

GUIDES = ("    ", "│   ", "├── ", "└── ")  # rich's own: space, continue, branch, last branch
ASCII_GUIDES = ("    ", "|   ", "+-- ", "`-- ")
RICH_LIMIT = 2_000  # tensors: above it a styled tree is written line by line, not through rich's Tree

Segment = tuple[str, str]  # (text, rich style)


def module_label(tree: ModuleTree, node: TreeNode, name: str) -> list[Segment]:
    out = [(escape(name), "bold")]
    cls = tree.classes.get(node.path)
    if cls:
        out.append((f" ({escape(cls.rsplit('.', 1)[-1])})", "cyan"))
    out.append((f"  {node.tensors} tensors, {fmt_count(node.numel)} elements, {fmt_bytes(node.nbytes)}", "dim"))
    return out


def leaf_label(e: Entry) -> list[Segment]:
    t = e.tensor
    assert t is not None
    leaf = tree_path(e).rsplit(".", 1)[-1]
    return [(f"{escape(leaf)}  {e.kind}  {t.dtype} {fmt_shape(t.shape)}  {fmt_bytes(t.nbytes)}", "")]


def _items(node: TreeNode) -> list[tuple[str, Any]]:
    """A module's rows: its submodules, then its tensors, in model order."""
    return [("m", c) for c in node.children] + [("t", e) for e in node.leaves if e.tensor is not None]


def tree_lines(tree: ModuleTree, guides: tuple[str, str, str, str] = GUIDES) -> Iterator[tuple[str, list[Segment]]]:
    """(guide prefix, label) per line, root first, depth first; a loop, not recursion: a name may
    have thousands of dots."""
    yield "", module_label(tree, tree.root, tree.label)
    stack: list[list[Any]] = [[_items(tree.root), 0, ""]]
    while stack:
        frame = stack[-1]
        items, i, prefix = frame
        if i == len(items):
            stack.pop()
            continue
        frame[1] = i + 1
        last = i == len(items) - 1
        what, obj = items[i]
        head = prefix + (guides[3] if last else guides[2])
        if what == "m":
            node = tree.nodes[obj]
            yield head, module_label(tree, node, node.name)
            stack.append([_items(node), 0, prefix + (guides[0] if last else guides[1])])
        else:
            yield head, leaf_label(obj)


def print_tree(con: Any, tree: ModuleTree) -> None:
    """Print `tree` on a rich console."""
    from rich.control import strip_control_codes
    from rich.text import Text

    guides = GUIDES if (con.encoding or "").lower().startswith("utf") else ASCII_GUIDES
    if _plain(con):  # no styles: the text rich would write, whole lines for grep and scripts
        chunk: list[str] = []
        for prefix, segs in tree_lines(tree, guides):
            chunk.append(prefix + strip_control_codes("".join(s for s, _ in segs)) + "\n")
            if len(chunk) >= 4096:
                con.file.write("".join(chunk))
                chunk = []
        con.file.write("".join(chunk))
        return
    if tree.root.tensors <= RICH_LIMIT:
        _rich_tree(con, tree)
        return
    out = Text(no_wrap=True, overflow="ignore")
    for n, (prefix, segs) in enumerate(tree_lines(tree, guides)):
        if n:
            out.append("\n")
        out.append(prefix, style="dim")
        for s, style in segs:
            out.append(s, style=style or None)
    con.print(out, soft_wrap=True)


def _rich_tree(con: Any, tree: ModuleTree) -> None:
    from rich.text import Text
    from rich.tree import Tree

    def text(segs: list[Segment]) -> Text:
        t = Text()
        for s, style in segs:
            t.append(s, style=style or None)
        return t

    top = Tree(text(module_label(tree, tree.root, tree.label)))
    stack: list[tuple[TreeNode, Any]] = [(tree.root, top)]
    while stack:
        node, at = stack.pop()
        for what, obj in _items(node):
            if what == "m":
                sub = tree.nodes[obj]
                stack.append((sub, at.add(text(module_label(tree, sub, sub.name)))))
            else:
                at.add(text(leaf_label(obj)))
    con.print(top)
