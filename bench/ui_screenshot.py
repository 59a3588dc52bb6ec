"""Drive the UI in headless Chromium: upload an image, see the results, click "More like this",
then visit every page, saving a screenshot of each.

    python -m bench.ui_screenshot --url http://127.0.0.1:8501 --image PATH \
        --out docs/screenshots [--ingest FOLDER] [--evaluate FOLDER] [--train FOLDER]

Point it at `make run` (or any running UI); it prints the first result of each search.
`--ingest`, `--evaluate` and `--train` start those jobs (folders on the server, under its job roots) and
wait for them to finish before the screenshot.
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
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 1100)
FIRST_CARD = ".st-key-hit_1"
MORE_LIKE_THIS = ".st-key-more_{rank} button"
STORED_QUERY = ".st-key-stored_query"
RUNNING = "[data-testid=stStatusWidget]"
CANVAS_PAINT_S = 0.5
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


def _settle(driver: WebDriver, wait: WebDriverWait[WebDriver]) -> None:
    """Wait until Streamlit has finished running the script and every image has loaded."""
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, RUNNING))
    wait.until(lambda d: bool(d.execute_script(_ALL_IMAGES_LOADED)))


def _save(driver: WebDriver, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Tables are drawn on a canvas a frame or two after the script run ends; nothing on the
    # page signals it.
    time.sleep(CANVAS_PAINT_S)
    # The pointer rests where the last click was, and that button's tooltip would cover a card.
    # The page's caption shows nothing on hover (a title shows its anchor link).
    rests = driver.find_elements(By.CSS_SELECTOR, "[data-testid=stCaptionContainer]")
    if rests:
        ActionChains(driver).move_to_element(rests[0]).perform()
    # The whole page, not only the window: results and tables run below the fold.
    height = int(driver.execute_script(
        "const m = document.querySelector('[data-testid=stMain]');"
        "return Math.max(m ? m.scrollHeight : 0, document.body.scrollHeight);"))
    driver.set_window_size(WINDOW[0], max(WINDOW[1], min(height + 40, 4000)))
    try:
        if not driver.save_screenshot(str(out)):
            raise OSError(f"could not write the screenshot to {out}")
    finally:
        driver.set_window_size(*WINDOW)
    return out


def _page_error(driver: WebDriver) -> PageError | None:
    errors = driver.find_elements(By.CSS_SELECTOR, PAGE_ERROR)
    return PageError(errors[0].text) if errors else None


def more_like_this(
    driver: WebDriver, rank: int, out: Path, timeout_s: float = 60.0
) -> tuple[ShownResult, str, ShownResult]:
    """Click "More like this" on result `rank` of the shown results; wait for the new results.

    Returns the result clicked, the query panel's text (it names the stored image now searched)
    and the new first result, and saves a screenshot.
    """
    wait = WebDriverWait(driver, timeout_s, ignored_exceptions=[StaleElementReferenceException])
    clicked = _parse_card(driver.find_element(By.CSS_SELECTOR, f".st-key-hit_{rank}").text)
    if clicked is None:
        raise PageError(f"result #{rank} does not read as a result card")
    driver.find_element(By.CSS_SELECTOR, MORE_LIKE_THIS.format(rank=rank)).click()
    panel = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, STORED_QUERY))[0]
    _settle(driver, wait)
    outcome = wait.until(_first_card_or_error, f"no results or error within {timeout_s:g} s")
    _save(driver, out)
    if isinstance(outcome, PageError):
        raise outcome
    assert outcome is not None
    return clicked, driver.find_element(By.CSS_SELECTOR, STORED_QUERY).text or panel.text, outcome


def screenshot_page(
    driver: WebDriver, url: str, ready: str, out: Path, timeout_s: float = 60.0
) -> str:
    """Open `url`, wait for the element `ready` (CSS), save a screenshot; the element's text.

    Raises PageError when the page shows an error instead.
    """
    driver.get(url)
    wait = WebDriverWait(driver, timeout_s, ignored_exceptions=[StaleElementReferenceException])
    found = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ready) or _page_error(d),
                       f"{ready} did not appear on {url} within {timeout_s:g} s")
    _settle(driver, wait)
    _save(driver, out)
    if isinstance(found, PageError):
        raise found
    return str(driver.find_element(By.CSS_SELECTOR, ready).text)


def run_job_and_screenshot(
    driver: WebDriver, url: str, prefix: str, source: str, out: Path, timeout_s: float = 300.0
) -> str:
    """On the Ingest, Evaluate or Train page at `url`, start a job on `source` (keys `<prefix>_source`
    or `<prefix>_folder`, `<prefix>_start`), wait for its result, save a screenshot; the
    result's text. Raises PageError when the page shows an error instead."""
    driver.get(url)
    wait = WebDriverWait(driver, timeout_s, ignored_exceptions=[StaleElementReferenceException])
    field = wait.until(lambda d: d.find_element(
        By.CSS_SELECTOR, f".st-key-{prefix}_source input, .st-key-{prefix}_folder input"))
    field.send_keys(source)
    # Streamlit renders a page element by element: the button can come after the field.
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f".st-key-{prefix}_start button")).click()
    result = f".st-key-{prefix}_result"
    found = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, result) or _page_error(d),
                       f"the {prefix} job did not finish within {timeout_s:g} s")
    _settle(driver, wait)
    _save(driver, out)
    if isinstance(found, PageError):
        raise found
    return str(driver.find_element(By.CSS_SELECTOR, result).text)


@dataclass(frozen=True, slots=True)
class Tour:
    """What the tour saw: the first result of the upload, the result "More like this" was
    clicked on, the query panel and first result after it, the text of each page's main element
    (by page name) and the screenshot of each page."""

    first: ShownResult
    clicked: ShownResult
    similar_query: str
    similar_first: ShownResult
    texts: dict[str, str]
    screenshots: list[Path]


def tour(
    driver: WebDriver, url: str, image: Path, out_dir: Path, *, ingest: str = "",
    evaluate: str = "", train: str = "", timeout_s: float = 120.0,
) -> Tour:
    """Search by `image`, click "More like this" on the second result, then screenshot Browse,
    Ingest (a job on `ingest` when given), Evaluate (on `evaluate`), Train (on `train`) and
    Admin."""
    base = url.rstrip("/")
    shots = [out_dir / "search.png"]
    first = search_and_screenshot(driver, base, image, shots[0], timeout_s)
    shots.append(out_dir / "more_like_this.png")
    clicked, panel, similar = more_like_this(driver, 2, shots[-1], timeout_s)
    texts = {"browse": screenshot_page(driver, f"{base}/browse", ".st-key-browse_nav",
                                       out_dir / "browse.png", timeout_s)}
    shots.append(out_dir / "browse.png")
    for page, prefix, source in (("ingest", "ingest", ingest), ("evaluate", "eval", evaluate),
                                 ("train", "train", train)):
        out = out_dir / f"{page}.png"
        if source:
            texts[page] = run_job_and_screenshot(driver, f"{base}/{page}", prefix, source, out,
                                                 timeout_s)
        else:
            texts[page] = screenshot_page(driver, f"{base}/{page}", f".st-key-{prefix}_start",
                                          out, timeout_s)
        shots.append(out)
    texts["admin"] = screenshot_page(driver, f"{base}/admin", ".st-key-admin_health",
                                     out_dir / "admin.png", timeout_s)
    shots.append(out_dir / "admin.png")
    return Tour(first=first, clicked=clicked, similar_query=panel, similar_first=similar,
                texts=texts, screenshots=shots)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: tour a running UI, screenshot each page, print the first results."""
    parser = argparse.ArgumentParser(prog="python -m bench.ui_screenshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="the running UI")
    parser.add_argument("--image", type=Path, required=True, help="query image to upload")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"),
                        help="folder for the screenshots")
    parser.add_argument("--ingest", default="", help="a folder on the server to ingest")
    parser.add_argument("--evaluate", default="", help="a labelled folder on the server")
    parser.add_argument("--train", default="",
                        help="a labelled folder on the server to fine-tune on (minutes on a CPU)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per step")
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
                seen = tour(driver, args.url, args.image, args.out, ingest=args.ingest,
                            evaluate=args.evaluate, train=args.train, timeout_s=args.timeout)
            finally:
                driver.quit()
    except PageError as exc:
        print(f"error: the page shows: {exc} (screenshots: {args.out})", file=sys.stderr)
        return 1
    except WebDriverException as exc:
        print(f"error: {exc.msg or type(exc).__name__}", file=sys.stderr)
        return 1
    except (TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for what, hit in (("upload", seen.first), ("more like this", seen.similar_first)):
        print(f"{what}: first result #{hit.rank} score {hit.score:.3f} {hit.label} {hit.name}")
    print("screenshots: " + ", ".join(str(p) for p in seen.screenshots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
