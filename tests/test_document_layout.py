"""Every committed document fits its page: no HTML page wider than a 1280 px window (measured in
headless Chromium) and no line of a PDF more than 20 pt beyond its margin (read off pdflatex's log).

Skipped, with the reason, where Chromium or pdflatex is missing; a failure where
SYMGRAD_REQUIRE_BROWSER / SYMGRAD_REQUIRE_PDFLATEX is set (CI installs both).
"""
from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

from test_browser import _chromium, chromium_or_skip
from test_documents import _pdflatex_or_skip

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "derivations"
WINDOW = 1280
OVERFULL_LIMIT_PT = 20.0

PROBE = """<!DOCTYPE html><html><body>
{frames}
<pre id="symgrad-widths"></pre>
<script>
window.addEventListener("load", () => {{
  const widths = [...document.querySelectorAll("iframe")].map(f => {{
    const root = f.contentDocument.documentElement;
    const tall = [...f.contentDocument.querySelectorAll(".eqmath")]
      .filter(e => e.scrollHeight > e.clientHeight + 1).length;  // a vertical scroll box
    return [f.dataset.name, root.scrollWidth, root.clientWidth, tall];
  }});
  document.getElementById("symgrad-widths").textContent = JSON.stringify(widths);
}});
</script></body></html>
"""


def test_no_html_document_is_wider_than_the_window(tmp_path):
    """Each committed page is loaded in a 1280 px wide frame; its scroll width must be the frame's,
    and no display equation may scroll vertically (its box is as tall as its formula)."""
    exe = chromium_or_skip()
    pages = sorted(DOCS.glob("*.html"))
    frames = "\n".join(f'<iframe data-name="{p.name}" src="{p.as_uri()}" '
                       f'style="width:{WINDOW}px;height:600px;border:0"></iframe>' for p in pages)
    probe = tmp_path / "widths.html"
    probe.write_text(PROBE.format(frames=frames))
    run = _chromium(exe, tmp_path / "profile", "--allow-file-access-from-files",
                    "--virtual-time-budget=30000", "--dump-dom", probe.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="symgrad-widths">(.*?)</pre>', run.stdout, flags=re.S)
    assert found and found.group(1), "the probe did not run: " + run.stdout[-500:] + run.stderr[-1500:]
    widths = json.loads(found.group(1).replace("&quot;", '"'))
    assert [w[0] for w in widths] == [p.name for p in pages]
    for name, scroll, client, tall in widths:
        assert client == WINDOW, (name, client)  # the frame has the window's width
        assert scroll <= WINDOW, f"{name} is {scroll} px wide in a {WINDOW} px window"
        assert tall == 0, f"{name}: {tall} display equations scroll vertically (a scroll widget beside them)"


def _overfull(exe: str, tex: pathlib.Path, folder: pathlib.Path) -> tuple[str, int, list[float]]:
    work = folder / tex.stem
    work.mkdir()
    shutil.copy(tex, work / tex.name)
    r = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=work,
                       capture_output=True, text=True, timeout=300)
    log = (work / f"{tex.stem}.log").read_text(errors="replace")
    widths = re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)
    return tex.stem, r.returncode, [float(x) for x in widths]


def test_no_pdf_line_runs_into_the_margin(tmp_path):
    exe = _pdflatex_or_skip()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda t: _overfull(exe, t, tmp_path), sorted(DOCS.glob("*.tex"))))
    assert len(results) == len(list(DOCS.glob("*.html")))
    for name, code, overfull in results:
        assert code == 0, f"{name}.tex does not compile"
        worst = sorted(overfull)[-3:]
        assert max(overfull, default=0) <= OVERFULL_LIMIT_PT, f"{name}: overfull boxes of {worst} pt"
