"""Data: making instruction data (LLaVA's GPT-4 "data engine") and feeding it to training.

LLaVA never showed GPT-4 an image. It wrote a *symbolic* image -- captions and object
boxes as text -- and asked a text-only model for conversations, detailed descriptions
and reasoning questions, as if it were looking. The engine modules follow that pipeline,
one idea each:

* ``questions`` -- every wording of the rules' fact questions, by topic; a question's topic.
* ``rules``     -- true Q&A, descriptions and reasoning read off a toy-world scene graph
                   (the offline teacher, and text for pretraining the toy language model).
* ``prompts``   -- the symbolic context, system messages and few-shot examples.
* ``parse``     -- the teacher's raw text -> turns; leak filters, lead-in stripping, <image>.
* ``validate``  -- answers checked against the annotation: hallucinations are dropped.
* ``cache``     -- append-only JSONL of answers, keyed by a hash of the request.
* ``teachers``  -- the rule teacher and the OpenAI teacher behind one interface.
* ``batch_api`` -- the OpenAI Batch API path: a requests file out, a results file in.
* ``engine``    -- scenes in; LLaVA JSON, a datasets.Dataset and a run report out.
* ``server``    -- a local OpenAI-compatible endpoint serving the rule teacher, faults on demand
                   (and a judge, if handed one: evaluation builds on data, never the reverse).
* ``commands``  -- ``minillava data generate | serve``.

Feeding training: ``sources`` indexes where records come from (LLaVA JSON/JSONL files, ``datasets``
folders, parquet files, the hub) so they are read one at a time, ``dataset`` turns LLaVA records
into token ids, labels and pixels (up front or lazily, skipping bad records with reasons),
``batching`` pads and groups them into batches.
"""
