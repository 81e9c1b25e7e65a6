"""course.expect: a trained number checked against the chapter's claim, printed so any machine matches."""

import math
import re

import pytest

from minillava import course


def test_a_claim_that_holds_prints_the_same_line_whatever_the_digits(capsys):
    course.expect(0.5512, at_least=0.45, claim="about half right")
    first = capsys.readouterr().out
    course.expect(0.5601, at_least=0.45, claim="about half right")
    second = capsys.readouterr().out
    assert first.startswith("✅ about half right (at least 0.45; measured ⟪0.551⟫)")
    sanitize = lambda text: re.sub(r"⟪[^⟫]*⟫", "⟪…⟫", text)   # the pattern in tests/nbval_sanitize.cfg
    assert first != second and sanitize(first) == sanitize(second)


def test_the_sanitizer_file_masks_what_measured_prints():
    config = (__import__("pathlib").Path(__file__).parent / "nbval_sanitize.cfg").read_text()
    assert "regex: ⟪[^⟫]*⟫" in config
    assert course.measured(0.12345) == "⟪0.123⟫" and course.measured(7) == "⟪7⟫"


@pytest.mark.parametrize("value, bounds", [(0.40, dict(at_least=0.45)), (0.30, dict(at_most=0.2)),
                                           (0.5, dict(at_least=0.6, at_most=0.9)), (math.nan, dict(at_least=0.0))])
def test_a_claim_that_fails_stops_the_chapter(value, bounds, capsys):
    with pytest.raises(course.ClaimError, match="the chapter claims"):
        course.expect(value, claim="something", **bounds)
    assert capsys.readouterr().out == ""


def test_both_bounds_are_printed_and_a_bound_is_required(capsys):
    course.expect(0.7, at_least=0.6, at_most=0.8, claim="in range")
    assert "(at least 0.6, at most 0.8; measured" in capsys.readouterr().out
    with pytest.raises(ValueError, match="needs a bound"):
        course.expect(0.7, claim="no bound")
