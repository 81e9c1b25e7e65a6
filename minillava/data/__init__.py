"""Instruction data: LLaVA's GPT-4 "data engine", rebuilt for the toy world and for COCO.

LLaVA never showed GPT-4 an image. It wrote a *symbolic* image -- captions and object
boxes as text -- and asked a text-only model for conversations, detailed descriptions
and reasoning questions, as if it were looking. These modules follow that pipeline,
one idea each:

* ``rules``    -- true Q&A, descriptions and reasoning read off a toy-world scene graph
                  (the offline teacher, and text for pretraining the toy language model).
* ``prompts``  -- the symbolic context, system messages and few-shot examples.
* ``parse``    -- the teacher's raw text -> turns; leak filters, prefix stripping, <image>.
* ``validate`` -- answers checked against the annotation: hallucinations are dropped.
* ``cache``    -- append-only JSONL of answers, keyed by a hash of the request.
* ``teachers`` -- the rule teacher and the OpenAI teacher behind one interface, Batch API files.
* ``engine``   -- scenes in, LLaVA JSON + a datasets.Dataset + a run report out.
* ``server``   -- a local OpenAI-compatible endpoint serving the rule teacher (with fault injection).
"""
