"""VQAv2 accuracy: soft exact match against ten human answers, as the official evaluation computes it.

Each VQAv2 question was answered by 10 people, who do not always agree
("2" / "two" / "2 dogs"). The metric credits an answer fully when at least 3
humans gave it, partially when fewer did:

    for each of the 10 answers left out in turn:
        score_i = min(#humans among the other 9 who gave the prediction / 3, 1)
    accuracy = mean(score_i)

Averaging over the leave-one-out subsets makes the score smooth: matching 3
of 10 humans gives 0.9, not 1.0 (leaving out one of the three matches leaves
only 2), and 4 or more matches give 1.0. A single matching human gives 0.3.

Both sides are normalised first (``normalize_answer``) with the official
evaluation's answer processing (``vqaEval.py`` of the VQA API, which lmms-eval's
``EvalAIAnswerProcessor`` reproduces), quirks included, because a published
number means "accuracy under *that* processing":

* punctuation: ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` each become a
  space ("t-shirt" -> "t shirt"), but are deleted when the mark touches a space
  anywhere in the answer ("yes, it is" -> "yes it is") or when the answer holds
  a digit-comma-digit ("1,000" -> "1000"). Other marks (":", "'", "&", ...) stay.
* periods: deleted unless a digit follows, so decimals survive (".5", "3.5")
  and abbreviations close up ("u.s." -> "us", "Two." -> "2"). The official
  script passes ``re.UNICODE`` where ``re.sub`` expects a count, so at most 32
  periods go; kept here, it only matters for very long answers.
* words: lowercased; "none" and the number words zero..ten become digits
  ("none" == "0"); the articles a, an, the are dropped; contractions typed
  without their apostrophe get it back ("dont" -> "don't", see ``_CONTRACTIONS``).

Traps:

* Without normalisation a chatty model ("There are two dogs.") scores 0; that
  is a prompt problem (ask for "a single word or phrase"), not a metric bug.
* Normalisation is lexical only: "2 dogs" still differs from "2"; eleven and
  up stay words; a curly apostrophe stays curly.
* The official script processes the *human* answers only when they disagree,
  and then only their punctuation: VQAv2's annotation answers were normalised
  when they were collected. lmms-eval processes both sides fully, and so does
  ``vqa_accuracy``: the same on VQAv2's own files, and fair on any other.
"""

import re

# The marks the official processing treats one by one (see the module docstring).
_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# Official: "(?!<=\d)(\.)(?!\d)". Its first group looks like a lookbehind but is a
# lookahead for the text "<=d", which a period never is: a period not followed by a digit.
_PERIOD = re.compile(r"\.(?!\d)")
_MAX_PERIODS = int(re.UNICODE)   # the count the official call passes by mistake (32)
_ARTICLES = frozenset({"a", "an", "the"})
_NUMBERS = {"none": "0", **{word: str(value) for value, word in enumerate(
    "zero one two three four five six seven eight nine ten".split())}}


def _contractions():
    """Each contraction, as typed with one apostrophe left out, -> its spelling.

    The official table lists, for every contraction below, the spellings that lack one
    of its apostrophes ("couldnt've" and "couldn'tve", but not "couldntve"). Its
    quirks are kept: "I'm", "I've" and "I'd've" are listed
    with a capital I, which lowercased text never matches, so they are left out;
    "let's" and "she's" map to themselves (so "lets" and "shes" stay); and the one
    backwards entry turns "somebody'd" into "somebodyd".
    """
    spelled = (
        "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't "
        "haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've "
        "might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've "
        "shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll "
        "someone's something'd something'd've something'll that's there'd there'd've there're there's "
        "they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're "
        "what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're "
        "why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll "
        "you're you've"
    ).split()
    table = {}
    for word in spelled:
        apostrophes = [i for i, char in enumerate(word) if char == "'"]
        for i in apostrophes:
            table[word[:i] + word[i + 1:]] = word
    table["somebody'd"] = "somebodyd"
    return table


_CONTRACTIONS = _contractions()


def _strip_punctuation(text):
    """The official punctuation rule: each mark becomes a space, or vanishes (see the docstring)."""
    has_number_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        # Decided on the original text, so the marks can be handled in any order.
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if touches_space or has_number_comma else " ")
    return _PERIOD.sub("", out, count=_MAX_PERIODS)


def normalize_answer(text):
    """An answer as the official VQA evaluation compares it (rules in the module docstring).

    "Two." -> "2", "The Dog!" -> "dog", "none" -> "0", ".5" -> ".5", "u.s." -> "us",
    "dont" -> "don't", "1,000" -> "1000".
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    words = [_NUMBERS.get(word, word) for word in _strip_punctuation(text).lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


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
