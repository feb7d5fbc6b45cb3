"""The chat page in a real browser: Debian's chromium through chromium-driver, driven by selenium, against a server
on 127.0.0.1 (tiny random model, a three-passage index). The test types a question with the keyboard, waits for
the streamed answer, checks that a cited passage appears and expands to its text, and saves a screenshot
($GROUNDTUNE_SCREENSHOT, else the test's temporary folder). A second test asks in Korean and checks that Hangul is
drawn with real glyphs, not the empty boxes of a missing font ($GROUNDTUNE_SCREENSHOT_KO). Skips, saying what is
missing, without a browser."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
pytest.importorskip("uvicorn")

from test_serve import one_thread  # noqa: E402,F401  (fixture: one torch thread for the tiny model)

BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(BROWSER is None or DRIVER is None,
                                reason="no chromium + chromedriver on PATH (Debian: apt-get install chromium "
                                       "chromium-driver; install.sh does it where apt is available)")


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    from test_serve import base_model

    import groundtune as gt
    from groundtune.retrieval.index import Retriever, build_index
    from groundtune.retrieval.passages import Passage
    from groundtune.serve import BackgroundServer, build
    from tiny import tiny_tokenizer

    root = tmp_path_factory.mktemp("browser")
    adapter = gt.save_adapter(gt.attach(base_model(), gt.LlamaAdapterConfig(layers=2, length=3)), root / "adapter")
    build_index([Passage("licence-faq", "w20 w21 renew licence online w22", "Renewing a licence"),
                 Passage("fees", "w30 w31 fees w32", "Fees"),
                 Passage("면허-안내", "운전면허 갱신은 가까운 운전면허시험장이나 온라인으로 신청할 수 있습니다.", "운전면허 갱신")],
                root / "index", dense=False, show_progress=False)
    app, engine = build(base_model(), tiny_tokenizer(), {"doc2dial": adapter}, retriever=Retriever.load(root / "index"),
                        base_name="tiny-base")
    with BackgroundServer(app) as url:
        yield url
    engine.close()


def _browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,760",
                "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def test_chat_page_streams_an_answer_with_citations(page_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = _browser()
    try:
        driver.get(page_server + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2)
        assert Select(driver.find_element(By.ID, "model")).first_selected_option.get_attribute("value") == "doc2dial"
        # every control has a label
        for control in driver.find_elements(By.CSS_SELECTOR, "select, textarea, input:not([type=checkbox])"):
            assert driver.find_elements(By.CSS_SELECTOR, f"label[for='{control.get_attribute('id')}']")
        box = driver.find_element(By.ID, "question")
        box.click()
        box.send_keys("how do I renew my licence", Keys.ENTER)  # Enter sends
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".turn.assistant[data-done='true']")))
        answer = driver.find_element(By.CSS_SELECTOR, ".turn.assistant .answer").text
        assert answer.strip(), "no answer streamed in"
        assert not driver.find_elements(By.CSS_SELECTOR, ".turn.assistant .error")
        cited = driver.find_elements(By.CSS_SELECTOR, ".turn.assistant .citation summary")
        assert cited and "Renewing a licence" in cited[0].text
        cited[0].click()  # expands to the passage text
        assert "renew licence online" in driver.find_element(By.CSS_SELECTOR, ".citation details[open] p").text
        shot = Path(os.environ.get("GROUNDTUNE_SCREENSHOT") or tmp_path / "chat.png")
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 1000
    finally:
        driver.quit()


# Draws two Hangul syllables in the element's own font on a canvas and says whether their pixels differ: with no
# font that covers Hangul, the browser draws both as the same empty box (tofu), so they are equal.
_GLYPHS_DIFFER = """
const font = getComputedStyle(arguments[0]).font;
const draw = (ch) => {
  const c = document.createElement("canvas"); c.width = 64; c.height = 64;
  const g = c.getContext("2d"); g.font = font; g.fillStyle = "#000"; g.textBaseline = "top"; g.fillText(ch, 4, 4);
  return Array.from(g.getImageData(0, 0, 64, 64).data).join(",");
};
const a = draw("\uAC00"), b = draw("\uB098"), blank = draw(" ");
return [a !== b, a !== blank, font];
"""


def test_chat_page_shows_hangul(page_server, tmp_path):
    """A Korean question, typed, comes back in the log as typed; the Korean passage is cited with its Hangul title
    and text; and Hangul is drawn with glyphs (the fonts-nanum / fonts-noto-cjk package, or the OS's own fonts)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    question = "운전면허 갱신은 어디에서 신청하나요?"
    driver = _browser()
    try:
        driver.get(page_server + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2)
        box = driver.find_element(By.ID, "question")
        box.click()
        box.send_keys(question, Keys.ENTER)
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".turn.assistant[data-done='true']")))
        shown = driver.find_element(By.CSS_SELECTOR, ".turn.user .answer")
        assert shown.text == question  # UTF-8 all the way: typed, sent, shown
        cited = driver.find_elements(By.CSS_SELECTOR, ".turn.assistant .citation summary")
        assert cited and "운전면허 갱신" in cited[0].text, [c.text for c in cited]
        cited[0].click()
        assert "온라인으로 신청할 수 있습니다" in driver.find_element(By.CSS_SELECTOR, ".citation details[open] p").text
        shot = Path(os.environ.get("GROUNDTUNE_SCREENSHOT_KO") or tmp_path / "chat-ko.png")
        driver.save_screenshot(str(shot))  # before the glyph check, so that a failure leaves the picture behind
        assert shot.stat().st_size > 1000
        differ, inked, font = driver.execute_script(_GLYPHS_DIFFER, shown)
        assert inked, f"Hangul draws nothing in the page's font ({font})"
        assert differ, (f"가 and 나 are drawn alike in the page's font ({font}): the browser has no font for Hangul and "
                        "shows empty boxes; install one (Debian: apt-get install fonts-nanum)")
    finally:
        driver.quit()
