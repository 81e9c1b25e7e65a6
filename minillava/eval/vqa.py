"""VQAv2 accuracy: soft exact match against ten human answers.

Each VQAv2 question was answered by 10 people, who do not always agree
("2" / "two" / "2 dogs"). The metric credits an answer fully when at least 3
humans gave it, partially when fewer did:

    for each of the 10 answers left out in turn:
        score_i = min(#humans among the other 9 who gave the prediction / 3, 1)
    accuracy = mean(score_i)

Averaging over the leave-one-out subsets makes the score smooth: matching 3
of 10 humans gives 0.9, not 1.0 (leaving out one of the three matches leaves
only 2), and 4 or more matches give 1.0. A single matching human gives 0.3.

Both sides are normalised first (``normalize_answer``) so that formatting is
not punished: "Two." == "2", "a dog" == "dog", "dont" == "don't". Traps:

* Without normalisation a chatty model ("There are two dogs.") scores 0; that
  is a prompt problem (ask for "a single word or phrase"), not a metric bug.
* Normalisation is lexical only: "2 dogs" still differs from "2".
"""

import re

# Decimal points and word-internal apostrophes carry meaning ("3.5", "don't");
# every other punctuation mark becomes a space, so "t-shirt" == "t shirt".
_PUNCTUATION = re.compile(r"(?<=\w)'(?=\w)|(?<=\d)\.(?=\d)|([^\w\s])")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d)")
_ARTICLES = frozenset({"a", "an", "the"})
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve "
        "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
# Answers typed without the apostrophe, mapped to the spelling with it. Words
# that are also real words without one ("its", "well", "were", "id") are left out.
_CONTRACTIONS = {
    word.replace("'", ""): word
    for word in (
        "aren't can't couldn't didn't doesn't don't hadn't hasn't haven't isn't "
        "mightn't mustn't shouldn't wasn't weren't won't wouldn't i'm i've "
        "you're you've they're they've we've that's what's there's who's "
        "where's how's let's"
    ).split()
}


def normalize_answer(text):
    """Canonical form of an answer so that trivially different spellings match.

    Lowercases; turns curly apostrophes straight; drops thousands commas
    ("1,000" -> "1000"); replaces punctuation by spaces except decimal points
    and word-internal apostrophes; maps number words zero..twenty to digits;
    drops the articles a, an, the; restores the apostrophe of common
    contractions ("dont" -> "don't"); collapses whitespace. Idempotent:
    normalising twice changes nothing.
    """
    text = text.lower().replace("\u2019", "'")
    text = _THOUSANDS_COMMA.sub("", text)
    text = _PUNCTUATION.sub(lambda match: " " if match.group(1) else match.group(0), text)
    words = []
    for word in text.split():
        if word in _ARTICLES:
            continue
        words.append(_NUMBER_WORDS.get(word) or _CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_accuracy(prediction, answers):
    """VQAv2 accuracy of one prediction against the human answers, in [0, 1].

    With 10 answers this is the official leave-one-out formula (see the module
    docstring). Other counts generalise it: the leave-one-out runs over however
    many answers there are, and the "3 humans" threshold becomes
    min(3, len(answers) - 1) so that a prediction matching every human always
    scores 1.0 (with 3 answers, 2 of the other 2 must match). A single
    reference answer has no leave-one-out subset and is scored by exact match,
    1.0 or 0.0, after normalisation.
    """
    if isinstance(answers, str):
        raise ValueError("answers must be a list of strings, got one string; wrap it in a list")
    if not answers:
        raise ValueError("no reference answers; pass the human answers for this question")
    prediction = normalize_answer(prediction)
    agrees = [normalize_answer(answer) == prediction for answer in answers]
    if len(answers) == 1:
        return float(agrees[0])
    threshold = min(3, len(answers) - 1)
    matches = sum(agrees)
    # Leave each human out in turn and count the matches among the others.
    scores = [min((matches - left_out) / threshold, 1.0) for left_out in agrees]
    return sum(scores) / len(scores)
