"""Options of the commands whose output feeds CI (scan, check): the SARIF format and a baseline."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Optional

import typer

from ..state import OutputFormat


class CiFormat(StrEnum):
    """The data formats plus SARIF 2.1.0 (GitHub code scanning)."""

    TABLE = OutputFormat.TABLE.value
    JSON = OutputFormat.JSON.value
    CSV = OutputFormat.CSV.value
    MD = OutputFormat.MD.value
    SARIF = OutputFormat.SARIF.value


CiFormatOpt = Annotated[CiFormat, typer.Option("--format", "-f", help="Output format (sarif: SARIF 2.1.0 for code "
                                                                       "scanning).")]
BaselineOpt = Annotated[Optional[str], typer.Option("--baseline", help="JSON or TOML file of accepted findings, each "
                                                    "with an owner and an expiry date: they no longer fail the run "
                                                    "until they expire.", metavar="FILE")]
