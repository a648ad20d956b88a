"""`size` of a training checkpoint (issue 21): the headline figures are the model state's (EMA copies and
optimizer state are no model parameters), the other containers are listed as what they are, and every
view (text, JSON, HTML, -q) states the same figures by one rule (distinct storage) as the HTML tree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app
from statecli.units import fmt_bytes, fmt_count

runner = CliRunner()


@pytest.fixture
def train(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.Linear(32, 4))
    ema = torch.optim.swa_utils.AveragedModel(net)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(8, 16)).sum().backward()
    opt.step()
    ema.update_parameters(net)
    path = tmp_path / "train.pt"
    torch.save({"model": net.state_dict(), "model_ema": ema.module.state_dict(), "optimizer": opt.state_dict(),
                "epoch": 1}, path)
    return path, net


def test_headline_is_the_model_states(train: tuple[Path, torch.nn.Module]) -> None:
    path, net = train
    params = sum(p.numel() for p in net.parameters())
    model_bytes = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    data = json.loads(runner.invoke(app, ["size", str(path), "-f", "json"]).stdout)
    assert data["parameters"] == params
    assert data["model_state"]["nbytes"] == model_bytes
    assert {c["name"]: c["role"] for c in data["other_containers"]} == {"optimizer": "optimizer", "model_ema": "ema"}
    text = runner.invoke(app, ["size", str(path)]).stdout.splitlines()
    assert text[1].startswith(f"model state (model): {fmt_count(params)} params, {fmt_bytes(model_bytes)}")
    assert text[2].startswith("other containers: ") and "model_ema (ema)" in text[2] and "optimizer (optimizer)" in text[2]
    quiet = runner.invoke(app, ["size", str(path), "-q"]).stdout
    assert f"{fmt_count(params)} params" in quiet and fmt_count(2 * params) not in quiet


def test_html_page_totals_follow_one_rule(train: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = train
    data = json.loads(runner.invoke(app, ["size", str(path), "-f", "json"]).stdout)
    page = runner.invoke(app, ["size", str(path), "-f", "html"]).stdout
    root = re.search(r'<details class=root open><summary>.*?<span class="dim">(\d+) tensors, ([^<]+)</span>', page)
    assert root is not None
    assert (int(root.group(1)), root.group(2)) == (data["tensors"], fmt_bytes(data["nbytes"]))
    assert f"all tensors: {fmt_bytes(data['nbytes'])} in {data['tensors']} tensors" in page
    assert f"{fmt_bytes(data['model_state']['nbytes'])} in {data['model_state']['tensors']} tensors" in page
    for c in data["other_containers"]:  # each container's subtree carries the bytes the headline gives it
        node = re.search(rf'<span class="name">{c["name"]}</span> <span class="dim">(\d+) tensors, ([^<]+)</span>', page)
        assert node is not None and node.group(2) == fmt_bytes(c["nbytes"]), c["name"]
        assert f"{c['name']} ({c['role']}) {fmt_bytes(c['nbytes'])}" in page


def test_by_module_rows_of_other_containers_say_so(train: tuple[Path, torch.nn.Module]) -> None:
    """The by-module table holds the model's modules and, beside them, the other containers: those rows are
    labelled with their role, so `optimizer` does not read as a module of the model."""
    path, net = train
    for depth in ("1", "2"):
        lines = runner.invoke(app, ["size", str(path), "--depth", depth], env={"COLUMNS": "120"}).stdout.splitlines()
        table = lines[lines.index(f"by module (depth {depth})") + 2:lines.index("by kind")]
        names = {re.split(r"\s{2,}", line.strip())[0] for line in table}
        assert any(n.startswith("optimizer") and n.endswith("(optimizer container)") for n in names), names
        assert any(n.startswith("model_ema") and n.endswith("(ema container)") for n in names), names
        modules = {n for n, _ in net.named_modules() if n and "." not in n}
        assert modules & names, names  # the model's own modules keep their bare names
