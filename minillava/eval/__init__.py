"""Evaluation metrics for visual instruction tuning, as pure Python.

Each module scores answers a model has already written, so none of them needs
torch or a model, and each can be checked by hand:

* ``pope``   -- POPE yes/no object-hallucination probes (question building, parsing, F1).
* ``vqa``    -- VQAv2 answer normalisation and the leave-one-out soft accuracy.
* ``chair``  -- CHAIR_i / CHAIR_s hallucination rates of free-form descriptions.
* ``choice`` -- multiple choice with MMBench-style CircularEval.
* ``judge``  -- the pure parts of the LLaVA-Bench LLM judge (prompt, parsing, scores).

Import the module you need, e.g. ``from minillava.eval import pope``.
"""
