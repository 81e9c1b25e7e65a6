"""Claims about trained numbers, checked in code, so that a chapter passes on any machine.

A number that comes out of training (an accuracy, a loss, an F1) changes in its last digits
from one machine to another: another CPU sums in another order, a GPU trains in bf16. Strict
``pytest --nbval`` compares a chapter's outputs character by character, so a chapter that
prints such a number verbatim fails everywhere but on the machine that stored it. The rule:

- deterministic facts (shapes, token counts, equality with transformers, data counts) are
  printed as they are and compared exactly;
- a trained number is checked here against the claim the chapter's text makes, with a
  tolerance its spread justifies, and printed between ``⟪ ⟫``, which the tests mask
  (tests/nbval_sanitize.cfg), or in a cell marked ``# NBVAL_IGNORE_OUTPUT``::

    course.expect(vqa, at_least=0.45, claim="every arm answers about half the questions right")
    ✅ every arm answers about half the questions right (at least 0.45; measured ⟪0.55⟫)

The ✅ line is the same on every machine where the claim holds. Where it does not, the run
stops with :class:`ClaimError`: the text no longer says what the code measured.
"""

import math


class ClaimError(AssertionError):
    """A chapter's claim about a trained number did not hold on this run."""


def measured(value, digits: int = 3) -> str:
    """A trained number as the chapters print it: rounded, between ⟪ ⟫ (masked by the tests)."""
    return f"⟪{value:.{digits}f}⟫" if isinstance(value, float) else f"⟪{value}⟫"


def expect(value: float, *, claim: str, at_least: float | None = None, at_most: float | None = None,
           digits: int = 3) -> None:
    """Check ``at_least <= value <= at_most`` (either bound may be left out); print the claim with a ✅."""
    if at_least is None and at_most is None:
        raise ValueError("expect needs a bound: at_least=..., at_most=... or both")
    bounds = ([] if at_least is None else [f"at least {at_least:g}"]) + ([] if at_most is None else [f"at most {at_most:g}"])
    holds = not math.isnan(value) and (at_least is None or value >= at_least) and (at_most is None or value <= at_most)
    if not holds:
        raise ClaimError(f"the chapter claims {claim} ({', '.join(bounds)}), but this run measured "
                         f"{value:.{digits}f}: the text no longer holds here; report the machine and the number")
    print(f"✅ {claim} ({', '.join(bounds)}; measured {measured(float(value), digits)})")
