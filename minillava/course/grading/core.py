"""The machinery every checker shares: the error, the registry, and the few ways to compare.

A checker's whole vocabulary is here: :func:`check` registers it, :func:`your_code` marks
where the learner's code runs, and :func:`expect_type`, :func:`assert_equal`,
:func:`assert_close` and :func:`assert_number` compare what came back with what should
have. Each of them fails by raising :class:`GradingError`, whose message says what was
expected, what was got, and how to fix it.
"""

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch

CHECKS: dict[str, Callable[..., None]] = {}
"""Every registered checker, by name (``"projector"`` for ``check_projector``), in chapter order."""

_UNSET = object()


class GradingError(AssertionError):
    """A graded check failed; ``str(err)`` explains what was expected and how to fix it."""

    def __init__(self, what: str, *, expected: Any = _UNSET, got: Any = _UNSET, hint: str | None = None):
        super().__init__(what)
        self.what, self.expected, self.got, self.hint = what, expected, got, hint
        self.check_name: str | None = None  # set by @check, which knows which checker failed

    def __str__(self) -> str:
        lines = [f"{self.check_name}: {self.what}" if self.check_name else self.what]
        if self.expected is not _UNSET:
            lines.append(f"  expected: {self.expected}")
        if self.got is not _UNSET:
            lines.append(f"  got:      {self.got}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


def check(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``check_<name>`` in :data:`CHECKS` and print the success line when it passes.

    Only a :class:`GradingError` means "wrong answer"; the decorator adds the checker's name
    to it. Anything else a checker raises is left alone: a ``NotImplementedError`` is an
    unfilled stub, and any other exception is a bug in the checker, to be seen as one.
    """

    def register(checker: Callable[..., None]) -> Callable[..., None]:
        # One spelling everywhere: notebooks call check_<name>, tests key wrong answers by <name>.
        if checker.__name__ != f"check_{name}":
            raise ValueError(f"checker for {name!r} must be named check_{name}, not {checker.__name__}")

        @functools.wraps(checker)
        def run(*args: Any, **kwargs: Any) -> None:
            try:
                checker(*args, **kwargs)
            except GradingError as err:
                err.check_name = name
                raise
            print(f"✅ {name}: all checks passed")

        CHECKS[name] = run
        return run

    return register


@contextlib.contextmanager
def your_code(implementation: Any) -> Iterator[None]:
    """Run the learner's code in this block: an exception it raises becomes a GradingError naming it.

    A crash inside the learner's function is their mistake to fix, so it is graded like a wrong
    answer. The block holds the learner's call and nothing of the checker's own, so that a bug
    in the checker still surfaces as the error it is. ``NotImplementedError`` passes through
    unchanged: it means the exercise stub has not been filled in yet. An exception the checker
    wants (a ``ValueError`` for bad input) is caught inside the block, before it gets here.
    """
    try:
        yield
    except (GradingError, NotImplementedError):
        raise
    except Exception as err:
        # A function or class has a __name__; an instance (a learner's nn.Module) goes by its class's.
        name = getattr(implementation, "__name__", None) or type(implementation).__name__
        raise GradingError(f"your code raised {type(err).__name__} in {name}: {err}",
                           hint="read the traceback above this error to see which line failed") from err


def expect_type(value: Any, kind: type | tuple[type, ...], *, what: str, hint: str, expected: str | None = None,
                where: Callable[[Any], bool] | None = None) -> None:
    """Require ``value`` to be a ``kind`` (a type or a tuple of types) for which ``where(value)`` holds.

    The check that stands before a checker touches what the learner's code returned, so that a
    wrong type is reported as a wrong answer, never as a crash of the checker. ``expected`` words
    what was wanted (by default "a <type>"). The message shows the type that came instead, or the
    start of the value itself when its type was right but ``where`` failed. A bool is not taken
    for a number, although Python counts it as an int: ``True`` is never a right count.
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    right_type = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
    if right_type and (where is None or where(value)):
        return
    expected = expected or "a " + " or ".join(k.__name__ for k in kinds)
    got = repr(value)[:120] if right_type else type(value).__name__
    raise GradingError(f"{what}: expected {expected}", got=got, hint=hint)


def _as_tensors(got: Any, expected: Any, what: str, hint: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides as CPU tensors of equal shape, or a GradingError saying why not."""
    expect_type(got, torch.Tensor, what=what, hint=hint, expected="a torch.Tensor")
    expected = torch.as_tensor(expected)
    if got.shape != expected.shape:
        raise GradingError(f"{what}: wrong shape", expected=tuple(expected.shape), got=tuple(got.shape), hint=hint)
    return got.detach().cpu(), expected.detach().cpu()


def assert_equal(got: Any, expected: Any, *, what: str, hint: str) -> None:
    """Require ``got == expected`` exactly; a tensor on either side makes it an elementwise check."""
    if isinstance(got, torch.Tensor) or isinstance(expected, torch.Tensor):
        got, expected = _as_tensors(got, expected, what, hint)
        wrong = (got != expected).sum().item()
        if wrong:
            raise GradingError(f"{what}: {wrong} of {got.numel()} values differ (shape {tuple(got.shape)})", hint=hint)
    elif got != expected:
        raise GradingError(f"{what} is wrong", expected=expected, got=got, hint=hint)


def assert_close(got: Any, expected: Any, *, what: str, hint: str, atol: float = 1e-5) -> None:
    """Require tensor ``got`` to match ``expected`` in shape and within ``atol`` everywhere."""
    got, expected = _as_tensors(got, expected, what, hint)
    if got.numel() == 0:
        return
    # float64, so integer and half-precision tensors compare alike.
    diff = (got.double() - expected.double()).abs().max().item()
    if not diff <= atol:  # written this way round so that a NaN fails too
        raise GradingError(
            f"{what}: values differ (shape {tuple(got.shape)}, max abs diff {diff:.3g} > atol {atol:g})",
            hint=hint,
        )


def assert_number(got: Any, expected: float, *, what: str, hint: str) -> None:
    """Require a real number within 1e-9 of ``expected`` (ints and floats alike; bools and NaN fail)."""
    expect_type(got, (int, float), what=what, hint=hint, expected="a number")
    if not abs(got - expected) <= 1e-9:  # written this way round so that a NaN fails too
        raise GradingError(f"{what} is wrong", expected=round(expected, 6), got=got, hint=hint)
