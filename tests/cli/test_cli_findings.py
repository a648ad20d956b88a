"""Issue 21's smaller findings: stdin input, `-o -` without --to, the scheduler's label, diff CSV figures,
and the cast's lost values in one line."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()
STATECLI = [sys.executable, "-m", "statecli"]


def _env(tmp: Path) -> dict[str, str]:
    return os.environ | {"TMPDIR": str(tmp)}


def test_inspect_reads_stdin_and_pipes_into_itself(cnn: Path, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    with open(cnn, "rb") as f:
        got = subprocess.run([*STATECLI, "inspect", "-", "-f", "json"], stdin=f, capture_output=True,
                             env=_env(spool), check=False)
    assert got.returncode == 0, got.stderr
    names = {e["name"] for e in json.loads(got.stdout)["entries"]}
    assert names == set(torch.load(cnn, weights_only=True))
    # statecli into statecli: a conversion streamed to stdout, read back from stdin
    conv = subprocess.run([*STATECLI, "convert", str(cnn), "-o", "-", "--to", "safetensors"], capture_output=True,
                          check=False, env=_env(spool))
    assert conv.returncode == 0, conv.stderr
    back = subprocess.run([*STATECLI, "inspect", "-", "-f", "json"], input=conv.stdout, capture_output=True,
                          env=_env(spool), check=False)
    assert back.returncode == 0 and json.loads(back.stdout)["format"] == "safetensors", back.stderr
    assert list(spool.iterdir()) == []  # the spooled copies are gone
    diff = subprocess.run([*STATECLI, "diff", str(cnn), "-", "-q"], input=conv.stdout, capture_output=True,
                          env=_env(spool), check=False)
    assert diff.returncode == 0 and diff.stdout.decode().startswith("equal"), diff.stderr


def test_stdin_that_is_empty_is_one_error_line(tmp_path: Path) -> None:
    got = subprocess.run([*STATECLI, "inspect", "-"], input=b"", capture_output=True, env=_env(tmp_path), check=False)
    assert got.returncode == 2 and got.stderr.decode().count("\n") == 1 and b"stdin" in got.stderr
    assert list(tmp_path.iterdir()) == []


def test_stdin_is_named_stdin_everywhere_and_scan_reads_it(cnn: Path, tmp_path: Path) -> None:
    """`-` is <stdin> in a title, the JSON "path", a diff side, an error and scan's listing, never the spooled
    copy's temp path; scan and check read `-` as inspect and diff do (they said "no such file")."""
    data = cnn.read_bytes()
    runs = {"title": ["inspect", "-"], "json": ["inspect", "-", "-f", "json"], "diff": ["diff", "-", str(cnn)],
            "size": ["size", "-", "-f", "json"], "scan": ["scan", "-"], "scan json": ["scan", "-", "-f", "json"],
            "diff json": ["diff", "-", str(cnn), "-f", "json"],
            "error": ["show", "-", "no.such.entry"], "check": ["check", "-", "--no-nan", "-f", "json"]}
    out = {k: runner.invoke(app, argv, input=data) for k, argv in runs.items()}
    assert out["title"].stdout.startswith("<stdin>  torch zip"), out["title"].stdout
    assert json.loads(out["json"].stdout)["path"] == json.loads(out["size"].stdout)["path"] == "<stdin>"
    assert out["diff"].stdout.startswith("A <stdin> (torch zip)"), out["diff"].stdout
    assert json.loads(out["diff json"].stdout)["a"]["path"] == "<stdin>"
    assert out["scan"].exit_code == 0 and out["scan"].stdout.startswith("<stdin>  torch zip  safe"), out["scan"].output
    assert [f["path"] for f in json.loads(out["scan json"].stdout)["files"]] == ["<stdin>"]
    assert out["error"].exit_code == 2 and "<stdin>: no entry named 'no.such.entry'" in out["error"].output
    checked = json.loads(out["check"].stdout)  # check reads `-` too (its rules: --config or the command line)
    assert out["check"].exit_code == 0 and {f["path"] for f in checked["findings"]} == {"<stdin>"}, out["check"].output
    assert list(checked["rules_from"]) == ["<stdin>"]
    bad = runner.invoke(app, ["inspect", "-"], input=b"not a checkpoint at all")
    assert bad.exit_code == 2 and bad.output.count("<stdin>:") == 1, bad.output
    assert not any("statecli-stdin" in r.output for r in (*out.values(), bad))


def test_percentiles_with_an_inf_are_labelled_as_of_the_finite_values(tmp_path: Path) -> None:
    """[1, inf, 0.004]: max and mean are inf (torch's), |x| p50 0.502 is the median of the 2 finite values; the
    --stats table, `show` and the JSON say so (percentiles over finite values is the choice, as numpy's
    nanquantile would give after inf -> nan; torch.quantile over all values would give 1)."""
    torch.save({"w": torch.tensor([1.0, float("inf"), 0.004])}, tmp_path / "inf.pt")
    table = runner.invoke(app, ["inspect", str(tmp_path / "inf.pt"), "--stats"]).stdout
    assert "|x| p50/p99 and histogram are of the finite values only (1 tensor holds NaN/Inf" in table, table
    show = runner.invoke(app, ["show", str(tmp_path / "inf.pt"), "w"]).stdout
    assert "|x| p50 0.502  |x| p99 0.99 (percentiles of the 2 finite values)" in show, show
    assert "|x|" not in show.splitlines()[[i for i, x in enumerate(show.splitlines()) if x.startswith("min ")][0]]
    st = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "inf.pt"), "--stats", "-f", "json"]).stdout)
    stats = st["entries"][0]["stats"]
    assert (stats["percentiles_of"], stats["finite"], stats["max"], stats["mean"]) == ("finite values", 2, "inf", "inf")
    assert stats["p50_abs"] == pytest.approx(0.502)


def test_scheduler_state_is_not_called_optimizer(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()},
               tmp_path / "train.pt")
    torch.save(sched.state_dict(), tmp_path / "scheduler.pt")
    data = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "train.pt"), "-f", "json"]).stdout)
    roles = {c["name"]: c["role"] for c in data["containers"]}
    assert roles["optimizer"] == "optimizer" and roles["lr_scheduler"] == "scheduler"
    assert all(e["kind"] != "optimizer state" for e in data["entries"] if e["group"] == "lr_scheduler")
    text = runner.invoke(app, ["inspect", str(tmp_path / "train.pt")]).stdout
    assert "lr_scheduler (scheduler," in " ".join(text.split())
    alone = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "scheduler.pt"), "-f", "json"]).stdout)
    assert [c["role"] for c in alone["containers"]] == ["scheduler"]
    # strip --optimizer still removes both, each named for what it is
    out = runner.invoke(app, ["strip", str(tmp_path / "train.pt"), "--optimizer", "-o", str(tmp_path / "w.pt")])
    assert out.exit_code == 0 and "scheduler state" in out.stdout
    assert set(torch.load(tmp_path / "w.pt", weights_only=True)) == {"model"}


def test_diff_csv_has_rel_change_and_cosine(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = {"w": torch.randn(64), "v": torch.randn(8)}
    b = {"w": a["w"] + 0.1 * torch.randn(64), "v": a["v"].clone()}
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    got = runner.invoke(app, ["diff", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "-f", "csv"])
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(got.stdout))}
    x, y = a["w"].double(), b["w"].double()
    assert float(rows["w"]["rel_change"]) == pytest.approx(float((y - x).norm() / x.norm()), rel=1e-6)
    assert float(rows["w"]["cosine"]) == pytest.approx(float(torch.nn.functional.cosine_similarity(x, y, 0)), rel=1e-6)
    assert float(rows["v"]["rel_change"]) == 0.0


def test_cast_losses_are_one_line_unless_verbose_or_overflow(tmp_path: Path) -> None:
    src = tmp_path / "w.pt"
    torch.save({"a": torch.tensor([1.0, 1e-30]), "b": torch.tensor([2.0, 1e-30, 1e-31]), "c": torch.ones(3)}, src)
    plain = runner.invoke(app, ["cast", str(src), "--dtype", "half", "-o", str(tmp_path / "h.pt")])
    assert plain.exit_code == 0, plain.stderr
    assert "3 tiny value(s) underflowed to 0 in 2 storage(s)" in plain.stdout
    assert "values lost in the cast" not in plain.stdout and "warning" not in plain.stdout + plain.stderr
    verbose = runner.invoke(app, ["cast", str(src), "--dtype", "half", "-o", str(tmp_path / "v.pt"), "-v"])
    assert "values lost in the cast" in verbose.stdout
    torch.save({"a": torch.tensor([1.0, 1e6]), "b": torch.tensor([1e-30])}, src)
    over = runner.invoke(app, ["cast", str(src), "--dtype", "half", "-o", str(tmp_path / "o.pt")])
    assert "values lost in the cast" in over.stdout and "1 value(s) overflowed to inf in 1 storage(s)" in over.stdout
    assert "warning" in over.stdout


def test_quiet_rewrite_has_no_before_after_table(cnn: Path, tmp_path: Path) -> None:
    got = runner.invoke(app, ["cast", str(cnn), "--dtype", "half", "-o", str(tmp_path / "h.pt"), "-q"])
    assert got.exit_code == 0 and "before" not in got.stdout and "tensor bytes" not in got.stdout
    assert got.stdout.startswith("wrote ")
