"""The MLP's HTML document, opened from a local file in headless Chromium: the maths renders.

A copy of the committed page gets a small probe script that measures the rendered page (every
<math> element laid out with a size, fractions stacked, no error markers, every numbered
equation present) and writes what it found into the DOM, which `--dump-dom` prints. A second
run saves a screenshot. The document itself carries no script. Skipped, with the reason, where
Chromium is not installed; a failure where SYMGRAD_REQUIRE_BROWSER is set (CI installs it).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

import symgrad as sg
from symgrad.models import BUILTINS

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "derivations" / "mlp_tanh.html"

PROBE = """
<script>
(() => {
  const MATHML = "http://www.w3.org/1998/Math/MathML";
  const box = el => { const r = el.getBoundingClientRect(); return [r.width, r.height, r.top]; };
  const maths = [...document.getElementsByTagNameNS(MATHML, "math")];
  const equations = [...document.querySelectorAll("div.eq[id]")].map(eq => {
    const m = eq.getElementsByTagNameNS(MATHML, "math")[0];
    return {id: eq.id, size: m ? box(m) : null, number: (eq.querySelector(".eqno") || {}).textContent};
  });
  const fractions = [...document.getElementsByTagNameNS(MATHML, "mfrac")].slice(0, 50).map(f => {
    const [num, den] = f.children;
    return box(num)[2] < box(den)[2];
  });
  const report = {
    maths: maths.length,
    mathml_elements: maths.filter(m => typeof MathMLElement !== "undefined"
                                       && m instanceof MathMLElement).length,
    empty: maths.filter(m => { const [w, h] = box(m); return !(w > 0 && h > 0); }).length,
    block_widths: maths.filter(m => m.getAttribute("display") === "block").map(m => box(m)[0]),
    errors: document.getElementsByTagNameNS(MATHML, "merror").length,
    raw_tex: maths.filter(m => m.textContent.includes("\\\\")).length,
    equations: equations,
    fractions_stacked: fractions.filter(x => x).length,
    fractions: fractions.length,
    title: document.title,
  };
  const out = document.createElement("pre");
  out.id = "symgrad-probe";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
})();
</script>
"""


def chromium_or_skip() -> str:
    exe = os.environ.get("SYMGRAD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("SYMGRAD_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (SYMGRAD_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("Chromium is not installed: apt-get install chromium to run the browser test")
    return exe


def _chromium(exe: str, profile: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


def test_mlp_document_renders_its_maths_in_chromium(tmp_path):
    exe = chromium_or_skip()
    html = PAGE.read_text()
    assert "<script" not in html
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>", 1))

    dump = _chromium(exe, tmp_path / "profile", "--dump-dom", probed.as_uri())
    assert dump.returncode == 0, dump.stderr[-2000:]
    found = re.search(r'<pre id="symgrad-probe">(.*?)</pre>', dump.stdout, flags=re.S)
    assert found, "the probe did not run: " + dump.stdout[-500:] + dump.stderr[-1500:]
    report = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")
                        .replace("&lt;", "<").replace("&gt;", ">"))

    assert report["title"] == "Derivation of mlp_tanh"
    assert report["maths"] > 100 and report["mathml_elements"] == report["maths"]  # real MathML
    assert report["empty"] == 0, "some <math> elements have no size"
    assert report["errors"] == 0 and report["raw_tex"] == 0
    assert report["fractions"] > 10 and report["fractions_stacked"] == report["fractions"]
    assert all(w > 20 for w in report["block_widths"])

    d = sg.derive(BUILTINS["mlp_tanh"].build())
    shown = {e["id"]: e for e in report["equations"]}
    for eq in d.equations:
        e = shown.get(f"eq-{eq.number}")
        assert e is not None, f"equation ({eq.number}) is missing from the rendered page"
        width, height, _ = e["size"]
        assert width > 20 and height > 5, (eq.number, e)
        assert e["number"] == f"({eq.number})"

    shot = tmp_path / "mlp_tanh.png"
    run = _chromium(exe, tmp_path / "profile", "--window-size=1200,2400", f"--screenshot={shot}",
                    PAGE.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
