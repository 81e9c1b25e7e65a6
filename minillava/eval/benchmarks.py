"""Real benchmarks from their published files: POPE, VQAv2, LLaVA-Bench and MMBench.

Each reader turns a benchmark's files, in the format its authors publish them, into the
documents of a ``Task`` (``tasks``), scored by the same metrics as the toy tasks:

    POPE         coco_pope_{random,popular,adversarial}.json: one JSON object a line,
                 {"question_id", "image", "text", "label": "yes"|"no"}; the split is the
                 file name's (or a line's "category", as LLaVA's llava_pope_test.jsonl has).
                 A folder means every coco_pope_*.json in it; mean F1 over the splits.
    VQAv2        the official questions JSON ({"data_subtype", "questions": [{image_id,
                 question, question_id}]}) and annotations JSON ({"annotations":
                 [{question_id, answer_type, answers: [{answer}, ... x10]}]}); images
                 COCO_<data_subtype>_<image_id, 12 digits>.jpg; official VQA accuracy (``vqa``).
    LLaVA-Bench  questions.jsonl ({"question_id", "image", "text", "category"}),
                 answers_gpt4.jsonl (the references) and context.jsonl (the judge's view of
                 each image: "caption", or COCO's "captions" and "instances"); judged in both orders.
    MMBench      the TSV (index, question, hint, A..D, answer, category, base64 image); every
                 question asked once per rotation of its options, CircularEval (``choice``).

Prompts are LLaVA-1.5's: VQAv2 appends the short-answer format prompt, MMBench puts the
hint above the question and ends with the letter prompt; POPE and LLaVA-Bench ask the
file's text as it is. A file that cannot be read raises ``BenchmarkError``: one line
naming the file, the place and the fix. Nothing is skipped: a benchmark's number is over
all of its questions (``limit`` takes the first N, for a smoke test).
"""

import base64
import binascii
import csv
import io
import json
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from PIL import Image

from minillava.data.prompts import parse_toy_context
from minillava.errors import UserError
from minillava.eval import pope
from minillava.eval.choice import LETTERS
from minillava.eval.judges import RuleJudge
from minillava.eval.tasks import TASKS, Task, llava_bench_task, multiple_choice_docs
from minillava.eval.vqa import vqa_accuracy

BENCHMARKS = ("pope", "vqav2", "llava_bench", "mmbench")
# Where LLaVA's layout keeps LLaVA-Bench's references and contexts, next to the questions:
# the in-the-wild set's names, then the COCO set's.
BENCH_ANSWERS = ("answers_gpt4.jsonl", "qa90_gpt4_answer.jsonl")
BENCH_CONTEXT = ("context.jsonl", "caps_boxes_coco2014_val_80.jsonl")


class BenchmarkError(UserError):
    """A benchmark file that cannot be used: the message names the file and the fix (a ValueError)."""


# ----------------------------------------------------------------------------
# Reading files


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such file; give the path of {what}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchmarkError(f"{path}: not a JSON file ({err}); give {what}") from None


def _read_jsonl(path: Path, what: str, keys: tuple[str, ...]) -> list[dict]:
    """One JSON object a line, each with ``keys``; blank lines are allowed."""
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such file; give the path of {what}")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise BenchmarkError(f"{path}, line {number}: not JSON ({err.msg}); {what} has one JSON "
                                 "object a line") from None
        missing = [key for key in keys if not isinstance(record, dict) or key not in record]
        if missing:
            raise BenchmarkError(f"{path}, line {number}: no {', '.join(map(repr, missing))}; each line of "
                                 f"{what} needs {', '.join(keys)}")
        records.append(record)
    if not records:
        raise BenchmarkError(f"{path}: no records; give {what}")
    return records


def _unique_ids(path: Path, ids: list, name: str = "question_id") -> None:
    seen = set()
    for i in ids:
        if i in seen:
            raise BenchmarkError(f"{path}: {name} {i!r} is repeated; every question needs its own")
        seen.add(i)


def check_images(docs: list[dict], folder, data: Path) -> Path:
    """The image folder, after checking that it holds every image the documents name."""
    if folder is None:
        raise BenchmarkError(f"{data} names image files: give --image-folder, the folder that holds them")
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchmarkError(f"{folder}: no such folder; give --image-folder, the folder that holds the images "
                             f"{data} names")
    names = sorted({doc["image"] for doc in docs})
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise BenchmarkError(f"{folder}: {len(missing)} of the {len(names)} images {data.name} names are not "
                             f"there (e.g. {missing[0]}); point --image-folder at the folder that holds them")
    return folder


def _opener(folder: Path):
    def open_image(doc: dict):
        path = folder / doc["image"]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError as err:   # truncated, or not an image at all
            raise BenchmarkError(f"{path}: not an image that can be read ({err}); replace the file") from None
    return open_image


def _fixed(task: Task, docs: list[dict], open_image, **changes) -> Task:
    """A task that asks about the given documents and images instead of toy scenes."""
    return replace(task, build_docs=lambda seeds: docs, doc_to_visual=open_image, **changes)


# ----------------------------------------------------------------------------
# POPE


def _pope_split(path: Path, record: dict) -> str:
    split = record.get("category") or next((s for s in pope.SPLITS if s in path.stem), None)
    if split not in pope.SPLITS:
        raise BenchmarkError(f"{path}: cannot tell the POPE split; name the file coco_pope_<split>.json or give "
                             f"each line a 'category', with split one of {', '.join(pope.SPLITS)}")
    return split


def read_pope(path) -> list[dict]:
    """POPE documents of a question file, or of every coco_pope_*.json in a folder."""
    path = Path(path)
    files = sorted(path.glob("coco_pope_*.json")) if path.is_dir() else [path]
    if not files:
        raise BenchmarkError(f"{path}: no coco_pope_*.json files in this folder; give a POPE question file "
                             "or the folder of POPE's three")
    docs = []
    for file in files:
        what = "a POPE question file"
        records = _read_jsonl(file, what, ("question_id", "image", "text", "label"))
        for number, record in enumerate(records, start=1):
            label = str(record["label"]).strip().lower()
            if label not in ("yes", "no"):
                raise BenchmarkError(f"{file}, record {number}: label {record['label']!r} is not yes or no; "
                                     f"POPE's question files label each question yes or no")
            split = _pope_split(file, record)
            docs.append({"doc_id": f"{split}/{record['question_id']}", "image": record["image"],
                         "question": record["text"], "label": label, "split": split})
    _unique_ids(path, [doc["doc_id"] for doc in docs])
    return docs


def pope_tasks(docs: list[dict], open_image) -> list[Task]:
    """One task per split present, named as the toy ones (the group "pope" means their F1)."""
    splits = [s for s in pope.SPLITS if any(doc["split"] == s for doc in docs)]
    return [_fixed(TASKS[f"pope_{s}"], [d for d in docs if d["split"] == s], open_image,
                   description=f"POPE '{s}' split from its question file, yes as positive") for s in splits]


# ----------------------------------------------------------------------------
# VQAv2


def _default_annotations(questions: Path, subtype: str) -> Path:
    return questions.with_name(f"v2_mscoco_{subtype}_annotations.json")


def read_vqav2(questions_path, annotations_path=None) -> list[dict]:
    """VQAv2 documents: each question with its image name and its ten human answers."""
    questions_path = Path(questions_path)
    data = _read_json(questions_path, "VQAv2's questions JSON (v2_OpenEnded_mscoco_val2014_questions.json)")
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise BenchmarkError(f"{questions_path}: no 'questions' list; give VQAv2's questions JSON "
                             "(v2_OpenEnded_mscoco_val2014_questions.json)")
    subtype = data.get("data_subtype", "val2014")
    if subtype.startswith("test"):
        raise BenchmarkError(f"{questions_path}: the {subtype} questions have no public answers (EvalAI's server "
                             "scores them); evaluate the val2014 questions and annotations")
    annotations_path = Path(annotations_path) if annotations_path else _default_annotations(questions_path, subtype)
    annotations = _read_json(annotations_path, f"VQAv2's annotations JSON (v2_mscoco_{subtype}_annotations.json; "
                                               "--annotations FILE)")
    if not isinstance(annotations, dict) or not isinstance(annotations.get("annotations"), list):
        raise BenchmarkError(f"{annotations_path}: no 'annotations' list; give VQAv2's annotations JSON "
                             f"(v2_mscoco_{subtype}_annotations.json)")
    by_id = {a.get("question_id"): a for a in annotations["annotations"] if isinstance(a, dict)}
    docs = []
    for number, q in enumerate(data["questions"], start=1):
        if not isinstance(q, dict) or not {"image_id", "question", "question_id"} <= q.keys():
            raise BenchmarkError(f"{questions_path}, question {number}: needs image_id, question and question_id")
        a = by_id.get(q["question_id"])
        if a is None or not isinstance(a.get("answers"), list) or not a["answers"]:
            raise BenchmarkError(f"{annotations_path}: no answers for question_id {q['question_id']} of "
                                 f"{questions_path.name}; give the annotations of the same split")
        docs.append({"doc_id": q["question_id"], "image": f"COCO_{subtype}_{int(q['image_id']):012d}.jpg",
                     "question": q["question"], "answers": [str(x["answer"]) for x in a["answers"]],
                     "answer_type": a.get("answer_type", "other")})
    if not docs:
        raise BenchmarkError(f"{questions_path}: no questions; give VQAv2's questions JSON")
    _unique_ids(questions_path, [doc["doc_id"] for doc in docs])
    return docs


def _vqa_aggregate(values: list[dict]) -> dict:
    """Accuracy overall and per answer type ("yes/no", "number", "other"), as VQAv2 reports."""
    metrics = {"accuracy": sum(v["accuracy"] for v in values) / len(values)}
    for kind in sorted({v["answer_type"] for v in values}):
        same = [v["accuracy"] for v in values if v["answer_type"] == kind]
        metrics[f"accuracy_{kind}"] = sum(same) / len(same)
    return {**metrics, "n": len(values)}


def vqav2_task(docs: list[dict], open_image) -> Task:
    return _fixed(TASKS["toy_vqa"], docs, open_image, name="vqav2",
                  description="VQAv2 questions, official VQA accuracy against the ten human answers",
                  doc_to_target=lambda doc: Counter(doc["answers"]).most_common(1)[0][0],
                  process_result=lambda doc, prediction: {"accuracy": vqa_accuracy(prediction, doc["answers"]),
                                                          "answer_type": doc["answer_type"]},
                  aggregate=_vqa_aggregate)


# ----------------------------------------------------------------------------
# LLaVA-Bench


def _beside(questions: Path, given, names: tuple[str, ...], what: str, option: str) -> Path:
    if given:
        return Path(given)
    for name in names:
        if (questions.parent / name).is_file():
            return questions.parent / name
    raise BenchmarkError(f"{questions.parent}: no {' or '.join(names)} next to {questions.name}; give {option} FILE, "
                         f"LLaVA-Bench's {what}")


def _context_text(record: dict) -> str:
    """The judge's view of an image: the in-the-wild caption, or COCO's captions and boxes."""
    if "caption" in record:
        return str(record["caption"])
    boxes = [f"{i['category']}: {i['bbox']}" for i in record.get("instances", [])]
    return "\n".join(record["captions"]) + ("\n\n" + "\n".join(boxes) if boxes else "")


def read_llava_bench(questions_path, answers_path=None, context_path=None) -> list[dict]:
    """LLaVA-Bench documents: question, category, reference answer and the judge's context."""
    questions_path = Path(questions_path)
    if questions_path.is_dir():   # LLaVA's folder: the questions file by its published name
        names = ("questions.jsonl", "qa90_questions.jsonl")
        found = [questions_path / name for name in names if (questions_path / name).is_file()]
        if not found:
            raise BenchmarkError(f"{questions_path}: no {' or '.join(names)} in this folder; give --data, "
                                 "LLaVA-Bench's questions file")
        questions_path = found[0]
    answers_path = _beside(questions_path, answers_path, BENCH_ANSWERS, "reference answers", "--answers")
    context_path = _beside(questions_path, context_path, BENCH_CONTEXT, "image descriptions", "--context")
    questions = _read_jsonl(questions_path, "LLaVA-Bench's questions.jsonl",
                            ("question_id", "image", "text", "category"))
    _unique_ids(questions_path, [q["question_id"] for q in questions])
    answers = {a["question_id"]: a["text"] for a in _read_jsonl(answers_path, "LLaVA-Bench's answers_gpt4.jsonl",
                                                                 ("question_id", "text"))}
    contexts = {}
    for number, c in enumerate(_read_jsonl(context_path, "LLaVA-Bench's context.jsonl", ("image",)), start=1):
        if "caption" not in c and "captions" not in c:
            raise BenchmarkError(f"{context_path}, line {number}: no 'caption' (or 'captions'); the judge reads the "
                                 "image through it")
        contexts[c["image"]] = _context_text(c)
    docs = []
    for q in questions:
        if q["question_id"] not in answers:
            raise BenchmarkError(f"{answers_path}: no reference answer for question_id {q['question_id']}; give "
                                 f"the answers file of the same questions")
        if q["image"] not in contexts:
            raise BenchmarkError(f"{context_path}: no context for image {q['image']}; give the context file of "
                                 f"the same questions")
        docs.append({"doc_id": q["question_id"], "image": q["image"], "category": q["category"],
                     "question": q["text"], "reference": answers[q["question_id"]], "context": contexts[q["image"]]})
    return docs


def llava_bench_benchmark(docs: list[dict], open_image, judge=None, data: Path | None = None) -> Task:
    """LLaVA-Bench on its files, judged in both orders (default judge: the rule judge, toy scenes only)."""
    judge = judge or RuleJudge()
    if isinstance(judge, RuleJudge):
        for doc in docs:
            try:
                parse_toy_context(doc["context"])
            except ValueError:
                raise BenchmarkError(f"{data}: the rule judge reads only toy scenes' contexts; judge real "
                                     "LLaVA-Bench with --judge openai --judge-model MODEL") from None
    return _fixed(llava_bench_task(judge), docs, open_image)


# ----------------------------------------------------------------------------
# MMBench


def _image_decoder(path: Path):
    def decode(doc: dict):
        try:
            with Image.open(io.BytesIO(base64.b64decode(doc["image"], validate=True))) as image:
                return image.convert("RGB")
        except (binascii.Error, OSError) as err:
            raise BenchmarkError(f"{path}: the image of index {doc['question_id']} is not a base64 image ({err}); "
                                 "give MMBench's TSV as published") from None
    return decode


def read_mmbench(path) -> list[dict]:
    """MMBench questions from its TSV: hint + question, the options, the answer's index, category, image."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such file; give MMBench's TSV (e.g. mmbench_dev_en.tsv)")
    csv.field_size_limit(sys.maxsize)   # a base64 image is one field of megabytes
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    need = ("index", "question", "A", "B", "answer", "image")
    missing = [column for column in need if not rows or column not in rows[0]]
    if missing:
        why = ("the test split has no answers (MMBench's server scores it); use the dev split"
               if missing == ["answer"] else f"MMBench's TSV has the columns {', '.join(need)}, ...")
        raise BenchmarkError(f"{path}: no column {', '.join(map(repr, missing))}; {why}")
    images = {row["index"]: row["image"] for row in rows}
    questions = []
    for number, row in enumerate(rows, start=2):   # line 1 is the header
        options = []
        for letter in LETTERS:
            value = (row.get(letter) or "").strip()
            if not value or value.lower() == "nan":
                break
            options.append(value)
        answer = row["answer"].strip()
        if answer not in LETTERS[:len(options)] or len(options) < 2 or len(set(options)) < len(options):
            raise BenchmarkError(f"{path}, line {number} (index {row['index']}): answer {answer!r} with options "
                                 f"{options}; each row needs two or more different options and the letter of one")
        # VLMEvalKit's TSVs store a repeated image once: the other rows give that row's index.
        image = row["image"] if len(row["image"]) > 64 else images.get(row["image"].strip(), "")
        hint = (row.get("hint") or "").strip()
        question = f"{hint}\n{row['question']}" if hint and hint.lower() != "nan" else row["question"]
        questions.append({"question_id": row["index"], "question": question, "options": options,
                          "answer": LETTERS.index(answer), "category": row.get("category", ""), "image": image})
    _unique_ids(path, [q["question_id"] for q in questions], "index")
    return questions


def _by_category(aggregate):
    """toy_mc's aggregate plus CircularEval accuracy per MMBench category."""
    def run(values: list[dict]) -> dict:
        metrics = aggregate(values)
        categories = {}
        for category in sorted({v["category"] for v in values}):
            metrics_c = aggregate([v for v in values if v["category"] == category])
            categories[category] = round(metrics_c["circular_accuracy"], 4)
        return {**metrics, "circular_by_category": categories}
    return run


def mmbench_task(questions: list[dict], path: Path) -> Task:
    mc = TASKS["toy_mc"]
    return _fixed(mc, multiple_choice_docs(questions), _image_decoder(path), name="mmbench",
                  description="MMBench multiple choice; correct only if right under every rotation of the options",
                  process_result=lambda doc, prediction: {**mc.process_result(doc, prediction),
                                                          "category": doc["category"]},
                  aggregate=_by_category(mc.aggregate))


# ----------------------------------------------------------------------------
# One call per benchmark


def benchmark_tasks(name: str, data, *, image_folder=None, annotations=None, answers=None, context=None,
                    judge=None, limit: int | None = None) -> list[Task]:
    """The tasks that evaluate benchmark ``name`` (one of BENCHMARKS) on its files."""
    data = Path(data)
    if not data.exists():
        raise BenchmarkError(f"{data}: no such file or folder; give --data, the benchmark's question file")
    if name == "mmbench":
        questions = read_mmbench(data)[:limit]
        for q in questions:
            if not q["image"]:
                raise BenchmarkError(f"{data}: index {q['question_id']} has no image; give MMBench's TSV with "
                                     "its base64 images")
        return [mmbench_task(questions, data)]
    readers = {"pope": lambda: read_pope(data), "vqav2": lambda: read_vqav2(data, annotations),
               "llava_bench": lambda: read_llava_bench(data, answers, context)}
    if name not in readers:
        raise BenchmarkError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    docs = readers[name]()[:limit]
    open_image = _opener(check_images(docs, image_folder, data))
    if name == "pope":
        return pope_tasks(docs, open_image)
    if name == "vqav2":
        return [vqav2_task(docs, open_image)]
    return [llava_bench_benchmark(docs, open_image, judge, data)]
