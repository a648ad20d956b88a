"""`statecli browse`: the interactive terminal browser (needs the optional `tui` extra)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .app import app
from .options import KeyOpt, PathArg, StripOpt


@app.command()
def browse(
    path: PathArg,
    path_b: Annotated[Optional[str], typer.Argument(help="A second checkpoint: show what changed, module by module "
                                                         "(reads every value of both).", show_default=False,
                                                    metavar="PATH_B")] = None,
    rtol: Annotated[float, typer.Option("--rtol", min=0.0, help="Relative tolerance (torch.allclose).", metavar="FLOAT")] = 1e-5,
    atol: Annotated[float, typer.Option("--atol", min=0.0, help="Absolute tolerance (torch.allclose).", metavar="FLOAT")] = 1e-8,
    key: KeyOpt = None,
    key_b: Annotated[Optional[str], typer.Option("--key-b", help="Container of PATH_B's model state (default: --key).",
                                                 metavar="KEY")] = None,
    strip_prefix: StripOpt = None,
) -> None:
    """Browse a checkpoint in the terminal: module tree, entries, values on demand; with two, what moved where.

    Example: statecli browse sample_checkpoints/cnn.pt sample_checkpoints/train_ckpt.pt --key-b model_ema
    """
    from ..tui import require_textual

    require_textual()  # before reading anything: a missing extra is one line, exit 2
    from ..analyses.diff import diff
    from ..analyses.inspect import inspect
    from ..open import open_checkpoint
    from ..render import Output, progress_callback
    from ..tui import browse_data, run

    ck = open_checkpoint(path, key, strip_prefix=tuple(strip_prefix or ())).checkpoint
    compared = None
    if path_b is not None:
        ck_b = open_checkpoint(path_b, key_b or key, strip_prefix=tuple(strip_prefix or ())).checkpoint
        with progress_callback(Output()) as progress:
            compared = diff(ck, ck_b, rtol=rtol, atol=atol, progress=progress, by_module=True)
    run(browse_data(inspect(ck), compared))
