"""What `scan` and `read` check in a GGUF beyond its header's structure (header.py refuses a corrupt
one): the chat templates (template.py) and bytes of the data section no tensor accounts for."""

from __future__ import annotations

from ...extras import Extra, install_hint
from .header import Header
from .template import check, template_keys


def template_findings(parts: tuple[Header, ...]) -> tuple[list[str], list[str]]:
    """(findings, unchecked): escape routes in the templates of every part; and why a template could
    not be checked (it does not parse, or jinja2 is not installed: fail closed, the caller decides)."""
    found: list[str] = []
    unchecked: list[str] = []
    for head in parts:
        for key in template_keys(head.metadata):
            source = head.metadata[key]
            if not isinstance(source, str):
                found.append(f"{key}: a chat template that is not a string ({type(source).__name__})")
                continue
            try:
                f, e = check(key, source)
            except ModuleNotFoundError:
                unchecked.append(f"{key}: chat template not checked: jinja2 is not installed "
                                 f"({install_hint(Extra.GGUF)})")
                continue
            found += f
            unchecked += e
    return found, unchecked


def hidden_findings(parts: tuple[Header, ...]) -> list[str]:
    """Bytes past the tensors' padding: data no GGUF reader reads, the place an appended payload hides."""
    return [f"{p.path}: {b - a:,} bytes at {a:,}..{b:,} belong to no tensor" for p in parts for a, b in p.hidden]


__all__ = ["hidden_findings", "template_findings"]
