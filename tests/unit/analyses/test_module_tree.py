"""The one module tree: every node's totals against the plain definition (the tensors below it, each
storage once), the root equal to the summary total in every view of a tied model, deep names
without recursion, and the fast text writers equal to rich's Tree."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from statecli.analyses.inspect import inspect, summarize
from statecli.analyses.module_tree import TOP, build_tree, tree_path
from statecli.analyses.size import size_of
from statecli.cli import app
from statecli.errors import UsageError, user_regex
from statecli.load import load_checkpoint
from statecli.render import tree_text
from statecli.render.html import _leaf, tree
from statecli.state import Entry, Evidence, Kind, Source, TensorInfo
from statecli.storage import unique_storage_bytes
from statecli.tui import browse_data
from statecli.units import fmt_bytes

runner = CliRunner()


def _entries(seed: int) -> list[Entry]:
    """Tensors under random module paths in two containers, sharing storages across modules and
    files (the same key in two files is two storages), some meta, some without a storage key."""
    rnd = random.Random(seed)
    out = []
    for i in range(250):
        name = ".".join(rnd.choice("abc") for _ in range(rnd.randint(1, 4))) + f".t{i}"
        key = rnd.choice([None, f"s{rnd.randint(0, 60)}"])
        t = TensorInfo(rnd.choice(["float32", "int8"]), (rnd.randint(0, 4), 3), rnd.choice(["cpu", "cpu", "meta"]),
                       storage_key=key, source=rnd.choice(["f1", "f2"]), storage_nbytes=rnd.choice([None, 64]))
        out.append(Entry(name, t, kind=rnd.choice([Kind.PARAMETER, Kind.BUFFER]), evidence=Evidence(Source.RULE),
                         group=rnd.choice(["", "", "ema"])))
    return out


def test_every_node_counts_the_tensors_below_it_and_each_storage_once() -> None:
    for seed in range(8):
        es = _entries(seed)
        mt = build_tree(es)
        for node in mt.walk():
            below = [e for e in es if node.path == TOP or tree_path(e).startswith(node.path + ".")]
            assert list(mt.entries_under(node.path)) == below
            assert node.tensors == len(below) and node.numel == sum(e.tensor.numel for e in below if e.tensor)
            assert node.nbytes == unique_storage_bytes(below)[1], node.path
        total = summarize(es).total
        assert (mt.root.tensors, mt.root.numel, mt.root.nbytes) == (total.tensors, total.numel, total.nbytes)
        assert {n.path for n in mt.walk()} == set(mt.nodes)  # every module reachable, in model order


@pytest.fixture
def tied(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"emb": torch.nn.Embedding(100, 16), "body": torch.nn.Linear(16, 16),
                                 "head": torch.nn.Linear(16, 100, bias=False)})
    model["head"].weight = model["emb"].weight
    path = tmp_path / "tied.pt"
    torch.save(model.state_dict(), path)
    return path


def test_tree_root_is_the_summary_total_in_every_view(tied: Path) -> None:
    ck = load_checkpoint(str(tied))
    total = size_of(ck).total
    emb = 100 * 16 * 4
    assert total.nbytes == emb + 16 * 16 * 4 + 16 * 4  # the tied storage once
    text = runner.invoke(app, ["inspect", str(tied), "--tree"]).stdout
    root = text.splitlines()[1]
    assert root.startswith("(root)") and root.endswith(f"{total.tensors} tensors, {total.numel / 1e3:.1f} K elements, "
                                                      f"{fmt_bytes(total.nbytes)}")
    summary = json.loads(runner.invoke(app, ["inspect", str(tied), "--tree", "-f", "json"]).stdout)
    assert summary["summary"]["total"]["nbytes"] == total.nbytes
    nodes = {n["module"]: n for n in summary["tree"]}
    assert nodes["(root)"]["nbytes"] == total.nbytes and nodes["(root)"]["tensors"] == total.tensors
    assert nodes["emb"]["nbytes"] == nodes["head"]["nbytes"] == emb  # each holder shows the storage
    page = runner.invoke(app, ["inspect", str(tied), "-f", "html"]).stdout
    head = re.search(r'<details class=root open><summary>.*?</summary>', page)
    assert head is not None and f"{total.tensors} tensors, {fmt_bytes(total.nbytes)}" in head.group(0)
    size_page = runner.invoke(app, ["size", str(tied), "-f", "html"]).stdout
    assert f"{total.tensors} tensors, {fmt_bytes(total.nbytes)}</span></summary>" in size_page
    browse = browse_data(inspect(ck)).tree()
    assert browse.root.nbytes == total.nbytes and browse["head"].nbytes == emb
    by_module = {m["module"]: m["nbytes"] for m in
                 json.loads(runner.invoke(app, ["size", str(tied), "-f", "json"]).stdout)["by_module"]}
    assert by_module == {"emb": emb, "body": 16 * 16 * 4 + 16 * 4, "head": emb}
    show = json.loads(runner.invoke(app, ["show", str(tied), "head.weight", "-f", "json"]).stdout)
    assert [(lv["module"], lv["nbytes"]) for lv in show["module_path"]] == [("(root)", total.nbytes), ("head", emb)]


def test_a_name_with_thousands_of_dots_needs_no_recursion() -> None:
    name = ".".join(["m"] * 5000) + ".w"
    mt = build_tree([Entry(name, TensorInfo("float32", (2,), storage_key="0"), kind=Kind.PARAMETER)])
    assert mt.root.nbytes == 8 and len(mt.nodes) == 5001
    lines = list(tree_text.tree_lines(mt))
    assert len(lines) == 5002 and lines[-1][1].startswith("w  parameter")
    assert tree(mt, _leaf).count("<details") == 5001


def _render(mt: object, terminal: bool) -> str:
    out = io.StringIO()
    con = Console(file=out, force_terminal=terminal, color_system="standard" if terminal else None, width=400)
    tree_text.print_tree(con, mt)  # type: ignore[arg-type]
    return out.getvalue()


def test_fast_writers_write_what_rich_tree_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped output and big trees skip rich's Tree; the lines are the same, styles included."""
    es = _entries(3)
    for e in es[:5]:  # names are data: control characters are shown escaped, never written
        es.append(Entry(e.name + "\x1b[31m", e.tensor, kind=e.kind, group=e.group))
    mt = build_tree([e for e in es if e.tensor is not None], classes={"a": "torch.nn.Linear"})
    fast_plain = _render(mt, False)  # piped: written directly, whatever the size
    monkeypatch.setattr(tree_text, "RICH_LIMIT", 0)
    fast_ansi = _render(mt, True)  # a big tree on a terminal: written directly
    monkeypatch.setattr(tree_text, "RICH_LIMIT", 10**9)
    rich_ansi = _render(mt, True)  # a small one: rich's Tree
    monkeypatch.setattr(tree_text, "_plain", lambda con: False)
    rich_plain = _render(mt, False)  # a console that cannot be written around (recording): rich's Tree
    assert "\x1b[31m" not in fast_plain and "\x1b[1m" in rich_ansi and "(Linear)" in rich_plain
    assert fast_plain == rich_plain and fast_ansi == rich_ansi


def test_user_regex_is_one_usage_error_naming_the_option(tied: Path) -> None:
    assert user_regex("a.b", "--filter").search("axb")
    with pytest.raises(UsageError, match=r"--filter '\(' is not a valid regular expression"):
        user_regex("(", "--filter")
    for args in (["inspect", str(tied), "--filter", "("], ["strip", str(tied), "--pattern", "(", "-o", str(tied) + "2"]):
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2 and "'(' is not a valid regular expression" in bad.stderr and not bad.stdout


def test_storage_id_tells_files_apart() -> None:
    a = TensorInfo("float32", (4,), storage_key="0", source="model-1.safetensors")
    b = TensorInfo("float32", (4,), storage_key="0", source="model-2.safetensors")
    assert a.storage_id != b.storage_id and TensorInfo("float32", (4,)).storage_id is None
    es = [Entry("x.a", a), Entry("x.b", b), Entry("y.a", a)]
    assert unique_storage_bytes(es) == (48, 32) and build_tree(es)["x"].nbytes == 32
