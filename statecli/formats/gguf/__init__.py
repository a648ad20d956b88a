"""GGUF (llama.cpp's format) as a FormatHandler: header.py reads and validates a header, read.py makes
the checkpoint (split models as one), checks.py and template.py scan it, values.py dequantizes."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ...state import Checkpoint, Format
from .._common import RawCheckpoint
from ..handler import BaseHandler
from .header import MAGIC

if TYPE_CHECKING:
    from ...io.values import ValueReader
    from ...pickle.pickles import Findings


class GgufHandler(BaseHandler):
    """GGUF files: no pickle; the chat templates are the code a runtime runs."""

    format = Format.GGUF

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        return head.startswith(MAGIC)

    def read(self, source: str) -> RawCheckpoint:
        from .read import read

        return read(source)

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        from .checks import hidden_findings, template_findings
        from .read import read_parts

        parts = read_parts(source)
        found, unchecked = template_findings(parts)
        findings.templates += found
        findings.problems += hidden_findings(parts)
        findings.errors += unchecked
        return Format.GGUF

    def values(self, ck: Checkpoint) -> AbstractContextManager[ValueReader]:
        from .values import gguf_reader

        return gguf_reader(ck)


HANDLER = GgufHandler()

__all__ = ["HANDLER", "GgufHandler"]
