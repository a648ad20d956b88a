"""Messages: every step's warnings and notes reach stderr for every command, rewrites included, and
never stdout (so `-f json | jq` stays valid); the Checkpoint that carries them cannot be changed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()

UNTRUSTED = "torch.load would need weights_only=False"  # the untrusted-globals warning
REWRITE_NOTE = "the input references non-allowlisted globals"  # rewrite.plan's note about them


def _run(args: list[str]) -> tuple[str, str]:
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    return result.stdout, result.stderr


def test_convert_warns_about_untrusted_globals_as_inspect_does(samples: Path, tmp_path: Path) -> None:
    src = str(samples / "full_model.pt")
    _, inspect_err = _run(["inspect", src])
    warning = next(line for line in inspect_err.splitlines() if UNTRUSTED in line)
    out, err = _run(["convert", src, "-o", str(tmp_path / "out.safetensors")])
    assert warning in err.splitlines()  # the same line inspect prints, word for word
    assert UNTRUSTED not in out


def test_rewrite_plan_note_is_printed_on_stderr(samples: Path, tmp_path: Path) -> None:
    for cmd in (["convert"], ["cast", "--dtype", "half"], ["strip", "--buffers"]):
        out, err = _run([*cmd, str(samples / "full_model.pt"), "-o", str(tmp_path / f"{cmd[0]}.pt")])
        assert REWRITE_NOTE in err, cmd
        assert REWRITE_NOTE not in out and "note:" not in out, cmd


def test_quiet_drops_the_messages(samples: Path, tmp_path: Path) -> None:
    _, err = _run(["convert", str(samples / "full_model.pt"), "-o", str(tmp_path / "q.pt"), "-q"])
    assert UNTRUSTED not in err and REWRITE_NOTE not in err


@pytest.mark.parametrize("args", [
    ["inspect", "{m}"],
    ["size", "{m}"],
    ["diff", "{m}", "{m}"],
    ["show", "{m}", "{name}"],
    ["scan", "{m}"],
    ["check", "{m}"],
    ["convert", "{m}", "-o", "{tmp}/c.safetensors"],
    ["convert", "{m}", "--dry-run"],
    ["cast", "{m}", "--dtype", "half", "-o", "{tmp}/h.pt"],
    ["strip", "{m}", "--buffers", "-o", "{tmp}/s.pt"],
    ["move", "{m}", "--device", "cpu", "-o", "{tmp}/m.pt"],
    ["rename", "{m}", "--add-prefix", "net.", "-o", "{tmp}/r.pt"],
])
def test_json_stdout_holds_the_result_only(samples: Path, tmp_path: Path, args: list[str]) -> None:
    """A checkpoint that draws a warning: its text is on stderr and stdout parses as one JSON document."""
    from statecli.load import load_checkpoint

    m = str(samples / "full_model.pt")
    name = next(e.name for e in load_checkpoint(m).entries if e.tensor is not None)
    argv = [a.format(m=m, tmp=tmp_path, name=name) for a in args] + ["-f", "json"]
    out, err = _run(argv)
    json.loads(out)
    assert "warning:" not in out and "note:" not in out
    if args[0] not in ("scan", "check"):  # these report globals in their own result, not as a message
        assert UNTRUSTED in err


def test_diff_notes_go_to_stderr(tmp_path: Path) -> None:
    """A diff's own notes (here: a tie on one side only) are messages too, not table rows."""
    import torch

    w = torch.ones(2, 2)
    torch.save({"a": w, "b": w}, tmp_path / "tied.pt")
    torch.save({"a": w.clone(), "b": w.clone()}, tmp_path / "untied.pt")
    out, err = _run(["diff", str(tmp_path / "tied.pt"), str(tmp_path / "untied.pt")])
    assert "note:" in err and "note:" not in out


def test_checkpoint_is_immutable(samples: Path) -> None:
    from statecli.load import load_checkpoint
    from statecli.notes import Note, NoteKind

    ck = load_checkpoint(str(samples / "full_model.pt"))
    for field, value in (("notes", []), ("messages", ()), ("entries", []), ("container", "x"), ("format", "y")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(ck, field, value)
    assert any(n.kind is NoteKind.UNTRUSTED_GLOBALS for n in ck.messages)
    more = ck.with_notes([Note(NoteKind.CONFIG, "extra")])
    assert "extra" in more.notes and "extra" not in ck.notes  # a new Checkpoint; the first is unchanged
