"""The HTML report in a real headless Chromium: it renders, the charts are there, and no request
leaves the file. Skipped only when no Chromium is installed and STATECLI_REQUIRE_BROWSER is unset.
Set STATECLI_SCREENSHOT_DIR to keep the screenshot for a look."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

BROWSER = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
if BROWSER is None and not os.environ.get("STATECLI_REQUIRE_BROWSER"):
    pytest.skip("no chromium binary (apt-get install chromium; STATECLI_REQUIRE_BROWSER=1 makes this a failure)",
                allow_module_level=True)


def _chromium(tmp: Path, url: str, *args: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, str]]]:
    """Run headless Chromium on `url` with DNS resolution off; return the run and the requests the
    PAGE started (from the NetLog: Chromium's own background requests carry no page origin)."""
    assert BROWSER is not None, "STATECLI_REQUIRE_BROWSER is set but no chromium binary was found"
    net = tmp / f"net{len(list(tmp.glob('net*.json')))}.json"
    run = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={net}", *args, url],
        capture_output=True, text=True, timeout=120)
    events = json.loads(net.read_text()).get("events", []) if net.exists() else []
    types = {v: k for k, v in json.loads(net.read_text())["constants"]["logEventTypes"].items()} if events else {}
    page = [e["params"] for e in events if types.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e["params"]
            and (e["params"].get("initiator") != "not an origin"
                 or str(e["params"].get("network_isolation_key", "")).startswith("file://"))]
    return run, page


def _png_varies(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the decoded image): a blank page has very few."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    return width, height, len(set(zlib.decompress(idat)))


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """The HTML diff of a fine-tune that moved only blocks 2 and 5 of six."""
    g = torch.Generator().manual_seed(0)
    a = {f"blocks.{i}.attn.{p}.weight": torch.randn(16, 16, generator=g) for i in range(6) for p in ("q_proj", "v_proj")}
    b = {k: v + (0.05 * torch.randn(16, 16, generator=g) if k.startswith(("blocks.2.", "blocks.5.")) else 0)
         for k, v in a.items()}
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    r = CliRunner().invoke(app, ["diff", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--format", "html",
                                 "--depth", "2", "--sort", "change"])
    assert r.exit_code == 1, r.output
    out = tmp_path / "report.html"
    out.write_text(r.stdout, encoding="utf-8")
    return out


def test_html_diff_renders_offline_with_its_charts(report: Path, tmp_path: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"https?://", text)  # nothing in the file could be fetched
    run, requests = _chromium(tmp_path, report.as_uri(), "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert "different:" in dom and dom.count('class="chart"') == 1 and dom.count('class="bar"') == 6
    chart = dom.split('class="chart"')[1].split("</svg>")[0]
    labels = re.findall(r'class="cl">([^<]+)<', chart)
    assert set(labels[:2]) == {"blocks.2", "blocks.5"}  # the moved blocks lead the chart
    widths = [float(w) for w in re.findall(r'class="bar"[^>]* width="([0-9.]+)"', chart)]
    assert widths[0] > 100 and all(w == 0 for w in widths[2:])
    assert "<details" in dom and requests == []

    shot = tmp_path / "report.png"
    run, requests = _chromium(tmp_path, report.as_uri(), f"--screenshot={shot}", "--window-size=1200,1400")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    width, height, distinct = _png_varies(shot)
    assert (width, height) == (1200, 1400) and distinct > 30 and requests == []
    keep = os.environ.get("STATECLI_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "statecli-diff-report.png")


def test_the_request_check_sees_a_page_that_does_fetch(tmp_path: Path) -> None:
    """Control: the same NetLog check catches a page that loads an image over http."""
    page = tmp_path / "fetches.html"
    page.write_text('<!doctype html><img src="http://statecli-test.invalid/x.png">', encoding="utf-8")
    _, requests = _chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert any("statecli-test.invalid" in r.get("url", "") for r in requests)
