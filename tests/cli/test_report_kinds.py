"""Every kind of finding `scan --ndjson` records keeps its own rule id and outcome through `statecli report`
in each format (review of issue 26: a chat-template escape was reported as `scan/hidden-payload`,
"malformed", the word of a truncated file)."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_files import kv, raw_gguf, s, tinfo
from tests.remote.corpus import _pt, payload, safetensors_bytes

pytest.importorskip("jinja2")
runner = CliRunner()
ESCAPE = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"

# kind: (rule ids of its findings, report outcome, exit code, SARIF level of its results)
KINDS = {
    "safe": ((), "safe", 0, None),
    "trust": (("scan/needs-trust-global",), "needs-trust", 1, "warning"),
    "payload": (("scan/dangerous-global",), "dangerous", 3, "error"),
    "hidden": (("scan/hidden-payload",), "malformed", 3, "error"),
    "template": (("scan/chat-template",), "dangerous", 3, "error"),
    "truncated": (("scan/unreadable",), "unreadable", 2, "error"),
}


def _gguf(template: str | None = None, tail: bytes = b"") -> bytes:
    kvs = [kv("general.architecture", 8, s("llama"))]
    kvs += [kv("tokenizer.chat_template", 8, s(template))] if template else []
    return raw_gguf(kvs, [tinfo("blk.0.attn_q.weight", (4, 2), 0, 0)], struct.pack("<8f", *range(8))) + tail


def _write(folder: Path) -> dict[str, str]:
    files = {"safe": ("safe.safetensors", safetensors_bytes(2, 0)),
             "trust": ("trust.pt", _pt(1, custom=True)),
             "payload": ("payload.pt", payload(folder / "canary")),
             "hidden": ("hidden.gguf", _gguf(tail=b"\x80" * 4096)),
             "template": ("template.gguf", _gguf(ESCAPE)),
             "truncated": ("truncated.safetensors", safetensors_bytes(4, 2)[:-9])}
    for name, data in files.values():
        (folder / name).write_bytes(data)
    return {f"c/{name}": kind for kind, (name, _) in files.items()}


def test_each_finding_kind_keeps_its_rule_and_outcome_in_every_report_format(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c").mkdir()
    inputs = _write(tmp_path / "c")
    runner.invoke(app, ["scan", "c", "--ndjson", "out.jsonl", "--no-cache"])
    recs = {r["input"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert set(recs) == set(inputs)

    def report(fmt: str) -> str:
        return runner.invoke(app, ["report", "out.jsonl", "--format", fmt]).stdout

    by_outcome = json.loads(report("json"))["by_outcome"]
    sarif = json.loads(report("sarif"))["runs"][0]
    results = {(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], r["ruleId"]): r["level"]
               for r in sarif["results"]}
    cases = {c.get("name"): c for c in ET.fromstring(report("junit")).iter("testcase")}
    md, html = report("md"), report("html")
    for path, kind in inputs.items():
        rules, outcome, code, level = KINDS[kind]
        rec = recs[path]
        assert (tuple(dict.fromkeys(f["rule"] for f in rec["findings"])), rec["exit_code"]) == (rules, code), kind
        assert {rule: lv for (p, rule), lv in results.items() if p == path} == dict.fromkeys(rules, level), kind
        assert [e.get("message") for e in cases[path]] == ([outcome] if code else []), kind
        assert f"| {path} | scan | " in md and f"| {outcome} |" in md.split(path, 1)[1].splitlines()[0], kind
        assert path in html, kind
    assert by_outcome == {"safe": 1, "needs-trust": 1, "dangerous": 2, "malformed": 1, "unreadable": 1}
    assert "scan/chat-template" in {r["id"] for r in sarif["tool"]["driver"]["rules"]}
