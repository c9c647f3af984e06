"""The page in a real browser: Debian's headless Chromium, driven by Selenium, against a served app.

Runs where `chromium` and `chromedriver` are installed (.ci/run installs Debian's `chromium` and `chromium-driver`);
elsewhere it is skipped with that reason. A screenshot of the page is written to runs/screenshots/ for people.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from frafer.serve.app import ServeSettings, create_app

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                "(apt-get install chromium chromium-driver): the page was NOT tested in a browser")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is a test dependency")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "runs" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    import uvicorn

    app = create_app(ServeSettings())  # the built-in model, as `frafer serve` with no argument
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_a_photo_dropped_on_the_page_comes_back_labelled_with_its_chart_and_panel(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    browser.get(server + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: "expressions (" in d.find_element(By.ID, "model-info").text)  # the card loaded
    chooser = browser.find_element(By.ID, "files")
    browser.execute_script("arguments[0].hidden = false", chooser)
    chooser.send_keys(str(photo))
    face = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#results .face")))
    assert face.find_element(By.CSS_SELECTOR, ".face-label .name").text == "happy"
    bars = face.find_elements(By.CSS_SELECTOR, ".bars .bar")
    classes = browser.execute_script("return classes.length")
    assert len(bars) == classes >= 7
    assert "top" in bars[0].get_attribute("class")  # the most probable class first, highlighted
    panel = face.find_element(By.CSS_SELECTOR, "img.panel")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", panel) > 0)
    assert "1 face(s)" in browser.find_element(By.CSS_SELECTOR, "#results .image h2").text
    assert browser.find_element(By.ID, "download-json").is_enabled()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "serve_page.png"))
    browser.set_window_size(390, 1400)  # a phone's width: the layout still holds one face per row
    browser.save_screenshot(str(SCREENSHOTS / "serve_page_phone.png"))
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 400
