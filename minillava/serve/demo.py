"""What the web demo needs from the server besides the OpenAI API: toy scenes to talk about.

NOTE for server.py (agreed between the two authors of this room): the server answers
``GET /v1/toy_scene`` and ``GET /v1/toy_scene?seed=N`` with ``toy_scene(value of seed or None)``
as JSON (200), and a ``ValueError`` from it as its usual 400 error in OpenAI's shape (the
message is the error's text). The page itself (``static/index.html``, ``static/demo.js``) is
plain HTML and JavaScript with no build step; the server hands out that folder at ``/`` and
``/static/``.

The page asks for a scene and sends it back, as the ``data:`` URL it got, in an ``image_url``
part like any other picture: the demo goes through the same API as every client. Without a
seed, the scene is drawn from the evaluation range, scenes the assistant never trained on.
"""

import base64
import io
import random

from minillava.toyworld import EVAL_SEEDS, make_scene, render

TOY_SCENE_PATH = "/v1/toy_scene"
MAX_SEED = 2**32 - 1   # any seed makes a scene; a bound keeps the parameter an ordinary integer


def parse_seed(value: str | None) -> int:
    """The ``seed`` query parameter, an integer from 0 to MAX_SEED; absent: a random evaluation scene."""
    if value is None:
        return random.randrange(EVAL_SEEDS.start, EVAL_SEEDS.stop)
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to {MAX_SEED}, got {value[:40]!r} "
                         f"(the assistant never trained on {EVAL_SEEDS.start} to {EVAL_SEEDS.stop - 1})")
    return int(value)


def toy_scene(seed: str | None = None) -> dict:
    """The toy scene with this seed, drawn at its native size (what the assistant was trained on):
    ``{"object": "toy_scene", "seed": N, "image_url": "data:image/png;base64,..."}``, the URL ready
    to go into a chat message's image_url part."""
    seed = parse_seed(seed)
    buffer = io.BytesIO()
    render(make_scene(seed)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"object": "toy_scene", "seed": seed, "image_url": url}
