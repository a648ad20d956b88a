"""statecli commands in forked children of a warm interpreter: each command is a real process (its own fds 0-2 on
files or a pty, exit code, peak RSS and CPU from wait4, an address-space limit, a timeout that SIGKILLs it), but
the interpreter start and the imports that every `python -m statecli` pays (~0.15 s, and 2-4 s where torch and
transformers load) are paid once per pytest worker. The forked child's peak RSS includes the imports, as a fresh
process's would. Tests whose subject is the start itself (what a command imports, the entry point, signals, a
library's lines at import) keep `subprocess` and a fresh interpreter.

    run(["inspect", "x.pt"], kind="lean")    # the interpreter `python -m statecli` is before it reads argv
    run([...], kind="torch")                 # ... with torch imported (rewrites, .pt2, values)
    run([...], kind="hf")                    # ... and transformers (config-driven classification)
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# "statecli.*": every module of the package (a command's renderers, analyses and formats, imported lazily by a
# fresh process), for the kinds whose children's memory no test measures
PRELOADS = {"lean": ("statecli.cli",), "torch": ("statecli.cli", "torch", "safetensors.torch", "statecli.*"),
            "hf": ("statecli.cli", "torch", "safetensors.torch", "transformers", "transformers.modeling_utils",
                   "statecli.*")}

_ZYGOTE = r"""
import importlib, io, json, os, resource, select, signal, sys, traceback, warnings

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # what the CLI sets before it imports torch
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name in sys.argv[1:]:
        if name.endswith(".*"):
            import pkgutil
            package = importlib.import_module(name[:-2])
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                try:
                    importlib.import_module(info.name)
                except ImportError:  # a module of an optional extra this environment lacks
                    pass
        else:
            importlib.import_module(name)
control_in, control_out = os.fdopen(os.dup(0), "r"), os.fdopen(os.dup(1), "w")
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1):  # a child's fds 0-2 are its own files, never the control pipe
    os.dup2(null, fd)


def stream(fd, mode):
    tty = os.isatty(fd)
    f = open(fd, mode, encoding="utf-8", errors="backslashreplace" if fd == 2 else "strict", closefd=False,
             buffering=1 if (tty or fd == 2) and mode == "w" else -1)
    if mode == "w" and os.environ.get("PYTHONUNBUFFERED"):
        f.reconfigure(write_through=True)
    return f


def child(req):
    code = 1
    try:
        if req["as_limit"]:
            resource.setrlimit(resource.RLIMIT_AS, (req["as_limit"], req["as_limit"]))
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        for fd, path in enumerate(req["stdio"]):
            flags = os.O_RDWR | os.O_NOCTTY if path.startswith("/dev/pts/") else (
                os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            f = os.open(path, flags)
            os.dup2(f, fd)
            os.close(f)
        sys.stdin, sys.stdout, sys.stderr = stream(0, "r"), stream(1, "w"), stream(2, "w")
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        sys.argv = [req["argv0"], *req["argv"]]
        sys.modules["__main__"] = importlib.import_module("statecli.__main__")  # click's "python -m statecli"
        from statecli.cli import main
        try:
            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            import atexit
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(code)


control_out.write("ready\n")
control_out.flush()
for line in control_in:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        control_in.close()
        control_out.close()
        child(req)
    handle = os.pidfd_open(pid)
    ended = select.select([handle], [], [], req["timeout"])[0]
    if not ended:
        os.kill(pid, signal.SIGKILL)
    _, status, use = os.wait4(pid, 0)
    os.close(handle)
    control_out.write(json.dumps({"code": os.waitstatus_to_exitcode(status) if ended else "timeout",
                                  "rss_mib": use.ru_maxrss / 1024, "cpu_s": use.ru_utime + use.ru_stime}) + "\n")
    control_out.flush()
"""


@dataclass
class Ran:
    returncode: int | str  # "timeout" when it ran past its timeout (then SIGKILLed)
    stdout: str
    stderr: str
    rss_mib: float
    cpu_s: float


_zygotes: dict[str, subprocess.Popen[str]] = {}
# `python -m statecli` names itself this way in click's usage lines
_ARGV0 = str(Path(__file__).resolve().parents[1] / "statecli" / "__main__.py")


def _zygote(kind: str) -> subprocess.Popen[str]:
    proc = _zygotes.get(kind)
    if proc is None or proc.poll() is not None:
        # huggingface_hub reads its folders and offline switch when imported: a private, offline hub for all
        env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": tempfile.mkdtemp(prefix="statecli-warm-hf-")}
        proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE, *PRELOADS[kind]], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n", f"the {kind} interpreter did not start"
        _zygotes[kind] = proc
    return proc


@atexit.register
def _stop() -> None:
    for proc in _zygotes.values():
        proc.kill()
        proc.wait()


def run_fds(argv: list[str], stdio: tuple[str, str, str], *, kind: str = "lean", env: dict[str, str] | None = None,
            cwd: str | Path | None = None, timeout: float = 120, as_limit: int = 0) -> dict[str, Any]:
    """`statecli argv` with fds 0, 1 and 2 opened on the paths in `stdio` (a pty's /dev/pts/N read-write, files
    appended to): {"code", "rss_mib", "cpu_s"}."""
    proc = _zygote(kind)
    assert proc.stdin is not None and proc.stdout is not None
    req = {"argv": [str(a) for a in argv], "argv0": _ARGV0, "stdio": list(stdio), "timeout": timeout,
           "env": dict(os.environ if env is None else env), "cwd": str(cwd or os.getcwd()), "as_limit": as_limit}
    proc.stdin.write(json.dumps(req) + "\n")
    proc.stdin.flush()
    reply: dict[str, Any] = json.loads(proc.stdout.readline())
    return reply


def run(argv: list[str], *, input: str | bytes | None = None, kind: str = "lean", env: dict[str, str] | None = None,
        cwd: str | Path | None = None, timeout: float = 120, as_limit: int = 0) -> Ran:
    """`statecli argv` with `input` on stdin (a file; else /dev/null), stdout and stderr read back as UTF-8 text
    (binary output: use run_fds with files of your own)."""
    with tempfile.TemporaryDirectory(prefix="statecli-warm-") as tmp:
        paths = [os.devnull, os.path.join(tmp, "out"), os.path.join(tmp, "err")]
        if input is not None:
            paths[0] = os.path.join(tmp, "in")
            Path(paths[0]).write_bytes(input.encode() if isinstance(input, str) else input)
        reply = run_fds(argv, (paths[0], paths[1], paths[2]), kind=kind, env=env, cwd=cwd, timeout=timeout,
                        as_limit=as_limit)
        out, err = (Path(p).read_text(errors="replace") if os.path.exists(p) else "" for p in paths[1:])
    return Ran(reply["code"], out, err, reply["rss_mib"], reply["cpu_s"])
