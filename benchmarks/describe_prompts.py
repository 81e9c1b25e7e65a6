"""Does a saved assistant describe for any wording of the request, or only for the words it was trained on?

CHAIR asks for a description with ``scenes.DESCRIBE_PROMPT`` ("Please describe this image in detail."),
the wording hallucination papers use with LLaVA. Stage 2 never shows it: its detailed descriptions
are asked with ``prompts.DETAIL_INSTRUCTIONS`` (six wordings). A real Vicuna generalises to a new
wording; a toy LM may not, and then CHAIR measures a collapsed answer ("the shape on the right.")
rather than the assistant's descriptions. This asks every one of ``scenes.DESCRIBE_PROMPTS`` about the
same held-out scenes and reports, per wording, the mean words per description, object mentions per
100 descriptions and CHAIR_s / CHAIR_i (the CHAIR task's vocabulary and objects).

    python benchmarks/describe_prompts.py runs/pipeline/assistant               # 100 scenes, eval_seeds(100, 0)
    python benchmarks/describe_prompts.py runs/pipeline/assistant --scenes 40 --out describe.json

"unseen" is the CHAIR wording, "trained" the mean over the six training wordings; a ratio of
unseen to trained words well under 1 says the CHAIR number describes a collapse, not the assistant.
One torch thread. Measured figures are in benchmarks/bench_pipeline.py's docstring.
"""

import argparse
from pathlib import Path

from looking import load_saved, report

from minillava.eval.scenes import DESCRIBE_PROMPT, DESCRIBE_PROMPTS, eval_seeds
from minillava.eval.tasks import chair_task


def describe(answer_batch, seeds: list[int], batch: int = 25) -> dict:
    """answer_batch(images, questions) -> descriptions; every wording asked about every scene.

    Returns {"by_prompt": {prompt: {"words", "mentions_per_100", "chair_s", "chair_i"}}, "unseen",
    "trained" (the training wordings' means), "words_ratio" (unseen / trained words)}.
    """
    task = chair_task()   # the CHAIR task's scenes, objects, vocabulary and scoring; only the wording changes
    docs = task.build_docs(seeds)
    images = [task.doc_to_visual(doc) for doc in docs]
    by_prompt = {}
    for prompt in DESCRIBE_PROMPTS:
        texts = [text for i in range(0, len(images), batch)
                 for text in answer_batch(images[i:i + batch], [prompt] * len(images[i:i + batch]))]
        scores = task.aggregate([task.process_result(doc, text) for doc, text in zip(docs, texts)])
        by_prompt[prompt] = {"words": round(sum(len(t.split()) for t in texts) / len(texts), 1),
                             "mentions_per_100": round(100 * scores["n_mentions"] / len(texts), 1),
                             "chair_s": round(scores["chair_s"], 3), "chair_i": round(scores["chair_i"], 3)}
    trained = [v for p, v in by_prompt.items() if p != DESCRIBE_PROMPT]
    means = {k: round(sum(v[k] for v in trained) / len(trained), 3) for k in trained[0]}
    unseen = by_prompt[DESCRIBE_PROMPT]
    return {"by_prompt": by_prompt, "unseen": unseen, "trained": means, "scenes": len(seeds),
            "words_ratio": round(unseen["words"] / means["words"], 3) if means["words"] else 0.0}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("assistant", help="a folder saved by minillava.chat.save_assistant (a pipeline's OUT/assistant)")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="which held-out scenes (scenes.eval_seeds)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    assistant = load_saved(parser, args.assistant)
    return report(describe(assistant.answer_batch, eval_seeds(args.scenes, seed=args.seed)), args.out)


if __name__ == "__main__":
    main()
