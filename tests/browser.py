"""The interactive page (fsr_models/app.py) driven in headless Chromium through Selenium: for its test, and to draw
the page's screenshot in the README.

    python tests/browser.py docs/app.png     # the page after one PGD-20 attack on test image 0
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from hub_server import free_port

from fsr_models import app


def drive_in_chromium(url: str, screenshot: str | Path | None = None, timeout: float = 120) -> dict[str, str]:
    """Open the page in headless Chromium, run one attack, wait for its result; returns the rendered text of the
    prediction and summary elements (and saves a screenshot of the page when asked)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as expected
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1450"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver()))
    try:
        driver.get(url)
        wait = WebDriverWait(driver, timeout)
        wait.until(expected.element_to_be_clickable((By.ID, "attack"))).click()
        wait.until(expected.text_to_be_present_in_element((By.ID, "summary"), "FSR health"))
        wait.until(lambda d: all(d.find_element(By.ID, f"{k}-adversarial").text.strip() for k in ("fsr", "plain")))
        texts = {key: driver.find_element(By.ID, key).text for key in ("summary", "fsr-clean", "fsr-adversarial")}
        texts |= {key: driver.find_element(By.ID, key).text for key in ("plain-clean", "plain-adversarial")}
        if screenshot:
            driver.save_screenshot(str(screenshot))
        return texts
    finally:
        driver.quit()


def chromedriver() -> str:
    """The chromedriver on PATH (Debian's: apt install chromium chromium-driver)."""
    found = shutil.which("chromedriver")
    if found is None:
        raise FileNotFoundError(
            "no chromedriver: install Chromium and its driver (apt install chromium chromium-driver)"
        )
    return found


def screenshot(path: str | Path, page: app.Page | None = None) -> dict[str, str]:
    """Serve the page on a free port, run one attack in headless Chromium, save the page as a PNG at `path`."""
    demo = app.build(page, weights=Path(__file__).resolve().parents[1] / "hub" / "weights")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        return drive_in_chromium(f"http://127.0.0.1:{port}", path)
    finally:
        demo.close()


if __name__ == "__main__":
    screenshot(sys.argv[1])
    print(f"wrote {sys.argv[1]}")
