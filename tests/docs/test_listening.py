"""The listening page: every file it names is in the repo, and in a real browser every player and image loads."""

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "listen" / "index.md"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def test_the_page_names_exactly_its_media_files() -> None:
    named = set(re.findall(r'src="(media/[^"]+)"', PAGE.read_text()))
    present = {p.relative_to(PAGE.parent).as_posix() for p in (PAGE.parent / "media").iterdir()}
    assert named == present
    players = [n for n in named if n.endswith(".ogg")]
    # 8-12 pieces, each as it is and through the speech models (speech-lm-16k at 2, 4 and 8 codebooks) and at
    # least one classical codec
    assert 8 * 4 <= len(players) <= 12 * 9
    assert {"media/mnist-originals.png", "media/mnist-reconstructions.png", "media/mnist-samples.png"} <= named


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
def test_every_player_and_image_loads_in_chromium(built_site: Path, tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the docs extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,2000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        driver.set_script_timeout(120)
        driver.get((built_site / "listen" / "index.html").as_uri())
        # every <audio> reports its duration once its metadata is read; an unplayable file fires 'error'
        durations = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const players = [...document.querySelectorAll('audio')];
            Promise.all(players.map(a => new Promise(ok => {
                if (a.readyState >= 1) { ok(a.duration); return; }
                a.addEventListener('loadedmetadata', () => ok(a.duration));
                a.addEventListener('error', () => ok(-1));
                a.load();
            }))).then(done);""")
        images = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const images = [...document.querySelectorAll('article img')];
            Promise.all(images.map(i => i.decode().then(() => i.naturalWidth, () => 0))).then(done);""")
        driver.save_screenshot(str(tmp_path / "listen.png"))
    finally:
        driver.quit()
    expected = len(re.findall(r"<audio ", PAGE.read_text()))
    assert len(durations) == expected and all(d > 0 for d in durations), durations
    assert len(images) == len(re.findall(r"<img ", PAGE.read_text())) and all(w > 0 for w in images), images
    assert (tmp_path / "listen.png").stat().st_size > 0
