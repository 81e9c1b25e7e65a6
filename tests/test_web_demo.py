"""The web demo (`minillava serve`'s page at /) in a real headless browser, and its toy scenes.

The browser tests start the server on 127.0.0.1 in a thread with a small saved assistant,
open the page in Debian's chromium (selenium drives it: tools/web_demo.py), pick a scene or
upload a picture, ask, and wait for the streamed answer -- which must be the assistant's own
answer to the same conversation. Without chromium they are skipped, saying what to install.
"""

import base64
import io

import pytest
from PIL import Image

import web_demo   # tools/web_demo.py: conftest.py puts tools/ on sys.path
from minillava.chat import load_assistant
from minillava.serve.demo import MAX_SEED, toy_scene
from minillava.toyworld import EVAL_SEEDS, make_scene, render
from tiny_assistant import DESCRIBE, save_tiny_assistant


def picture(data_url: str) -> Image.Image:
    head, _, data = data_url.partition(",")
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_a_toy_scene_is_the_seeds_scene_at_its_native_size_as_a_data_url():
    scene = toy_scene("7")
    assert scene["object"] == "toy_scene" and scene["seed"] == 7
    assert picture(scene["image_url"]).tobytes() == render(make_scene(7)).tobytes()
    drawn = toy_scene(None)   # no seed: a scene the assistant never trained on
    assert drawn["seed"] in EVAL_SEEDS
    assert picture(drawn["image_url"]).tobytes() == render(make_scene(drawn["seed"])).tobytes()
    for bad in ("-1", "1.5", "seven", "", "²", str(MAX_SEED + 1)):
        with pytest.raises(ValueError, match=f"seed must be an integer from 0 to {MAX_SEED}"):
            toy_scene(bad)


# ---------------------------------------------------------------------------------------------
# In the browser.

needs_browser = pytest.mark.skipif(web_demo.missing() is not None, reason=f"the web demo's browser test: "
                                   f"{web_demo.missing()}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(the reference assistant, a folder with pictures, the page's URL, a browser)."""
    folder = tmp_path_factory.mktemp("web_demo")
    render(make_scene(5)).save(folder / "scene5.png")
    (folder / "notes.png").write_text("not a picture, whatever its name says")
    saved = save_tiny_assistant(folder / "assistant")
    with web_demo.serving(load_assistant(saved)) as server, web_demo.browser() as driver:
        yield load_assistant(saved), folder, server.url, driver


USER_BUBBLE = (0x36, 0x56, 0xD6)   # index.html's --accent


def user(text):
    return {"role": "user", "content": text}


def log(driver) -> list[str]:
    """The conversation on screen, bubble by bubble."""
    return [item.text for item in driver.find_elements("css selector", "#log li")]


@needs_browser
def test_pick_a_toy_scene_and_talk_about_it(demo):
    reference, _, url, driver = demo
    web_demo.open_page(driver, url)
    assert web_demo.element(driver, "model").text == reference.name   # the page asked /v1/models
    seed = web_demo.pick_random_scene(driver)
    assert seed in EVAL_SEEDS and web_demo.element(driver, "image-label").text == f"toy scene {seed}"
    scene = render(make_scene(seed))

    first, updates = web_demo.ask(driver, DESCRIBE)
    assert first == reference.ask(scene, DESCRIBE)
    assert updates > 1   # streamed: the bubble grew piece by piece
    second, _ = web_demo.ask(driver, "What colour is it?")   # the page sends the whole conversation again
    history = [user(f"<image>\n{DESCRIBE}"), {"role": "assistant", "content": first}, user("What colour is it?")]
    assert second == reference.chat([history], [scene])[0]
    assert log(driver) == [DESCRIBE, first, "What colour is it?", second]
    # What a person sees: the scene drawn at 256 x 256 pixels (image-rendering: pixelated keeps the
    # scene's own colours), and the questions in the page's blue bubbles.
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    colours = {colour for _, colour in shot.getcolors(maxcolors=1 << 20)}
    assert {colour for _, colour in scene.getcolors()} <= colours and USER_BUBBLE in colours

    web_demo.element(driver, "reset").click()   # a new conversation about the same scene
    assert log(driver) == []
    again, _ = web_demo.ask(driver, "What colour is it?")
    assert again == reference.ask(scene, "What colour is it?")


@needs_browser
def test_a_link_opens_one_scene_and_an_upload_starts_a_new_conversation(demo):
    reference, folder, url, driver = demo
    web_demo.open_page(driver, url, seed=3)
    assert web_demo.element(driver, "image-label").text == "toy scene 3"
    about_scene3, _ = web_demo.ask(driver, DESCRIBE)
    assert about_scene3 == reference.ask(render(make_scene(3)), DESCRIBE)

    web_demo.upload(driver, folder / "scene5.png")
    assert web_demo.element(driver, "image-label").text == "scene5.png" and log(driver) == []
    about_scene5, _ = web_demo.ask(driver, DESCRIBE)
    assert about_scene5 == reference.ask(render(make_scene(5)), DESCRIBE) != about_scene3


@needs_browser
def test_a_refused_picture_shows_the_servers_message_and_gives_the_question_back(demo):
    _, folder, url, driver = demo
    web_demo.open_page(driver, url)
    web_demo.upload(driver, folder / "notes.png")
    with pytest.raises(web_demo.PageError, match="not a picture that can be read"):
        web_demo.ask(driver, DESCRIBE)
    assert log(driver) == [] and web_demo.element(driver, "question").get_attribute("value") == DESCRIBE
