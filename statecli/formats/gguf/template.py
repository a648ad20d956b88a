"""Static checks of the chat templates a GGUF carries (`tokenizer.chat_template`, `...chat_template.*`).
Runtimes render them with Jinja, and an unsandboxed render of a hostile template runs code
(llama-cpp-python, CVE-2024-34359); jinja2's sandbox acts only at render time. So each template is
parsed with jinja2's own parser (never rendered, never compiled) and the tree is checked for the
known ways out of a template: attribute/item access to private names (`__globals__`, `__class__`,
`_TemplateReference__context`) or introspection attributes (`mro`, `gi_frame`, `f_globals`), keys built
at render time (`x["__cl" ~ "ass__"]`, `x|attr(...)`, `attribute=` filters), `str.format`,
attribute access on Jinja's own global helpers (`lipsum`, `cycler`, `joiner`, `namespace`, `range`),
and `{% import %}`, `{% include %}`, `{% extends %}` (other templates: loaders, files)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

KEY_PREFIX = "tokenizer.chat_template"
MAX_TEMPLATE = 1 << 20  # real templates are a few KiB; a megabyte of Jinja is not a chat format

# Attributes that reach interpreter internals without a leading underscore.
INTROSPECTION = frozenset({
    "mro", "func_globals", "func_code", "func_closure", "im_func", "im_self", "im_class", "gi_frame", "gi_code",
    "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "f_globals", "f_locals", "f_builtins",
    "f_back", "f_code", "tb_frame", "tb_next", "co_code", "co_consts", "format", "format_map",
})
# Jinja's default globals: functions and classes whose attributes lead to their module's globals.
GLOBAL_HELPERS = frozenset({"lipsum", "cycler", "joiner", "namespace", "range", "dict", "self"})
ATTRIBUTE_FILTERS = frozenset({"map", "select", "reject", "selectattr", "rejectattr", "sort", "groupby", "unique",
                               "sum", "min", "max"})


def template_keys(metadata: dict[str, Any]) -> list[str]:
    return [k for k in metadata if k == KEY_PREFIX or k.startswith(KEY_PREFIX + ".")]


def _environment() -> Any:
    """A jinja2 Environment that parses what transformers' chat templates use: loop controls and the
    `{% generation %}` block (transformers' AssistantTracker). Nothing is rendered with it."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension

    class Generation(Extension):  # transformers' {% generation %}...{% endgeneration %}
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    return jinja2.Environment(extensions=["jinja2.ext.loopcontrols", Generation])


def check(key: str, source: str) -> tuple[list[str], list[str]]:
    """(findings, errors) for one template: findings are escape routes (exit 3), errors a template
    that cannot be checked (exit 2). Raises ModuleNotFoundError when jinja2 is not installed."""
    import jinja2

    if len(source) > MAX_TEMPLATE:
        return [f"{key}: a {len(source):,}-character chat template (real ones are a few KiB; not checked)"], []
    try:
        tree = _environment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [], [f"{key}: chat template does not parse (line {exc.lineno}: {exc.message}); not checked"]
    except RecursionError:
        return [f"{key}: chat template nests too deeply to check"], []
    found = list(dict.fromkeys(f"{key}: chat template {what} (line {line})" for what, line in _routes(tree)))
    return found, []


def _routes(tree: Any) -> Iterator[tuple[str, int]]:
    from jinja2 import nodes

    computed = _computed_names(tree)
    for node in _walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)):
            yield f"uses {{% {type(node).__name__.lower().replace('fromimport', 'from ... import')} %}}", line
        elif isinstance(node, nodes.Getattr):
            yield from _name_route("attribute", node.attr, line)
            if isinstance(node.node, nodes.Name) and node.node.name in GLOBAL_HELPERS:
                yield f"reads attribute {node.attr!r} of Jinja's {node.node.name!r}", line
        elif isinstance(node, nodes.Getitem):
            yield from _item_route(node, line)
            if isinstance(node.arg, nodes.Name) and node.arg.name in computed:
                yield f"reads an item by a key built at render time (variable {node.arg.name!r})", line
        elif isinstance(node, nodes.Filter):
            yield from _filter_route(node, line)
        elif isinstance(node, nodes.Const) and isinstance(node.value, str) and "__" in node.value:
            yield f"holds the string {node.value[:40]!r} (a private Python name)", line


def _name_route(what: str, name: str, line: int) -> Iterator[tuple[str, int]]:
    if name.startswith("_") or name in INTROSPECTION:
        yield f"reads {what} {name!r}", line


def _built(expr: Any) -> bool:
    """Whether an expression builds a string at render time (a concatenation, a filter, a call, %)."""
    from jinja2 import nodes

    if isinstance(expr, (nodes.Concat, nodes.Filter, nodes.Call, nodes.Mod)):
        return True
    return isinstance(expr, nodes.Add) and any(
        (isinstance(n, nodes.Const) and isinstance(n.value, str)) or _built(n) for n in (expr.left, expr.right))


def _computed_names(tree: Any) -> set[str]:
    """Variables `{% set %}` to a string built at render time: used as a key, they are a computed key."""
    from jinja2 import nodes

    return {n.target.name for n in _walk(tree) if isinstance(n, nodes.Assign) and isinstance(n.target, nodes.Name)
            and _built(n.node)}


def _item_route(node: Any, line: int) -> Iterator[tuple[str, int]]:
    from jinja2 import nodes

    arg = node.arg
    if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
        yield from _name_route("item", arg.value, line)
    elif _built(arg):
        yield "reads an item by a key built at render time", line


def _filter_route(node: Any, line: int) -> Iterator[tuple[str, int]]:
    from jinja2 import nodes

    if node.name == "attr":
        yield "uses the attr filter (attribute access by a string)", line
    if node.name in ATTRIBUTE_FILTERS:
        for kw in node.kwargs:
            if kw.key == "attribute":
                if not isinstance(kw.value, nodes.Const) or not isinstance(kw.value.value, str):
                    yield f"passes a computed attribute= to the {node.name} filter", line
                else:
                    for part in kw.value.value.split("."):
                        yield from _name_route(f"attribute (via {node.name})", part, line)


def _walk(node: Any) -> Iterator[Any]:
    """Every node, iteratively (a deep template must not exhaust the stack here)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.iter_child_nodes())


__all__ = ["KEY_PREFIX", "check", "template_keys"]
