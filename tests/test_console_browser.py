"""The web console, driven in a real Chromium (Debian's chromium + chromedriver, Selenium) against the real
daemon on a loopback port: Try it draws what the bundled models find, the Models page loads / unloads /
rebuilds, access keys lock it, nothing leaves the daemon's origin, no console error, first load < 300 KB.

One browser session for the whole module. Screenshots of every page (desktop and phone width) are written
to tests/artifacts/console/ (the path is printed). Without chromium, chromedriver or selenium the module
skips and says which is missing (`.ci/run` installs them, guarded).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
import requests

from edge_daemon.config import Settings
from edge_daemon.scenes import generate_scene
from tests.support.cameras import RtspCamera, rtsp_unavailable
from tests.support.daemon import REPO_ROOT, ThreadedDaemon
from tests.support.onnx_models import COLOUR_CLASSES, colour_detector, colour_environment, write_model
from tests.support.registry import RegistryServer

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (.ci/run installs it)")
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not CHROMIUM or not CHROMEDRIVER:
    pytest.skip("no chromium/chromedriver on PATH (Debian: apt-get install chromium chromium-driver; "
                ".ci/run does it when it can)", allow_module_level=True)

ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "console"
ACCESS_KEY = "console-test-key-5f1c"
DESKTOP = (1280, 900)
PHONE = (390, 844)
FIRST_LOAD_LIMIT = 300_000
SCENE_SEED = 9  # 640x360 with every class (as in test_streams)
COLOURS = {"circle": (0xE5, 0x39, 0x35), "square": (0x1E, 0x88, 0xE5), "triangle": (0x43, 0xA0, 0x47),
           "star": (0xFD, 0xD8, 0x35)}  # the bundled models' COLORS (environment.json)


class Journal:
    """Everything the browser did during the module: request URLs, network events and console messages."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.severe: list[dict[str, Any]] = []
        self.expected_severe: list[str] = []  # URL fragments of errors a test caused on purpose (a refused key)
        self.origins: set[str] = set()  # the daemons the browser was pointed at

    def drain(self, browser: Any) -> list[dict[str, Any]]:
        """Read (and empty) the browser's logs; returns this batch's network events."""
        events = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
        for event in events:
            if event["method"] == "Network.requestWillBeSent":
                self.urls.append(event["params"]["request"]["url"])
        for entry in browser.get_log("browser"):
            if entry["level"] == "SEVERE":
                self.severe.append(entry)
        return events


@pytest.fixture(scope="module")
def journal() -> Journal:
    return Journal()


def report(config: pytest.Config, line: str) -> None:
    """A line in pytest's own output (shown by CI even when the test passes and stdout is captured)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


@pytest.fixture(scope="module")
def browser(journal: Journal, pytestconfig: pytest.Config) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--disable-extensions", "--disable-default-apps",
                     f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--force-prefers-reduced-motion"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as error:  # installed but cannot start here (no sandbox support, no /dev/shm...)
        pytest.skip(f"chromium does not start on this machine: {error.msg}")
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report(pytestconfig, f"\nconsole screenshots (desktop and phone width): {ARTIFACTS}")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def _record(request: pytest.FixtureRequest, journal: Journal) -> Iterator[None]:
    yield
    if "browser" in request.fixturenames:
        journal.drain(request.getfixturevalue("browser"))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, journal: Journal) -> Iterator[ThreadedDaemon]:
    """Only the bundled models (no models dir, no registry), a fresh cache."""
    settings = Settings(host="127.0.0.1", port=0, threads=8, models_dir="", api_url="", ort_threads=1,
                        cache_dir=str(tmp_path_factory.mktemp("console-cache")),
                        state_dir=str(tmp_path_factory.mktemp("console-state")))
    with ThreadedDaemon(settings) as running:
        journal.origins.add(running.url)
        yield running


@pytest.fixture(scope="module")
def demo_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """The README's picture, made by the real command; returns it and the class names it says it drew."""
    path = tmp_path_factory.mktemp("console-demo") / "shapes.jpg"
    done = subprocess.run([sys.executable, "-m", "edge_daemon", "demo-image", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    names = done.stdout.rsplit(":", 1)[1]
    return path, {name.strip() for name in names.split(",")}


def wait(browser: Any, condition: Callable[[Any], Any], timeout: float = 30, message: str = "") -> Any:
    # The pages re-render as they poll, so an element found a moment ago may be gone: look again.
    return WebDriverWait(browser, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def text_of(browser: Any, selector: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, selector).text


def open_page(browser: Any, url: str, page: str) -> None:
    """A fresh load of the page (the same URL again would only be a same-document hash change)."""
    target = f"{url}/#/{page}"
    if browser.current_url == target:
        browser.refresh()
    else:
        browser.get(target)
    wait(browser, lambda b: b.find_element(By.ID, f"page-{page}").is_displayed(), message=f"{page} page not shown")


def _full_page(browser: Any, path: Path) -> None:
    """The whole page, not only what fits in the window (a phone's Try it result is below the fold)."""
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def screenshot(browser: Any, name: str) -> None:
    """Desktop and phone width; at phone width nothing may stick out sideways."""
    browser.set_window_size(*DESKTOP)
    time.sleep(0.2)
    _full_page(browser, ARTIFACTS / f"{name}-desktop.png")
    browser.set_window_size(*PHONE)
    time.sleep(0.3)
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    _full_page(browser, ARTIFACTS / f"{name}-phone.png")
    browser.set_window_size(*DESKTOP)
    assert overflow <= 1, f"{name} page is {overflow}px wider than a phone screen"


def canvas_pixels(browser: Any, points: list[tuple[float, float]]) -> list[tuple[int, int, int]]:
    values = browser.execute_script(
        "const c = document.getElementById('try-canvas').getContext('2d');"
        "return arguments[0].map(([x, y]) => Array.from(c.getImageData(Math.round(x), Math.round(y), 1, 1).data));",
        [list(point) for point in points])
    return [tuple(value[:3]) for value in values]


def distance(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5


def run_model(browser: Any, model_id: str) -> dict[str, Any]:
    """Pick the model, press Run, wait for the drawn answer; returns the JSON the page shows."""
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f"#try-model option[value='{model_id}']"))
    Select(browser.find_element(By.ID, "try-model")).select_by_value(model_id)
    browser.execute_script("document.getElementById('try-json').textContent = '';"
                           "document.getElementById('try-canvas').dataset.drawn = 'no';")
    browser.find_element(By.ID, "try-run").click()
    wait(browser, lambda b: b.find_element(By.ID, "try-canvas").get_attribute("data-drawn") == "yes",
         message=f"{model_id}: nothing drawn; error: {text_of(browser, '#try-error')!r}")
    return json.loads(text_of(browser, "#try-json"))


def chip_classes(browser: Any) -> set[str]:
    return {chip.get_attribute("data-class") for chip in browser.find_elements(By.CSS_SELECTOR, "#try-summary li")}


# ----- tests -------------------------------------------------------------------------------------------------

FIGURES: dict[str, Any] = {}


def test_first_load_is_under_300_kb_and_reload_uses_the_cache(browser, daemon, journal, pytestconfig):
    journal.drain(browser)
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.clearBrowserCache", {})
    open_page(browser, daemon.url, "overview")
    wait(browser, lambda b: "edge-daemon" in text_of(b, "#ov-version"))
    wait(browser, lambda b: b.find_element(By.ID, "chart-rate").get_attribute("data-points") is not None)
    events = journal.drain(browser)
    urls = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in events
            if e["method"] == "Network.requestWillBeSent"}
    sizes = {e["params"]["requestId"]: e["params"]["encodedDataLength"] for e in events
             if e["method"] == "Network.loadingFinished"}
    static = sum(size for request, size in sizes.items()
                 if urls.get(request, "").split("#")[0] in (daemon.url + "/", daemon.url + "")
                 or "/console/static/" in urls.get(request, ""))
    total = sum(sizes.values())
    FIGURES["first_load_static_bytes"] = static
    FIGURES["first_load_total_bytes"] = total
    report(pytestconfig, f"console first load: {static} bytes of page and assets, {total} bytes with the API calls")
    assert any("/console/static/console." in url for url in urls.values())
    assert 0 < static <= total < FIRST_LOAD_LIMIT

    browser.refresh()
    wait(browser, lambda b: "edge-daemon" in text_of(b, "#ov-version"))
    events = journal.drain(browser)
    responses = {e["params"]["response"]["url"].split("#")[0]: e["params"]["response"] for e in events
                 if e["method"] == "Network.responseReceived"}
    from_cache = {e["params"]["requestId"] for e in events if e["method"] == "Network.requestServedFromCache"}
    page_ids = {e["params"]["requestId"] for e in events if e["method"] == "Network.requestWillBeSent"
                and e["params"]["request"]["url"].split("#")[0] == daemon.url + "/"}
    raw_status = [e["params"]["statusCode"] for e in events if e["method"] == "Network.responseReceivedExtraInfo"
                  and e["params"]["requestId"] in page_ids]
    assert raw_status == [304], f"the page must be revalidated by its ETag and answered 304, got {raw_status}"
    reload_sizes = {e["params"]["requestId"]: e["params"]["encodedDataLength"] for e in events
                    if e["method"] == "Network.loadingFinished"}
    assets = [e for e in events if e["method"] == "Network.requestWillBeSent"
              and "/console/static/" in e["params"]["request"]["url"]]
    assert assets
    for asset in assets:
        response = responses.get(asset["params"]["request"]["url"], {})
        cached = (asset["params"]["requestId"] in from_cache or response.get("fromDiskCache")
                  or response.get("fromMemoryCache") or response.get("status") == 304)
        assert cached, f"{asset['params']['request']['url']} was downloaded again on reload"
    FIGURES["reload_page_and_assets_bytes"] = sum(reload_sizes.get(request, 0) for request in page_ids) + sum(
        reload_sizes.get(asset["params"]["requestId"], 0) for asset in assets)
    report(pytestconfig, f"console reload: {FIGURES['reload_page_and_assets_bytes']} bytes for the page (304) "
                         "and its assets")
    served = requests.get(daemon.url + "/", timeout=10)
    assert served.headers["Cache-Control"] == "no-cache" and served.headers["ETag"]
    asset_url = re.search(r'/console/static/console\.[0-9a-f]{12}\.js', served.text).group(0)
    assert "immutable" in requests.get(daemon.url + asset_url, timeout=10).headers["Cache-Control"]
    (ARTIFACTS / "first-load.json").write_text(json.dumps(FIGURES, indent=2) + "\n")


def test_try_it_draws_detections_of_the_demo_picture(browser, daemon, demo_image):
    path, drawn_classes = demo_image
    open_page(browser, daemon.url, "try")
    browser.find_element(By.ID, "try-file").send_keys(str(path))
    wait(browser, lambda b: path.name in text_of(b, "#drop-help"))
    wait(browser, lambda b: b.find_element(By.ID, "try-canvas").get_attribute("width") == "600")
    result = run_model(browser, "shapes/1")
    predictions = result["predictions"]
    assert predictions and {p["class"] for p in predictions} <= set(COLOURS)
    assert drawn_classes <= chip_classes(browser) == {p["class"] for p in predictions}
    canvas = browser.find_element(By.ID, "try-canvas")
    assert int(canvas.get_attribute("data-boxes")) == len(predictions)
    # Each box's left edge is painted in its class colour (the page drew it, the JSON says where).
    edges = canvas_pixels(browser, [(p["x"] - p["width"] / 2, p["y"]) for p in predictions])
    matching = [distance(pixel, COLOURS[p["class"]]) < 60 for pixel, p in zip(edges, predictions)]
    assert sum(matching) >= max(1, len(predictions) - 1), (edges, predictions)
    timings = {item.get_attribute("data-stage") for item in browser.find_elements(By.CSS_SELECTOR, "#try-timings div")}
    assert {"decode", "preprocess", "inference", "postprocess", "server total"} <= timings
    assert "/shapes/1" in text_of(browser, "#snippet")
    screenshot(browser, "try-detection")


def test_try_it_draws_segmentation_masks(browser, daemon, demo_image):
    path, drawn_classes = demo_image
    open_page(browser, daemon.url, "try")
    browser.find_element(By.ID, "try-file").send_keys(str(path))
    wait(browser, lambda b: b.find_element(By.ID, "try-canvas").get_attribute("data-drawn") == "no"
         and b.find_element(By.ID, "try-canvas").get_attribute("width") == "600")
    probe = run_model(browser, "shapes-seg/1")
    with_masks = [p for p in probe["predictions"] if len(p.get("points", [])) > 2]
    centres = [(sum(q["x"] for q in p["points"]) / len(p["points"]),
                sum(q["y"] for q in p["points"]) / len(p["points"])) for p in with_masks]
    # The plain picture's pixels under each mask (choosing the file again redraws it undrawn), then the drawn ones.
    browser.execute_script("document.getElementById('try-file').dispatchEvent(new Event('change'))")
    wait(browser, lambda b: b.find_element(By.ID, "try-canvas").get_attribute("data-drawn") == "no")
    before = canvas_pixels(browser, centres)
    result = run_model(browser, "shapes-seg/1")
    assert with_masks
    canvas = browser.find_element(By.ID, "try-canvas")
    assert int(canvas.get_attribute("data-masks")) == len(with_masks) == len(result["predictions"])
    after = canvas_pixels(browser, centres)
    tinted = [distance(a, COLOURS[p["class"]]) < distance(b, COLOURS[p["class"]]) - 10
              for a, b, p in zip(after, before, with_masks)]
    assert sum(tinted) >= max(1, len(with_masks) - 1), (before, after)
    assert drawn_classes <= chip_classes(browser)
    screenshot(browser, "try-segmentation")


def test_try_it_shows_the_classification(browser, daemon, demo_image):
    path, _ = demo_image
    open_page(browser, daemon.url, "try")
    browser.find_element(By.ID, "try-file").send_keys(str(path))
    wait(browser, lambda b: b.find_element(By.ID, "try-canvas").get_attribute("width") == "600")
    before = canvas_pixels(browser, [(4, 4)])[0]
    result = run_model(browser, "shapes-cls/1")
    assert result["top"] in COLOURS
    canvas = browser.find_element(By.ID, "try-canvas")
    assert canvas.get_attribute("data-top") == result["top"]
    assert result["top"] in chip_classes(browser)
    assert sum(canvas_pixels(browser, [(4, 4)])[0]) < sum(before) - 30, "the class banner was not drawn"
    with open(path, "rb") as handle:  # the page shows what the API says for the same picture
        direct = requests.post(f"{daemon.url}/shapes-cls/1", data=handle.read(),
                               headers={"Content-Type": "image/jpeg"}, timeout=30).json()
    assert direct["top"] == result["top"]
    screenshot(browser, "try-classification")


def _row_state(browser: Any, model_id: str) -> str | None:
    rows = browser.find_elements(By.CSS_SELECTOR, f"#models-table tr[data-model='{model_id}'] .state")
    return rows[0].get_attribute("data-state") if rows else None


def _row_text(browser: Any, model_id: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, f"#models-table tr[data-model='{model_id}']").text


def _click(browser: Any, label: str) -> None:
    def press(b: Any) -> bool:
        button = b.find_element(By.CSS_SELECTOR, f"button[aria-label='{label}']")
        if not button.is_enabled():
            return False
        button.click()
        return True

    wait(browser, press, message=f"{label} stays disabled")


def test_models_page_lists_bundled_models_and_unloads_loads_and_rebuilds(browser, daemon):
    for model_id in ("shapes/1", "shapes-seg/1", "shapes-cls/1"):  # ready after a request
        requests.post(f"{daemon.url}/model/add", json={"model_id": model_id}, timeout=60).raise_for_status()
    open_page(browser, daemon.url, "models")
    for model_id in ("shapes/1", "shapes-seg/1", "shapes-cls/1"):
        wait(browser, lambda b, m=model_id: _row_state(b, m) == "ready", message=f"{model_id} not shown ready")
        text = _row_text(browser, model_id)
        assert "bundled" in text and "onnxruntime" in text and "fp32" in text, text
    assert "instance-segmentation" in _row_text(browser, "shapes-seg/1")
    screenshot(browser, "models")

    _click(browser, "Unload shapes-cls/1")
    wait(browser, lambda b: _row_state(b, "shapes-cls/1") == "available", message="unload did not show")
    loaded = {m["model_id"] for m in requests.get(daemon.url + "/model/registry", timeout=10).json()["models"]}
    assert "shapes-cls/1" not in loaded and "shapes/1" in loaded

    _click(browser, "Load shapes-cls/1")
    wait(browser, lambda b: _row_state(b, "shapes-cls/1") == "ready" and "from cache" in _row_text(b, "shapes-cls/1"),
         message="load did not show, or did not come from the engine cache")
    _click(browser, "Rebuild the engine of shapes-cls/1")
    wait(browser, lambda b: _row_state(b, "shapes-cls/1") == "ready" and "built in" in _row_text(b, "shapes-cls/1"),
         message="rebuild did not build the engine afresh")
    catalog = {m["model_id"]: m for m in requests.get(daemon.url + "/model/catalog", timeout=10).json()["models"]}
    assert catalog["shapes-cls/1"]["engine"]["cache_hit"] is False
    assert len(catalog["shapes-cls/1"]["engine_cache"]) == 1


def test_models_page_pulls_a_model_from_the_registry(browser, journal, tmp_path):
    source = write_model(tmp_path / "registry-files", "remote/3", colour_detector("yolov8"), colour_environment())
    with RegistryServer() as registry:
        registry.add_model("remote/3", source, COLOUR_CLASSES)
        settings = Settings(host="127.0.0.1", port=0, threads=4, models_dir="", api_url=registry.url,
                            ort_threads=1, cache_dir=str(tmp_path / "cache"))
        with ThreadedDaemon(settings) as running:
            journal.origins.add(running.url)
            open_page(browser, running.url, "models")
            wait(browser, lambda b: _row_state(b, "shapes/1") == "available")
            assert not browser.find_elements(By.CSS_SELECTOR, "#models-table tr[data-model='remote/3']")
            browser.find_element(By.ID, "pull-id").send_keys("remote/3")
            browser.find_element(By.ID, "pull-key").send_keys("good-key")
            browser.find_element(By.CSS_SELECTOR, "#pull-form button[type=submit]").click()
            wait(browser, lambda b: _row_state(b, "remote/3") == "ready", message="the pulled model is not ready")
            assert "cache" in _row_text(browser, "remote/3")
            assert registry.state.weight_downloads == {"remote/3": 1}
            events = journal.drain(browser)
            urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
            assert urls and not [url for url in urls if "good-key" in url], "the registry key went into a URL"
            browser.get("about:blank")


def test_overview_and_cameras_pages(browser, daemon):
    for _ in range(3):  # some traffic for the charts
        requests.post(f"{daemon.url}/model/add", json={"model_id": "shapes/1"}, timeout=30)
    open_page(browser, daemon.url, "overview")
    wait(browser, lambda b: "onnxruntime" in text_of(b, "#ov-backend") and text_of(b, "#ov-reason"))
    info = requests.get(daemon.url + "/info", timeout=10).json()
    assert info["version"] in text_of(browser, "#ov-version")
    assert text_of(browser, "#ov-ready") == "ready"
    wait(browser, lambda b: int(b.find_element(By.ID, "chart-rate").get_attribute("data-points") or 0) >= 1,
         timeout=10, message="no metrics sample charted")
    browser.find_element(By.ID, "theme-toggle").click()  # dark theme, then back
    assert browser.execute_script("return document.documentElement.dataset.theme") == "dark"
    screenshot(browser, "overview-dark")
    browser.find_element(By.ID, "theme-toggle").click()
    assert browser.execute_script("return document.documentElement.dataset.theme") == "light"
    screenshot(browser, "overview")

    open_page(browser, daemon.url, "cameras")
    wait(browser, lambda b: b.find_element(By.ID, "camera-form").is_displayed())
    wait(browser, lambda b: "No camera streams configured." in text_of(b, "#cameras-list"))
    assert not browser.find_element(By.ID, "cameras-none").is_displayed()
    screenshot(browser, "cameras")


def _card_state(browser: Any, stream_id: str) -> str | None:
    states = browser.find_elements(By.CSS_SELECTOR, f"#cameras-list [data-stream='{stream_id}'] .state")
    return states[0].get_attribute("data-state") if states else None


def _api_state(url: str, stream_id: str) -> str | None:
    answer = requests.get(f"{url}/streams/{stream_id}", timeout=5)
    return answer.json()["state"] if answer.status_code == 200 else None


def test_cameras_page_shows_a_live_rtsp_stream_and_adds_pauses_and_removes_one(browser, journal, tmp_path):
    """The real streams API and a real RTSP camera (GStreamer, tests/support/cameras.py) behind the page."""
    reason = rtsp_unavailable()
    if reason:
        pytest.skip(reason)
    scene = generate_scene(SCENE_SEED, 640, 360)
    picture = tmp_path / "scene.png"
    cv2.imwrite(str(picture), scene.image)
    camera = RtspCamera(picture, fps=5).start()
    settings = Settings(host="127.0.0.1", port=0, threads=8, models_dir="", api_url="", ort_threads=1,
                        cache_dir=str(tmp_path / "cache"), state_dir=str(tmp_path / "state"), url_allow_loopback=True)
    try:
        with ThreadedDaemon(settings) as running:
            journal.origins.add(running.url)
            url = running.url
            created = requests.post(url + "/streams", json={"id": "yard", "source": camera.url, "model_id": "shapes/1",
                                                            "max_fps": 4, "open_timeout": 5}, timeout=30)
            assert created.status_code == 201, created.text
            open_page(browser, url, "cameras")
            card = "#cameras-list [data-stream='yard']"
            wait(browser, lambda b: b.execute_script(
                f"const i = document.querySelector(\"{card} img\"); return i && i.naturalWidth") == 640,
                timeout=10, message="no frame of the RTSP stream shown within 10 s")
            assert not browser.find_element(By.ID, "cameras-none").is_displayed()
            wait(browser, lambda b: _card_state(b, "yard") == "running", timeout=10)
            # The page shows the API's counters: wait until it shows the inferred count the API gave a moment ago.
            inferred = requests.get(url + "/streams/yard", timeout=5).json()["frames"]["inferred"]
            assert inferred > 0
            wait(browser, lambda b: any(int(cell.text) >= inferred for cell in b.find_elements(
                By.XPATH, "//*[@data-stream='yard']//dt[text()='inferred']/following-sibling::dd[1]")), timeout=10)
            # What the newest result found, as the page lists it, is what the camera shows.
            wait(browser, lambda b: "circle" in text_of(b, f"{card} dd.found"), timeout=10)
            found = text_of(browser, f"{card} dd.found")
            assert {name for name in COLOURS if name in found} == {obj.class_name for obj in scene.objects}, found
            text = text_of(browser, card)
            assert "fps" in text and "dropped" in text and "shapes/1" in text and "running" in text, text
            screenshot(browser, "cameras-streams")

            # Add a second stream from the form (the same camera: the RTSP server shares one pipeline).
            browser.find_element(By.ID, "cam-id").send_keys("porch")
            browser.find_element(By.ID, "cam-source").send_keys(camera.url)
            fps = browser.find_element(By.ID, "cam-fps")
            fps.clear()
            fps.send_keys("3")
            browser.find_element(By.ID, "cam-add").click()
            wait(browser, lambda b: _card_state(b, "porch") is not None, timeout=10, message="the added stream is not shown")
            added = requests.get(url + "/streams/porch", timeout=5).json()
            assert added["config"]["max_fps"] == 3 and added["model_id"] == "shapes/1"
            wait(browser, lambda b: _card_state(b, "porch") == "running", timeout=15, message="porch never ran")

            _click(browser, "Pause porch")
            wait(browser, lambda b: _card_state(b, "porch") == "paused", timeout=10, message="pause did not show")
            assert _api_state(url, "porch") == "paused" and _api_state(url, "yard") == "running"
            wait(browser, lambda b: "paused" in text_of(b, "#cameras-list [data-stream='porch'] .events"), timeout=5)
            _click(browser, "Resume porch")
            wait(browser, lambda b: _card_state(b, "porch") in ("starting", "running"), timeout=10,
                 message="resume did not show")
            assert _api_state(url, "porch") in ("starting", "running")

            _click(browser, "Remove porch")
            wait(browser, lambda b: _card_state(b, "porch") is None, timeout=10, message="remove did not show")
            assert _api_state(url, "porch") is None and _api_state(url, "yard") == "running"

            # A bad form is refused with the API's message naming the field, and nothing is added.
            browser.find_element(By.ID, "cam-id").send_keys("bad")
            browser.find_element(By.ID, "cam-source").send_keys("ftp://127.0.0.1/x")
            browser.find_element(By.ID, "cam-add").click()
            wait(browser, lambda b: "source" in text_of(b, "#cam-error"), timeout=10)
            journal.expected_severe.append(f"{url}/streams - ")  # the refused POST's 422, on purpose
            assert _api_state(url, "bad") is None
            browser.get("about:blank")  # stop the page's polling before this daemon goes away
            requests.delete(url + "/streams/yard", timeout=10)
    finally:
        camera.stop()


def test_access_keys_lock_the_console_until_a_valid_key(browser, journal, tmp_path):
    settings = Settings(host="127.0.0.1", port=0, threads=4, models_dir="", api_url="", ort_threads=1,
                        cache_dir=str(tmp_path / "cache"), access_keys=[ACCESS_KEY])
    with ThreadedDaemon(settings) as locked:
        journal.origins.add(locked.url)
        assert requests.get(locked.url + "/info", timeout=10).status_code == 401
        assert requests.get(locked.url + "/console/static/anything.js", timeout=10).status_code == 401
        journal.drain(browser)
        browser.get(locked.url + "/#/overview")
        wait(browser, lambda b: b.find_element(By.ID, "login").is_displayed())
        assert not browser.find_element(By.ID, "page-overview").is_displayed()
        time.sleep(0.5)
        events = journal.drain(browser)
        called = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
        assert called and all(url.startswith(locked.url + "/console/static/") or url.split("#")[0] == locked.url + "/"
                              for url in called), f"the locked console called the API: {called}"
        screenshot(browser, "login")

        journal.expected_severe.append(f"{locked.url}/info")  # the refused key's 401, on purpose
        browser.find_element(By.ID, "login-key").send_keys("wrong-key")
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait(browser, lambda b: "refused" in text_of(b, "#login-error"))
        assert not browser.find_element(By.ID, "page-overview").is_displayed()
        journal.drain(browser)  # the refused call is logged as a console error: proof the error check is live
        assert any("401" in entry["message"] and f"{locked.url}/info" in entry["message"] for entry in journal.severe)

        browser.find_element(By.ID, "login-key").send_keys(ACCESS_KEY)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait(browser, lambda b: "edge-daemon" in text_of(b, "#ov-version"))
        wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#ov-models tbody tr"))
        stored = browser.execute_script("return [sessionStorage.getItem('edge-daemon.access-key'),"
                                        " JSON.stringify(localStorage)]")
        assert stored[0] == ACCESS_KEY and ACCESS_KEY not in stored[1]
        events = journal.drain(browser)
        sent = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in events
                if e["method"] == "Network.requestWillBeSent"}
        assert all(ACCESS_KEY not in url for url in sent.values()), "the key went into a URL"
        headers: dict[str, dict[str, str]] = {}
        for event in events:  # the page's headers, and those as sent on the wire; names in any case
            given = (event["params"].get("request") or {}).get("headers") or event["params"].get("headers") or {}
            if event["method"] in ("Network.requestWillBeSent", "Network.requestWillBeSentExtraInfo"):
                headers.setdefault(event["params"]["requestId"], {}).update(
                    {name.lower(): value for name, value in given.items()})
        with_key = [url for request, url in sent.items()
                    if headers.get(request, {}).get("authorization") == f"Bearer {ACCESS_KEY}"]
        assert any(url.endswith("/info") for url in with_key), with_key

        browser.find_element(By.ID, "forget-key").click()
        wait(browser, lambda b: b.find_element(By.ID, "login").is_displayed())
        assert browser.execute_script("return sessionStorage.getItem('edge-daemon.access-key')") is None
        journal.drain(browser)


def test_console_off_leaves_root_a_404(tmp_path):
    settings = Settings(host="127.0.0.1", port=0, threads=2, models_dir="", api_url="",
                        cache_dir=str(tmp_path / "cache"), console=False)
    with ThreadedDaemon(settings) as off:
        assert requests.get(off.url + "/", timeout=10).status_code == 404
        spec = requests.get(off.url + "/openapi.json", timeout=10).json()
        assert "/" not in spec["paths"] and "/model/catalog" in spec["paths"]


def test_nothing_left_the_daemon_and_no_console_error(browser, daemon, journal):
    open_page(browser, daemon.url, "models")  # at least this load, even when run alone
    wait(browser, lambda b: _row_state(b, "shapes/1") is not None)
    journal.drain(browser)
    assert len(journal.urls) >= 5
    outside = [url for url in journal.urls
               if not url.startswith(("data:", "blob:", "about:blank")) and not any(url.startswith(origin + "/")
                                                                    for origin in journal.origins)]
    assert not outside, f"requests left the daemon's origin: {outside}"
    unexpected = [entry for entry in journal.severe
                  if not any(fragment in entry["message"] for fragment in journal.expected_severe)]
    assert not unexpected, f"console errors: {unexpected}"
