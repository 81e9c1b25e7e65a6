"""Chapter 7, data mixing: drawing a training mixture at set ratios from pools of different sizes."""

from minillava.course.grading.core import GradingError, assert_equal, check, expect_type, your_code
from minillava.data.mix import Source, mix


def _source_index_pairs(drawn: list) -> bool:
    return all(isinstance(d, tuple) and len(d) == 2 for d in drawn)


@check("ratio_sampler")
def check_ratio_sampler(ratio_sample):
    """``ratio_sample(sizes, weights, total, seed) -> [(source, index), ...]``, shares as ``data.mix.mix`` draws them."""
    hint = ("give each source round(total * weight / sum of weights) records by the LARGEST REMAINDER (floor every "
            "share, then hand the records still missing to the largest fractional parts, ties to the earlier "
            "source); draw each source's indices from a shuffled pass over its pool, starting a freshly shuffled "
            "pass when one runs out (no index twice before every index once); shuffle the whole list; use "
            "random.Random(seed), never the global RNG")
    sizes = {"captions": 50, "vqa": 30, "text": 20}
    cases = [(sizes, {"captions": 2, "vqa": 1, "text": 1}, 60), (sizes, {"captions": 2, "vqa": 1, "text": 1}, 200),
             ({"a": 10, "b": 10, "c": 10}, {"a": 1, "b": 1, "c": 1}, 10),
             (sizes, {"captions": 3, "vqa": 0, "text": 1}, 41)]
    for sizes, weights, total in cases:
        what = f"ratio_sample({sizes}, {weights}, total={total}, seed=0)"
        with your_code(ratio_sample):
            drawn = ratio_sample(dict(sizes), dict(weights), total, 0)
        expect_type(drawn, list, what=what, hint=hint, expected="a list of (source, index) tuples",
                    where=_source_index_pairs)
        _, table = mix([Source(name, list(range(size)), weights[name]) for name, size in sizes.items()], total)
        counts = {name: sum(source == name for source, _ in drawn) for name in sizes}
        assert_equal(counts, {row["source"]: row["records"] for row in table}, what=f"{what}: records per source",
                     hint=hint)
        for name, size in sizes.items():
            indices = [i for source, i in drawn if source == name]
            if indices and not all(isinstance(i, int) and 0 <= i < size for i in indices):
                raise GradingError(f"{what}: source {name!r} has indices outside 0..{size - 1}", hint=hint)
            uses = [indices.count(i) for i in range(size)]
            if indices and max(uses) - min(uses) > 1:
                raise GradingError(f"{what}: source {name!r} repeats some records before using others",
                                   expected="each index used floor or ceil of (records / pool) times",
                                   got=f"between {min(uses)} and {max(uses)} times", hint=hint)
            if 0 < len(indices) < size and sorted(indices) == list(range(len(indices))):
                raise GradingError(f"{what}: source {name!r} contributed its first {len(indices)} records",
                                   hint="a source larger than its share gives a random subset: " + hint)
        with your_code(ratio_sample):
            again = ratio_sample(dict(sizes), dict(weights), total, 0)
        assert_equal(again, drawn, what=f"{what} called twice: the same draw", hint=hint)
    with your_code(ratio_sample):
        other_seed = ratio_sample(dict(sizes), dict(weights), total, 1)
    if other_seed == drawn:
        raise GradingError("seed=1 drew exactly what seed=0 drew", hint=hint)
    with your_code(ratio_sample):
        long = ratio_sample({"captions": 50, "vqa": 30, "text": 20}, {"captions": 2, "vqa": 1, "text": 1}, 200, 0)
    expect_type(long, list, what="ratio_sample of 200 records", hint=hint,
                expected="a list of (source, index) tuples", where=_source_index_pairs)
    switches = sum(a[0] != b[0] for a, b in zip(long, long[1:]))
    if switches < 50:   # a shuffled list switches source about 125 times; blocks switch twice
        raise GradingError(f"the sources come in blocks ({switches} switches of source in 200 records)",
                           hint="shuffle the whole list, so that every stretch of training sees the mixture")
    for weights in ({"captions": 1, "vqa": -1, "text": 1}, {"captions": 0, "vqa": 0, "text": 0}):
        with your_code(ratio_sample):
            try:
                ratio_sample({"captions": 50, "vqa": 30, "text": 20}, weights, 10, 0)
            except ValueError:
                continue
        raise GradingError(f"weights {weights} were accepted instead of raising ValueError",
                           hint="weights must be >= 0 with a positive sum: raise ValueError saying so")
