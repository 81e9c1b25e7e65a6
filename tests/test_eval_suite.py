"""The evaluation suite: tasks, fake assistants, judges (offline and through the openai client), CLI.

Every expected number is worked out from the scenes themselves, so each test fails if
a task, a metric or the runner goes wrong. Servers bind 127.0.0.1 on a free port.
"""

import itertools
import json
from dataclasses import replace

import pytest

from minillava.cli import main
from minillava.data.prompts import parse_toy_context, toy_context
from minillava.data.server import Faults, TeacherServer
from minillava.eval import llava_bench
from minillava.eval.assistants import FunctionAssistant, HallucinatingDescriber, OracleAssistant, YesAssistant
from minillava.eval.judges import JudgeRequest, OpenAIJudge, RuleJudge, judge_both_orders, summarize
from minillava.eval.scenes import DESCRIBE_PROMPT, answer_key, eval_seeds, scene_annotation
from minillava.eval.suite import run_suite
from minillava.eval.tasks import TASKS, Task, llava_bench_task, multiple_choice_docs, register_task
from minillava.toyworld import EVAL_SEEDS, HELDOUT_SEEDS, TRAIN_SEEDS, make_scene, render

N = 12
SEEDS = eval_seeds(N, seed=0)
POPE = ("pope_random", "pope_popular", "pope_adversarial")


def metrics(report, task):
    return next(r.metrics for r in report.results if r.task.name == task)


@pytest.fixture(scope="module")
def oracle_report():
    return run_suite(OracleAssistant.for_seeds(SEEDS), n_per_task=N, seed=0)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-minillava-test")


# ---------------------------------------------------------------- scenes and the answer key


def test_eval_scenes_are_held_out_and_reproducible():
    # The seed spaces do not overlap, so no evaluation scene is a training or a probing scene.
    for a, b in itertools.combinations((TRAIN_SEEDS, EVAL_SEEDS, HELDOUT_SEEDS), 2):
        assert a.stop <= b.start or b.stop <= a.start, (a, b)
    drawn = eval_seeds(2000, seed=3)
    assert all(seed in EVAL_SEEDS and seed not in TRAIN_SEEDS and seed not in HELDOUT_SEEDS for seed in drawn)
    assert len(set(drawn)) == len(drawn) and drawn == sorted(drawn)
    tenth = len(EVAL_SEEDS) // 10   # drawn across the whole pool, not from one corner of it
    assert min(drawn) < EVAL_SEEDS.start + tenth and max(drawn) >= EVAL_SEEDS.stop - tenth
    # Deterministic for a seed; another seed draws other scenes.
    assert eval_seeds(N, seed=0) == SEEDS and len(set(SEEDS)) == N
    assert eval_seeds(N, seed=1) != SEEDS and not set(eval_seeds(N, seed=1)) & set(SEEDS)
    with pytest.raises(ValueError, match="n must be"):
        eval_seeds(0)


def test_answer_key_is_the_same_for_a_scene_read_back_from_text():
    # The rule judge only has the judge prompt's text; its key must match the tasks' key.
    for seed in SEEDS[:5]:
        annotation = scene_annotation(seed)
        assert answer_key(parse_toy_context(toy_context(annotation))) == answer_key(annotation)


# ---------------------------------------------------------------- fake assistants on the built-in tasks


def test_the_oracle_scores_perfectly_everywhere(oracle_report):
    assert metrics(oracle_report, "toy_vqa")["accuracy"] == 1.0
    for split in POPE:
        assert metrics(oracle_report, split)["f1"] == 1.0
    assert oracle_report.groups()["pope"]["value"] == 1.0
    assert metrics(oracle_report, "toy_mc")["circular_accuracy"] == 1.0
    chair = metrics(oracle_report, "chair")
    # The description names every shape of every scene once, and nothing else.
    assert chair["n_mentions"] == sum(len({o.shape for o in make_scene(s).objects}) for s in SEEDS)
    assert chair["chair_i"] == chair["chair_s"] == 0.0
    bench = metrics(oracle_report, "llava_bench")
    assert bench["relative"] == 100.0 and bench["n_failed"] == 0 and bench["n_scored"] == 3 * N


def test_a_yes_biased_assistant_on_balanced_pope():
    report = run_suite(YesAssistant(), list(POPE), n_per_task=N)
    for split in POPE:
        m = metrics(report, split)
        assert m["tp"] + m["fn"] == m["fp"] + m["tn"] > 0   # balanced: as many yes as no labels
        assert (m["yes_ratio"], m["recall"], m["precision"], m["accuracy"]) == (1.0, 1.0, 0.5, 0.5)
        assert m["f1"] == pytest.approx(2 / 3)


def test_the_hallucinating_describer_gets_the_chair_worked_out_by_hand():
    report = run_suite(HallucinatingDescriber.for_seeds(SEEDS), ["chair", "toy_vqa", "llava_bench"], n_per_task=N)
    objects = [make_scene(seed).objects for seed in SEEDS]
    busy = sum(len(objs) >= 3 for objs in objects)   # it adds one absent shape in scenes of 3+ objects
    assert 0 < busy < N, "the scenes should include both kinds for this test to mean anything"
    true_mentions = sum(len({o.shape for o in objs}) for objs in objects)
    chair = metrics(report, "chair")
    assert chair["chair_s"] == busy / N
    assert chair["chair_i"] == busy / (true_mentions + busy)
    assert metrics(report, "toy_vqa")["accuracy"] == 1.0   # only its descriptions are wrong
    bench = metrics(report, "llava_bench")
    # The rule judge takes 3 points off each hallucinating description (10 -> 7).
    assert bench["relative_detail"] == pytest.approx(100 - 30 * busy / N)
    assert bench["relative_conversation"] == bench["relative_complex"] == 100.0


def test_pope_negatives_are_absent_and_the_splits_choose_them_differently():
    negatives = {}
    for split in POPE:
        docs = TASKS[split].build_docs(SEEDS)
        for doc in docs:
            present = {o.name for o in make_scene(doc["seed"]).objects}
            assert (doc["object"] in present) == (doc["label"] == "yes"), doc
        negatives[split] = {(d["seed"], d["object"]) for d in docs if d["label"] == "no"}
    assert negatives["pope_popular"] != negatives["pope_random"]
    assert negatives["pope_adversarial"] != negatives["pope_random"]
    assert negatives["pope_popular"] != negatives["pope_adversarial"]


def test_circular_eval_catches_a_position_biased_answerer():
    always_a = FunctionAssistant(lambda image, question: "A", name="always-A")
    # A question set whose author put the right option first: plain accuracy is fooled.
    toy_mc = TASKS["toy_mc"]

    def answer_first(seeds):
        questions = []
        for doc in toy_mc.build_docs(seeds):
            if doc["rotation"] == 0:
                right = doc["options"][doc["answer"]]
                questions.append(dict(doc, options=[right, *(o for o in doc["options"] if o != right)], answer=0))
        return multiple_choice_docs(questions)

    first = replace(toy_mc, name="mc_answer_first", build_docs=answer_first)
    report = run_suite(always_a, [first, toy_mc], n_per_task=N)
    assert metrics(report, "mc_answer_first") == {"circular_accuracy": 0.0, "plain_accuracy": 1.0, "n_questions": N}
    # On shuffled options, plain accuracy is the share of questions whose answer happens to be A.
    lucky = sum(d["answer"] == 0 for d in toy_mc.build_docs(SEEDS) if d["rotation"] == 0)
    assert 0 < lucky < N
    assert metrics(report, "toy_mc")["plain_accuracy"] == lucky / N
    assert metrics(report, "toy_mc")["circular_accuracy"] == 0.0
    assert metrics(run_suite(OracleAssistant.for_seeds(SEEDS), [first], n_per_task=N),
                   "mc_answer_first")["circular_accuracy"] == 1.0


# ---------------------------------------------------------------- judges


def test_rule_judge_scale():
    annotation = scene_annotation(SEEDS[0])
    key = answer_key(annotation)
    judge = RuleJudge()
    count = next(q for q, a in key.items() if q.startswith("How many") and a.kind == "conversation")
    assert judge.score_answer(annotation, count, key[count].answer)[0] == 10.0   # the reference
    assert judge.score_answer(annotation, count, "Yes")[0] == 1.0                # says nothing it asked
    description = key[DESCRIBE_PROMPT].answer
    absent = next(s for s in ("circle", "square", "triangle", "diamond", "cross")
                  if s not in {o["shape"] for o in annotation["objects"]})
    score, why = judge.score_answer(annotation, DESCRIBE_PROMPT, f"{description} There is a large red {absent}.")
    assert score == 7.0 and "presence" in why   # full coverage, one contradiction
    # A question the rules never wrote cannot be scored: a failed verdict, not a guess.
    context = toy_context(annotation)
    [verdict] = judge.judge_many([JudgeRequest(context, "Is this art?", "Yes", "No")])
    assert verdict.scores is None and "rule judge" in verdict.failure


def test_openai_judge_counts_failures_and_never_averages_them_in(api_key):
    seeds = eval_seeds(6)
    describer = HallucinatingDescriber([scene_annotation(seed) for seed in seeds], min_objects=1)
    faults = Faults(rate_limit=0.3, server_error=0.2, malformed=0.15, seed=1)
    with TeacherServer(faults=faults, judge=RuleJudge()) as server:
        judge = OpenAIJudge(server.model, server.url, timeout=5, backoff=0.01, max_attempts=2)
        report = run_suite(describer, [llava_bench_task(judge)], n_per_task=6)
    bench = metrics(report, "llava_bench")
    samples = report.results[0].samples
    failed = [s for s in samples if s["result"]["scores"] is None]
    assert 0 < bench["n_failed"] == len(failed) < len(samples) == bench["n_scored"] + bench["n_failed"]
    # Every injected fault is accounted for: 429/500 as failed attempts, garbage as unparseable.
    assert bench["judge_retries"] == server.stats["rate_limit"] + server.stats["server_error"] > 0
    assert bench["judge_failures"]["unparseable reply"] == server.stats["malformed"] > 0
    assert any(reason.startswith("request failed: HTTP") for reason in bench["judge_failures"])
    # The scored samples carry exactly the rule judge's scores, and only they are averaged.
    scored = [s for s in samples if s["result"]["scores"] is not None]
    docs = {d["doc_id"]: d for d in TASKS["llava_bench"].build_docs(seeds)}
    direct = judge_both_orders(RuleJudge(), [(docs[s["doc_id"]]["context"], s["prompt"], s["target"],
                                              s["prediction"]) for s in scored])
    assert [tuple(s["result"]["scores"]) for s in scored] == [r["scores"] for r in direct]
    expected = summarize([dict(r, category=docs[s["doc_id"]]["category"]) for r, s in zip(direct, scored)])
    assert bench["relative"] == expected["relative"] < 100
    # The original pipeline's [-1, -1] placeholders would have moved the number.
    ref, model = (sum(r["scores"][i] for r in direct) for i in (0, 1))
    assert (model - len(failed)) / (ref - len(failed)) * 100 != pytest.approx(bench["relative"])


def test_judging_in_both_orders_cancels_position_bias(api_key):
    # A judge that takes 2 points off whichever answer comes second, on answers that are equally good.
    with TeacherServer(judge=RuleJudge(position_bias=2.0)) as server:
        judge = OpenAIJudge(server.model, server.url, timeout=5)
        report = run_suite(OracleAssistant.for_seeds(eval_seeds(4)), [llava_bench_task(judge)], n_per_task=4)
    bench = metrics(report, "llava_bench")
    assert bench["relative_ref_first"] == 80.0      # LLaVA's single order: reference 10, model 8
    assert bench["relative_model_first"] == 125.0   # swapped: model 10, reference 8
    assert bench["relative"] == 100.0               # averaged over both orders: the bias cancels
    assert bench["n_failed"] == 0


def test_openai_judge_reads_its_key_from_the_environment_only(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIJudge("gpt-4o")


def test_the_server_answers_judge_prompts_with_the_judge_it_is_given():
    annotation = scene_annotation(SEEDS[1])
    description = answer_key(annotation)[DESCRIBE_PROMPT].answer
    messages = llava_bench.judge_prompt(toy_context(annotation), DESCRIBE_PROMPT, description, "Yes")
    with TeacherServer(judge=RuleJudge()) as server:
        assert llava_bench.parse_scores(server._reply(messages, {})) == (10.0, 1.0)
    with TeacherServer() as server, pytest.raises(ValueError, match="SYSTEM_MESSAGES"):
        server._reply(messages, {})   # no judge: a judge prompt is just a request the teacher cannot answer


# ---------------------------------------------------------------- tasks, runner, CLI


def test_a_user_task_registers_and_runs():
    def docs(seeds):
        return [{"doc_id": str(s), "seed": s, "answer": str(len(make_scene(s).objects))} for s in seeds]

    task = Task(name="count_all", build_docs=docs, doc_to_visual=lambda d: render(make_scene(d["seed"])),
                doc_to_text=lambda d: "How many shapes are there?", doc_to_target=lambda d: d["answer"],
                process_result=lambda d, p: {"correct": float(p == d["answer"])},
                aggregate=lambda values: {"accuracy": sum(v["correct"] for v in values) / len(values)},
                main_metric="accuracy")
    register_task(task)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_task(task)
        report = run_suite(lambda image, question: "2", ["count_all"], n_per_task=N)
        pairs = sum(len(make_scene(seed).objects) == 2 for seed in SEEDS)
        assert 0 < pairs < N
        assert metrics(report, "count_all") == {"accuracy": pairs / N}
    finally:
        del TASKS["count_all"]


def test_the_runner_and_oracle_refuse_what_they_cannot_handle():
    with pytest.raises(ValueError, match="unknown task"):
        run_suite(YesAssistant(), ["no_such_task"], n_per_task=2)
    with pytest.raises(ValueError, match="one string per question"):
        run_suite(lambda image, question: None, ["toy_vqa"], n_per_task=2)

    class Nameless:
        def answer(self, image, question):
            return "yes"

    with pytest.raises(TypeError, match="no name: give it a name attribute"):
        run_suite(Nameless(), ["toy_vqa"], n_per_task=2)
    with pytest.raises(TypeError, match="needs a name and a method answer"):
        run_suite("oracle", ["toy_vqa"], n_per_task=2)
    oracle = OracleAssistant.for_seeds(SEEDS[:1])
    with pytest.raises(ValueError, match="does not know this image"):
        oracle.answer(render(make_scene(SEEDS[1])), DESCRIBE_PROMPT)
    with pytest.raises(ValueError, match="cannot answer"):
        oracle.answer(render(make_scene(SEEDS[0])), "What is the meaning of life?")


def test_cli_eval_writes_json_markdown_samples_and_a_chart(tmp_path, capsys):
    out = tmp_path / "eval"
    main(["eval", "--assistant", "oracle", "--n", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| toy_vqa |" in printed and "| pope (all 3) |" in printed and "| llava_bench |" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["scene_seeds"] == eval_seeds(3, 0)
    assert results["results"]["toy_vqa"]["metrics"]["accuracy"] == 1.0
    assert results["groups"]["pope"]["value"] == 1.0
    assert set(results["results"]) == set(TASKS)
    assert (out / "report.md").read_text().strip() == printed.split("\nwrote ")[0].strip()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["task"] for s in samples} == set(TASKS) and all("prediction" in s for s in samples)
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_eval_takes_the_assistant_as_an_argument_or_an_option_once(capsys):
    main(["eval", "yes", "--tasks", "pope_random", "--n", "2"])
    assert "| pope_random |" in capsys.readouterr().out
    for argv in (["eval"], ["eval", "yes", "--assistant", "oracle"]):
        with pytest.raises(SystemExit, match="give the assistant once"):
            main(argv + ["--n", "2"])


def test_cli_eval_explains_a_folder_that_is_not_a_saved_assistant(tmp_path):
    with pytest.raises(SystemExit, match="not written by save_assistant"):
        main(["eval", "--assistant", str(tmp_path), "--n", "2"])
