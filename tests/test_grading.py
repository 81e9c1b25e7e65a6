"""The graded checks: the framework, and every checker on a right answer and on wrong ones.

Fast: no notebook runs. A checker must accept the solution notebook's own answer
(tests/right_answers.py), reject every plausible wrong answer (tests/wrong_answers.py)
with a GradingError, and, when it has a bug of its own, fail with that bug's error
rather than pass it off as a rejected answer.
"""

import pytest
import torch

from minillava.course import grading
from minillava.course.grading import GradingError
from right_answers import right_answers
from wrong_answers import WRONG


def assert_rejects_all(name: str, wrong_answers: list) -> None:
    """Every wrong answer makes the checker ``name`` raise GradingError."""
    assert wrong_answers, f"tests/wrong_answers.py: WRONG[{name!r}] lists no wrong answers"
    for wrong in wrong_answers:
        try:
            grading.CHECKS[name](wrong)
        except GradingError:
            continue
        pytest.fail(f"check_{name} accepted the wrong answer {wrong!r}")


@pytest.fixture
def registry():
    """Leave :data:`grading.CHECKS` as it was found, whatever a test registers in it."""
    saved = dict(grading.CHECKS)
    yield grading.CHECKS
    grading.CHECKS.clear()
    grading.CHECKS.update(saved)


@pytest.fixture
def check_double(registry):
    """A throwaway checker that calls the learner's code the way the real ones do."""

    @grading.check("double")
    def check_double(double):
        with grading.your_code(double):
            got = double(21)
        grading.assert_equal(got, 42, what="double(21)", hint="multiply by two")

    return check_double


# ---------------------------------------------------------------- the framework


def test_passing_check_prints_one_fixed_line(check_double, capsys):
    check_double(lambda x: 2 * x)
    assert capsys.readouterr().out == "✅ double: all checks passed\n"
    assert grading.CHECKS["double"] is check_double


def test_failing_check_explains_itself(check_double, capsys):
    with pytest.raises(GradingError) as failure:
        check_double(lambda x: x + 2)
    assert str(failure.value) == "double: double(21) is wrong\n  expected: 42\n  got:      23\n  hint: multiply by two"
    assert capsys.readouterr().out == ""


def test_crash_is_a_grading_error_but_a_stub_is_not(check_double):
    def add_a_string(x):
        return x + "2"

    with pytest.raises(GradingError, match=r"^double: your code raised TypeError in add_a_string: ") as failure:
        check_double(add_a_string)
    assert isinstance(failure.value.__cause__, TypeError)

    def stub(x):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        check_double(stub)


def test_a_bug_in_a_checker_is_its_own_error_not_a_rejection(registry, capsys):
    """A checker that crashes on its own bug must not look as if it rejected every wrong answer."""

    @grading.check("buggy")
    def check_buggy(double):
        with grading.your_code(double):
            got = double(21)
        expected = {"double(21)": 42}["double 21"]   # the checker's own bug: a misspelt key
        grading.assert_equal(got, expected, what="double(21)", hint="multiply by two")

    for answer in (lambda x: 2 * x, lambda x: x + 2):   # right and wrong alike
        with pytest.raises(KeyError, match="double 21"):
            check_buggy(answer)
    with pytest.raises(KeyError):
        assert_rejects_all("buggy", [lambda x: x + 2])
    assert capsys.readouterr().out == ""


def test_an_error_the_checker_expects_stays_the_learners_to_raise(registry):
    """``your_code`` converts what escapes the block, not an exception caught inside it."""

    @grading.check("strict")
    def check_strict(parse):
        with grading.your_code(parse):
            try:
                parse("-1")
            except ValueError:
                return
        raise GradingError("parse('-1') returned instead of raising ValueError", hint="refuse negative numbers")

    def parse(text):
        if int(text) < 0:
            raise ValueError("negative")
        return int(text)

    check_strict(parse)
    with pytest.raises(GradingError, match="returned instead of raising ValueError"):
        check_strict(int)
    with pytest.raises(GradingError, match="your code raised TypeError in <lambda>"):
        check_strict(lambda text: text + 1)


def test_checker_name_must_match_function_name():
    with pytest.raises(ValueError, match="check_projector"):
        grading.check("projector")(lambda impl: None)


def test_wrong_answer_machinery_fails_when_it_should(check_double):
    assert_rejects_all("double", [lambda x: x + 2, lambda x: x * 3, lambda x: x.shape])
    with pytest.raises(pytest.fail.Exception, match="accepted the wrong answer"):
        assert_rejects_all("double", [lambda x: x + 2, lambda x: x + x])
    with pytest.raises(AssertionError, match="no wrong answers"):
        assert_rejects_all("double", [])


def test_expect_type():
    grading.expect_type("text", str, what="reply", hint="h")
    grading.expect_type(3, (int, float), what="n", hint="h")
    with pytest.raises(GradingError) as failure:
        grading.expect_type(3, str, what="reply", hint="return the text")
    assert str(failure.value) == "reply: expected a str\n  got:      int\n  hint: return the text"
    with pytest.raises(GradingError, match="expected a number"):
        grading.expect_type(True, (int, float), what="n", hint="h", expected="a number")   # True is no count
    with pytest.raises(GradingError) as failure:   # the right type in the wrong form: the value is shown
        grading.expect_type((1, 2, 3), tuple, what="scores", hint="h", expected="a pair", where=lambda p: len(p) == 2)
    assert str(failure.value) == "scores: expected a pair\n  got:      (1, 2, 3)\n  hint: h"


def test_assert_close():
    grading.assert_close(torch.ones(2, 3) + 1e-7, torch.ones(2, 3), what="y", hint="h")
    grading.assert_close(torch.ones(2, dtype=torch.float16), [1.0, 1.0], what="y", hint="h")
    with pytest.raises(GradingError, match=r"y: values differ \(shape \(2, 3\), max abs diff 0\.5 > atol 1e-05\)"):
        grading.assert_close(torch.ones(2, 3).index_fill(1, torch.tensor([2]), 1.5), torch.ones(2, 3), what="y", hint="h")
    with pytest.raises(GradingError, match="max abs diff nan"):
        grading.assert_close(torch.tensor([float("nan")]), torch.tensor([0.0]), what="y", hint="h")
    with pytest.raises(GradingError) as failure:
        grading.assert_close(torch.ones(2, 3), torch.ones(3, 2), what="y", hint="transpose?")
    assert str(failure.value) == "y: wrong shape\n  expected: (3, 2)\n  got:      (2, 3)\n  hint: transpose?"
    with pytest.raises(GradingError, match="expected a torch.Tensor"):
        grading.assert_close([1.0], torch.ones(1), what="y", hint="h")


def test_assert_equal():
    grading.assert_equal(torch.tensor([1, 2, 3]), [1, 2, 3], what="ids", hint="h")
    grading.assert_equal((2, 5), (2, 5), what="shape", hint="h")
    with pytest.raises(GradingError, match=r"ids: 1 of 3 values differ \(shape \(3,\)\)"):
        grading.assert_equal(torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]), what="ids", hint="h")
    with pytest.raises(GradingError, match="shape is wrong"):
        grading.assert_equal((5, 2), (2, 5), what="shape", hint="h")


def test_assert_number():
    grading.assert_number(1, 1.0 + 1e-12, what="f1", hint="h")
    with pytest.raises(GradingError, match="f1 is wrong"):
        grading.assert_number(float("nan"), 0.5, what="f1", hint="h")
    with pytest.raises(GradingError, match="f1: expected a number"):
        grading.assert_number(torch.tensor(0.5), 0.5, what="f1", hint="h")


# ---------------------------------------------------------------- every checker of the course


def test_every_checker_has_a_right_and_a_wrong_answer():
    right, _ = right_answers()
    assert list(right) == list(grading.CHECKS), "each checker is called by one solution notebook, in chapter order"
    assert set(WRONG) == set(grading.CHECKS), "tests/wrong_answers.py: one entry per checker, each a real one"
    assert all(WRONG.values()), "tests/wrong_answers.py: an entry with no wrong answers"


@pytest.mark.parametrize("name", list(grading.CHECKS))
def test_checker_lives_in_the_module_of_its_chapter(name):
    """check_projector, which 03_architecture calls, lives in grading/ch03_architecture.py."""
    _, chapter = right_answers()
    assert grading.CHECKS[name].__module__ == f"minillava.course.grading.ch{chapter[name]}"


@pytest.mark.parametrize("name", list(grading.CHECKS))
def test_checker_accepts_the_solution(name, capsys):
    right, _ = right_answers()
    grading.CHECKS[name](right[name])
    assert capsys.readouterr().out == f"✅ {name}: all checks passed\n"


@pytest.mark.parametrize("name", list(grading.CHECKS))
def test_checker_rejects_wrong_answers(name):
    assert_rejects_all(name, WRONG[name])
