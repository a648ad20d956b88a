"""Optional dependencies: the distribution's name, which extra brings which module, and the one line
that tells a user what to install."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from .errors import UsageError

# The name on PyPI. `statecli` there is an unrelated project, so every install line says this one;
# the import package and the command stay `statecli`.
DISTRIBUTION = "torch-statecli"


class Extra(StrEnum):
    """The optional extras declared in pyproject.toml (core: typer, rich, safetensors, numpy, ml_dtypes)."""

    TORCH = "torch"  # --model builds, Hugging Face builds, DCP writes, the torch comparison kernels
    HF = "hf"  # transformers (and torch): classify against a Hugging Face config.json
    REMOTE = "remote"  # fsspec backends: s3://, https://, hf://
    TUI = "tui"  # textual: statecli browse
    GGUF = "gguf"  # gguf-py (dequantizing GGUF values, tensor name maps) and jinja2 (chat template checks)
    DASK = "dask"  # distributed: statecli batch --executor dask:local / dask://HOST:PORT


# Top-level import name -> the extra that installs it. A module missing at run time is looked up
# here by the exception's `name`, never by its message.
PROVIDED_BY: dict[str, Extra] = {
    "torch": Extra.TORCH,
    "transformers": Extra.HF,
    "fsspec": Extra.REMOTE,
    "s3fs": Extra.REMOTE,
    "aiohttp": Extra.REMOTE,
    "huggingface_hub": Extra.REMOTE,
    "textual": Extra.TUI,
    "gguf": Extra.GGUF,
    "jinja2": Extra.GGUF,
    "distributed": Extra.DASK,
    "dask": Extra.DASK,
}


def install_command(extra: Extra) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def install_hint(extra: Extra) -> str:
    return f"install the {extra} extra: {install_command(extra)}"


class MissingExtra(UsageError):
    """A command needs a module that only an optional extra installs (exit 2, like any usage error)."""

    def __init__(self, module: str, extra: Extra) -> None:
        super().__init__(None, f"this command needs {module}, which is not installed", install_hint(extra))
        self.extra = extra


def missing_extra(exc: ModuleNotFoundError) -> MissingExtra | None:
    """The MissingExtra for an import that failed because an extra is not installed, else None (a
    missing module of our own or of a dependency is a bug, not a choice the user made)."""
    top = (exc.name or "").split(".")[0]
    extra = PROVIDED_BY.get(top)
    return MissingExtra(top, extra) if extra is not None else None


def require(module: str) -> None:
    """Fail with the one line naming the extra unless `module` (a key of PROVIDED_BY) is importable."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtra(module, PROVIDED_BY[module])


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """The optional libraries' own lines held back while statecli runs with them (torch, transformers and what
    they import: torchao's "Failed to load ..._C_mxfp8.so", torch's register_constant() deprecation,
    transformers' advice), so that statecli's stderr carries only its own lines: every logger at WARNING and
    below (statecli reports through its renderers, never through logging), every warning, and torch's C++
    warnings unless the user set TORCH_CPP_LOG_LEVEL (torch reads it when first imported). The CLI's entry point
    holds a whole command in it (transformers imports lazily, on attribute access, anywhere below)."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    disabled = logging.root.manager.disable
    logging.disable(max(disabled, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
