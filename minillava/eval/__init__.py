"""Evaluation for visual instruction tuning: pure metrics, and the suite that runs them.

The metric modules score answers a model has already written, so none of them
needs torch or a model, and each can be checked by hand:

* ``pope``        -- POPE yes/no object-hallucination probes (question building, parsing, F1).
* ``vqa``         -- VQAv2 answer normalisation and the leave-one-out soft accuracy.
* ``chair``       -- CHAIR_i / CHAIR_s hallucination rates of free-form descriptions.
* ``choice``      -- multiple choice with MMBench-style CircularEval.
* ``llava_bench`` -- the LLaVA-Bench judge's prompt, its score parsing and the relative score.

Around them, the suite that runs a model on held-out toy scenes and reports:

* ``scenes``     -- held-out scene seeds, the tasks' prompts, the rules' answer to every question.
* ``tasks``      -- ``Task`` (lmms-eval's anatomy), the ``TASKS`` registry and the built-in toy
  tasks: toy_vqa, pope_random / pope_popular / pope_adversarial, toy_mc, chair, llava_bench.
* ``judges``     -- ``RuleJudge`` (offline, from the scene graph) and ``OpenAIJudge`` (any
  OpenAI-compatible endpoint), both orders judged, failures counted and never averaged.
* ``assistants`` -- the model interface (a ``name`` and ``answer(image, question)``, which
  ``minillava.chat.Assistant`` has), and fakes that test it: an oracle, an always-"Yes"
  assistant and a describer that hallucinates.
* ``suite``      -- ``run_suite`` -> ``Report`` (markdown, JSON, samples, chart) and ``minillava eval``.
* ``benchmarks`` -- the real benchmarks from their published files (POPE, VQAv2, LLaVA-Bench,
  MMBench) as tasks: ``minillava eval ASSISTANT --task pope --data FILE --image-folder DIR``.
* ``failures``   -- accuracy by question topic, and the looking test (right, blank, other image).

Import the module you need, e.g. ``from minillava.eval import pope``.
"""
