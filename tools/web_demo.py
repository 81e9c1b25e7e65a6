"""The web demo of `minillava serve` in a real browser: headless chromium driven by selenium.

tests/test_web_demo.py drives the page with these helpers; run on its own, this takes the
README's screenshot of a saved assistant talking about one toy scene:

    python tools/web_demo.py runs/pipeline/assistant --out docs/web_demo.png

(docs/web_demo.png is the course's assistant, the one chapter 9 talks to, `course.assistant()`,
with the defaults below: evaluation scene 1000006 and three questions.)

It needs Debian's chromium and its driver (`apt-get install -y chromium chromium-driver`) and
selenium (`pip install -e ".[test]"`); both are found on this machine, nothing is downloaded.
The server listens on 127.0.0.1 only, on a free port, for as long as the browser needs it.
selenium is imported where it is used, so that without it ``missing()`` can say so.
"""

import argparse
import shutil
from contextlib import contextmanager
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")   # Debian's name first
DRIVER = "chromedriver"
APT_LINE = "apt-get install -y chromium chromium-driver"


def missing() -> str | None:
    """Why the browser cannot run here (a sentence with the fix), or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'selenium is not installed: pip install -e ".[test]"'
    if not any(shutil.which(name) for name in BROWSERS) or not shutil.which(DRIVER):
        return f"no chromium and chromedriver on this machine: {APT_LINE}"
    return None


def serving(assistant, **options):
    """`minillava serve`'s server for ``assistant`` on a free 127.0.0.1 port, serving in a thread
    (``server.url`` is the page's address); stopped on the way out of the ``with`` block."""
    from minillava.serve.server import running

    return running(assistant, host="127.0.0.1", port=0, **options)


@contextmanager
def browser(width: int = 980, height: int = 500):
    """A headless chromium showing pages at this size, closed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(name) for name in BROWSERS if shutil.which(name))
    # --no-sandbox: chromium refuses to start as root (CI) without it; the page is our own.
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which(DRIVER)), options=options)
    # The page's own size, exactly (a window size would include the browser's frame).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def element(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def open_page(driver, url: str, seed: int | None = None) -> None:
    """Open the demo (with toy scene ``seed`` already picked) once it knows the model's name."""
    driver.get(url + ("" if seed is None else f"?seed={seed}"))
    wait(driver, lambda d: element(d, "model").text not in ("", "connecting…"))
    if seed is not None:
        wait(driver, lambda d: element(d, "image").get_attribute("data-seed") == str(seed))


def pick_random_scene(driver) -> int:
    """Press "Random toy scene"; the seed of the scene it shows."""
    before = element(driver, "image").get_attribute("src")
    element(driver, "scene").click()
    wait(driver, lambda d: element(d, "image").get_attribute("src") != before
         and element(d, "image").get_attribute("data-seed"))
    return int(element(driver, "image").get_attribute("data-seed"))


def upload(driver, path: str | Path) -> None:
    """Choose a file in "Upload an image" (chromedriver fills a hidden file input as it is)."""
    before = element(driver, "image").get_attribute("src")
    element(driver, "upload").send_keys(str(Path(path).resolve()))
    wait(driver, lambda d: element(d, "image").get_attribute("src") != before)


class PageError(Exception):
    """The page showed an error instead of an answer."""


# Counts the changes of assistant bubbles: one per streamed piece (each sets the bubble's text).
COUNT_UPDATES = """
window.bubbleUpdates = 0;
new MutationObserver(records => {
  for (const r of records) if (r.target.classList && r.target.classList.contains("assistant")) window.bubbleUpdates++;
}).observe(document.getElementById("log"), {childList: true, subtree: true});
"""


def ask(driver, question: str, timeout: float = 120) -> tuple[str, int]:
    """Type a question and send it; once the page is idle again, the answer shown and the number
    of times its bubble changed on the way (streamed: more than once). PageError if refused."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    done = len(driver.find_elements(By.CSS_SELECTOR, "#log li.assistant.done"))
    driver.execute_script(COUNT_UPDATES)
    element(driver, "question").send_keys(question, Keys.ENTER)
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "idle"
         and (len(d.find_elements(By.CSS_SELECTOR, "#log li.assistant.done")) > done
              or element(d, "error").is_displayed()), timeout)
    if element(driver, "error").is_displayed():
        raise PageError(element(driver, "error").text)
    answer = driver.find_elements(By.CSS_SELECTOR, "#log li.assistant.done")[-1].text
    return answer, driver.execute_script("return window.bubbleUpdates")


QUESTIONS = ["How many circles are there?", "Is there a blue circle in the image?", "What shape is the red object?"]


def main() -> None:
    parser = argparse.ArgumentParser(description="A screenshot of the web demo talking about one toy scene.")
    parser.add_argument("assistant", help="a folder saved by minillava.chat.save_assistant")
    parser.add_argument("--seed", type=int, default=1_000_006, help="the toy scene (default: an evaluation scene)")
    parser.add_argument("--question", action="append",
                        help=f"a question to ask; repeat it for more turns (default: {' / '.join(QUESTIONS)})")
    parser.add_argument("--out", type=Path, default=Path("docs/web_demo.png"))
    args = parser.parse_args()
    reason = missing()
    if reason:
        raise SystemExit(reason)
    from minillava.chat import load_assistant

    with serving(load_assistant(args.assistant)) as server, browser() as driver:
        open_page(driver, server.url, args.seed)
        for question in args.question or QUESTIONS:
            answer, _ = ask(driver, question)
            print(f"you> {question}\nassistant> {answer}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
