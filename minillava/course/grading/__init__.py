"""Graded checks for the course notebooks.

A graded cell in a chapter calls one checker on the learner's implementation::

    from minillava.course import grading
    grading.check_projector(MyProjector)

On success a checker prints exactly one line, ``✅ projector: all checks passed``. The
line holds no floats or timings, so strict ``pytest --nbval`` can compare it on any
machine. On failure it raises :class:`GradingError`, whose message says what was
expected, what was got, and how to fix it.

The package reads in the course's order: :mod:`~minillava.course.grading.core` holds the
machinery every checker shares, then one module per chapter holds that chapter's
checkers, ``ch01_paradigm_shift`` to ``ch09_capstone``. Importing them here, in that
order, fills :data:`CHECKS` chapter by chapter.

Writing a checker (about ten lines)::

    @check("projector")
    def check_projector(Projector):
        gen = torch.Generator().manual_seed(0)           # local RNG: leave the notebook's alone
        x = torch.randn(2, 5, 8, generator=gen)
        with your_code(Projector):                       # the learner's code runs here, and only here
            proj = Projector(vision_dim=8, text_dim=16)
            y = proj(x)
        assert_equal(tuple(y.shape), (2, 5, 16), what="output shape",
                     hint="map the last dimension vision_dim -> text_dim; keep batch and patches")
        assert_close(y, reference(proj, x), what="projector output",
                     hint="Linear, then GELU, then Linear (LLaVA-1.5's mlp2x_gelu)")

Rules:

- The function is named ``check_<name>``, registered with ``@check("<name>")`` in the
  module of the chapter whose notebook calls it, and imported below; it lands in
  :data:`CHECKS` under ``<name>``.
- It takes the learner's implementation (a function or a class) as its argument and
  prints nothing itself: the decorator prints the success line.
- It runs the learner's code only inside ``with your_code(implementation):``. An
  exception raised there is the learner's mistake: it becomes a GradingError naming the
  function that raised. ``NotImplementedError`` passes through unchanged: it means the
  exercise stub has not been filled in yet.
- It rejects an answer only by raising :class:`GradingError` (directly or through
  :func:`expect_type`, :func:`assert_equal`, :func:`assert_close`, :func:`assert_number`).
  Any other exception raised outside ``your_code`` is a bug in the checker and surfaces as
  the error it is, never as a rejected answer. So the checker checks what the learner's
  code returned (:func:`expect_type`) before it uses it.
- tests/right_answers.py runs it on the solution notebook's answer, which it must accept;
  add at least one plausible wrong implementation to tests/wrong_answers.py, which it
  must reject with a GradingError.
"""

from minillava.course.grading.core import (
    CHECKS,
    GradingError,
    assert_close,
    assert_equal,
    assert_number,
    check,
    expect_type,
    your_code,
)
from minillava.course.grading.ch01_paradigm_shift import check_write_scene
from minillava.course.grading.ch02_data_engine import check_parse_conversation, check_symbolic_context
from minillava.course.grading.ch03_architecture import check_masked_loss, check_projector, check_splice
from minillava.course.grading.ch04_two_stage_training import check_param_groups, check_token_weighted_accumulation
from minillava.course.grading.ch05_llava15_next import check_pack_rows, check_select_best_resolution, check_unpad
from minillava.course.grading.ch06_chat_templates import check_build_labels, check_render_vicuna
from minillava.course.grading.ch07_data_mixing import check_ratio_sampler
from minillava.course.grading.ch08_evaluation import check_chair_scores, check_parse_judgement, check_pope_metrics
from minillava.course.grading.ch09_capstone import check_gap_by_topic
