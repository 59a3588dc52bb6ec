"""Drive the Search page in headless Chromium: upload an image, wait for results, save a screenshot.

    python -m bench.ui_screenshot --url http://127.0.0.1:8501 --image PATH \
        --out docs/screenshots/search.png

Point it at `make run` (or any running UI); it prints the first result.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 1100)
FIRST_CARD = ".st-key-hit_1"
PAGE_ERROR = "[data-testid=stAlertContentError] [data-testid=stMarkdownContainer]"
_CARD_TEXT = re.compile(r"#(?P<rank>\d+) · score (?P<score>\d+\.\d+)\s+(?P<caption>.+)", re.S)
_ALL_IMAGES_LOADED = (
    "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);"
)


@dataclass(frozen=True, slots=True)
class ShownResult:
    """One result card as a person sees it on the page."""

    rank: int
    score: float
    label: str
    name: str


def wait_until_serving(url: str, timeout_s: float = 60.0) -> None:
    """Block until the Streamlit server at `url` answers its health check; TimeoutError if not."""
    deadline = time.monotonic() + timeout_s
    health = url.rstrip("/") + "/_stcore/health"
    while True:
        try:
            with urllib.request.urlopen(health, timeout=2.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no Streamlit server answered at {health} within {timeout_s:g} s")
        time.sleep(0.25)


def headless_chromium(user_data_dir: Path) -> WebDriver:
    """Headless Chromium with a fresh profile, no background traffic, a desktop-sized window."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={user_data_dir}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def _parse_card(text: str) -> ShownResult | None:
    match = _CARD_TEXT.fullmatch(text.strip())
    if match is None:
        return None
    label, _, name = match["caption"].strip().rpartition(" · ")
    return ShownResult(int(match["rank"]), float(match["score"]), label, name)


class PageError(Exception):
    """The page showed an error instead of results."""


def _first_card_or_error(driver: WebDriver) -> ShownResult | PageError | None:
    """The parsed first result card, the page's error, or None while neither has appeared."""
    try:
        cards = driver.find_elements(By.CSS_SELECTOR, FIRST_CARD)
        if cards:
            return _parse_card(cards[0].text)
        errors = driver.find_elements(By.CSS_SELECTOR, PAGE_ERROR)
        return PageError(errors[0].text) if errors else None
    except StaleElementReferenceException:
        return None  # Streamlit re-rendered under us; the next poll reads the new page.


def search_and_screenshot(
    driver: WebDriver, url: str, image: Path, out: Path, timeout_s: float = 60.0
) -> ShownResult:
    """Open the Search page, upload `image`, wait for the results, save a PNG of the window.

    Raises PageError with the page's message when it shows an error instead of results, and
    selenium's TimeoutException when neither appears within `timeout_s`.
    """
    driver.get(url)
    wait = WebDriverWait(driver, timeout_s, ignored_exceptions=[StaleElementReferenceException])
    file_input = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "input[type=file]"))
    file_input.send_keys(str(image.resolve()))
    outcome = wait.until(_first_card_or_error, f"no results or error within {timeout_s:g} s")
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "[data-testid=stStatusWidget]"))
    wait.until(lambda d: bool(d.execute_script(_ALL_IMAGES_LOADED)))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(out)):
        raise OSError(f"could not write the screenshot to {out}")
    if isinstance(outcome, PageError):
        raise outcome
    assert outcome is not None  # until() returns only a truthy value
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: screenshot a running UI and print the first result."""
    parser = argparse.ArgumentParser(prog="python -m bench.ui_screenshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="the running UI")
    parser.add_argument("--image", type=Path, required=True, help="query image to upload")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots/search.png"))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for results")
    args = parser.parse_args(argv)
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        print(f"error: needs {CHROMIUM} and {CHROMEDRIVER} (make browser)", file=sys.stderr)
        return 1
    if not args.image.is_file():
        print(f"error: {args.image} is not a file", file=sys.stderr)
        return 1
    try:
        wait_until_serving(args.url, args.timeout)
        with tempfile.TemporaryDirectory(prefix="lookalike-chromium-") as profile:
            driver = headless_chromium(Path(profile))
            try:
                first = search_and_screenshot(driver, args.url, args.image, args.out, args.timeout)
            finally:
                driver.quit()
    except PageError as exc:
        print(f"error: the page shows: {exc} (screenshot: {args.out})", file=sys.stderr)
        return 1
    except WebDriverException as exc:
        print(f"error: {exc.msg or type(exc).__name__}", file=sys.stderr)
        return 1
    except (TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"first result: #{first.rank} score {first.score:.3f} {first.label} {first.name}")
    print(f"screenshot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
