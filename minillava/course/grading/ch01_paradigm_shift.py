"""Chapter 1, the paradigm shift: a toy scene written in words, as the toy language model reads it."""

from minillava.course.grading.core import GradingError, check, expect_type, your_code
from minillava.data.rules import scene_text
from minillava.toyworld import make_scene


@check("write_scene")
def check_write_scene(write_scene):
    """``write_scene(annotation) -> str``: a toy scene in words, as the toy LM reads it (``rules.scene_text``)."""
    hint = ("'On a <background> background, from left to right: ' then the objects sorted by their box's left "
            "edge x1, each as 'a <size> <color> <shape>' (+ ' with a/an <mark> dot' if it has a mark) + ' ' + its "
            "place, joined 'A', 'A and B', 'A, B and C', then '.'; the place comes from the box centre, with y "
            "growing downwards and the canvas cut in thirds: 'in the top left', 'at the top', 'on the left', "
            "'in the centre', ...")
    # Base scenes of 1 to 4 objects, then fine-variant scenes: non-square canvases and dots of every colour.
    scenes = [make_scene(seed) for seed in range(40)] + [make_scene(seed, "fine") for seed in range(10)]
    for scene in scenes:
        annotation = scene.annotation()
        expected = scene_text(annotation)   # before the learner's code runs, in case it edits the dict
        with your_code(write_scene):
            got = write_scene(annotation)
        what = f"written {scene.variant} scene {scene.seed} ({len(scene.objects)} objects)"
        expect_type(got, str, what=what, hint=hint)
        if got != expected:
            raise GradingError(f"{what} differs", expected=repr(expected), got=repr(got), hint=hint)
