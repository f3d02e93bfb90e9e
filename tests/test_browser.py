"""The explorer page in a real browser: headless Chromium through Selenium.

Checks that the nodes render with their values (G1, seed 000: u = 6, dJ/du = 3; C2,
seed 004: 0.8 = −0.2 + 0.4 + 0.6), that a group collapses and expands, that search finds a
node (opening its group), that a click shows the full array, and takes a screenshot
(``GDJAX_SCREENSHOT_DIR=docs/img/trace`` writes the one docs/trace.md shows).
Without a browser the tests skip, saying how to get one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax.numpy as jnp
import pytest

import gdjax as gd

HOW = (
    "needs headless Chromium, its driver and selenium: apt-get install chromium "
    "chromium-driver; pip install selenium (in the test extra)"
)


def _find(*names: str) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason=HOW)
    chrome = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if chrome is None or driver_path is None:
        pytest.skip(HOW)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,800"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
    except Exception as err:  # a browser that will not start is an environment problem
        pytest.skip(f"Chromium did not start ({type(err).__name__}); {HOW}")
    yield driver
    driver.quit()


def _open(browser, graph, path: Path):
    graph.to_html(path)
    browser.get(path.resolve().as_uri())
    return browser


def _node(browser, name: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f'.gd-node[data-name="{name}"]')


def _all(browser, css: str):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, css)


def _errors(browser) -> list:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_nodes_render_with_their_values(browser, tmp_path):
    g1 = gd.models.get("G1")
    _open(browser, gd.trace(g1.loss, *g1.example()), tmp_path / "g1.html")
    assert len(_all(browser, ".gd-node")) == 6 and _errors(browser) == []
    u = _node(browser, "u").text
    assert "u = b * c" in u and "value 6" in u and "adjoint 3" in u
    assert "∂ 2 ← 6" in " ".join(t.text for t in _all(browser, ".gd-elabel")).replace("  ", " ")

    def c2(a, b, v):
        f = gd.name(a * b, "f")
        return jnp.sum(v * jnp.broadcast_to(f, v.shape))

    _open(browser, gd.trace(c2, 2.0, 3.0, jnp.array([-0.2, 0.4, 0.6])), tmp_path / "c2.html")
    f = _node(browser, "f")
    assert "adjoint 0.8" in f.text and "= -0.2 + 0.4 + 0.6" in f.text
    assert "gd-fan" in f.get_attribute("class")


def test_collapse_expand_search_and_details(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    n1 = gd.models.get("N1")
    graph = gd.trace(n1.loss, *n1.example())
    _open(browser, graph, tmp_path / "n1.html")
    groups = _all(browser, ".gd-node.gd-group")  # 27 nodes: the three layers start collapsed
    assert len(groups) == 3 and _all(browser, '.gd-node[data-name="z2"]') == []
    assert "a3 value [0.850493]" in groups[2].text  # seed 002's predicted output
    shown = len(_all(browser, ".gd-node"))

    groups[1].click()  # expand layer 2
    assert _node(browser, "z2").is_displayed() and len(_all(browser, ".gd-group")) == 2
    assert len(_all(browser, ".gd-node")) == shown - 1 + 7
    toggle = browser.find_element(By.CSS_SELECTOR, '.gd-gbox .gd-toggle[data-group="layer:2:"]')
    toggle.click()  # collapse it again
    assert len(_all(browser, ".gd-node")) == shown

    browser.find_element(By.ID, "gd-expand").click()
    assert len(_all(browser, ".gd-node")) == len(graph.nodes) == 27
    browser.find_element(By.ID, "gd-collapse").click()
    assert len(_all(browser, ".gd-node")) == shown

    search = browser.find_element(By.ID, "gd-search")
    search.send_keys("a1")  # inside collapsed layer 1: search opens it
    assert browser.find_element(By.ID, "gd-count").text == "1 match"
    a1 = _node(browser, "a1")
    assert "gd-match" in a1.get_attribute("class")
    assert "gd-dim" in _node(browser, "J").get_attribute("class")
    a1.click()
    panel = browser.find_element(By.ID, "gd-detail").text
    assert "a1" in panel and "shape (1, 2)" in panel and "0.622459" in panel
    search.send_keys(Keys.BACKSPACE * 2)
    assert browser.find_element(By.ID, "gd-count").text == ""
    assert _all(browser, ".gd-dim") == []
    browser.find_element(By.ID, "gd-collapse").click()
    _all(browser, ".gd-node.gd-group")[0].click()  # layer 1 open, the rest collapsed
    _node(browser, "z1").click()
    for _ in range(2):
        browser.find_element(By.ID, "gd-zout").click()
    browser.execute_script(
        "const c = document.getElementById('gd-canvas'); c.scrollTo(0, 0); return c.scrollLeft"
    )
    assert _errors(browser) == []
    shots = os.environ.get("GDJAX_SCREENSHOT_DIR")
    target = Path(shots) / "explorer-N1.png" if shots else tmp_path / "n1.png"
    assert browser.save_screenshot(str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
