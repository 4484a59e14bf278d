"""The page at `/` of `samplegraph serve`: shipped files only (no CDN), valid JavaScript, and, in a real
headless Chromium driven by Playwright, submitting the quickstart shows its progress reach 100% and its PNG.

The browser test needs Debian's chromium (`apt-get install chromium`) and `pip install playwright` (no
`playwright install`: it launches /usr/bin/chromium); it skips with that reason otherwise. Its screenshot is
written to $SAMPLEGRAPH_TEST_ARTIFACTS (default: the test's tmp folder)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'samplegraph[serve]'")

from helpers_serve import Server  # noqa: E402

STATIC = Path(__file__).resolve().parents[1] / "runtime" / "serve" / "static"
CHROMIUM = Path(os.environ.get("SAMPLEGRAPH_CHROMIUM", "/usr/bin/chromium"))


def test_page_files_are_self_contained():
    files = {p.name: p.read_text() for p in STATIC.iterdir()}
    assert {"index.html", "app.js", "style.css"} <= set(files)
    for name, text in files.items():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), f"{name} refers to another host"
    assert "<script>" not in files["index.html"]  # no inline script (the page's CSP forbids it)
    assert 'src="/static/app.js"' in files["index.html"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (only used to check JS syntax)")
def test_page_script_parses():
    subprocess.run(["node", "--check", str(STATIC / "app.js")], check=True, capture_output=True)


def test_page_is_served_with_its_csp(tmp_path):
    srv = Server(tmp_path / "state").start()
    try:
        page = srv.request("GET", "/")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert srv.request("GET", "/static/app.js").status == 200
        assert srv.request("GET", "/static/../store.py").status == 404
        assert "quickstart" in srv.request("GET", "/api/v1/workflows").json()["workflows"]
    finally:
        srv.stop()


def browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SAMPLEGRAPH_CHROMIUM)"
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; no browser download is needed)"
    return None


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_submit_quickstart_in_a_browser(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    artifacts = Path(os.environ.get("SAMPLEGRAPH_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    srv = Server(tmp_path / "state").start()
    try:
        with sync_playwright() as p:
            try:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            except Exception as e:  # noqa: BLE001  # the environment's browser, not the page, is what failed
                pytest.skip(f"{CHROMIUM} does not start here: {str(e).splitlines()[0]}")
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{srv.port}/")
            page.select_option("#workflow-name", "quickstart")
            page.click("#submit-button")
            expect(page.locator("#submit-status")).to_contain_text("submitted", timeout=30_000)
            job_id = srv.request("GET", "/api/v1/jobs?limit=1").json()["jobs"][0]["id"]
            bar = page.locator(f'progress[data-job="{job_id}"]')
            expect(bar).to_have_attribute("value", "100", timeout=60_000)
            image = page.locator("#detail-images img.output")
            expect(image).to_be_visible(timeout=30_000)
            # visible is not loaded: wait until the browser has decoded it (a broken image never gets a width)
            page.wait_for_function("() => { const i = document.querySelector('#detail-images img.output'); "
                                   "return i !== null && i.complete && i.naturalWidth > 0; }", timeout=30_000)
            page.screenshot(path=str(artifacts / "serve_page.png"), full_page=True)
            browser.close()
        assert srv.job(job_id)["status"] == "succeeded"
    finally:
        srv.stop()
