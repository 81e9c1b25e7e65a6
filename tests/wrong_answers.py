"""Plausible wrong answers that every graded checker must reject.

``WRONG`` maps a checker's name (``"projector"`` for ``grading.check_projector``) to a
list of wrong implementations, each passed to the checker the way a learner's would be.
tests/test_grading.py requires an entry for every registered checker, and a GradingError
from the checker for each wrong answer (the right answer it must accept comes from the
solution notebook, through tests/right_answers.py). These are mistakes learners make (a
missing activation, an off-by-one mask, a transposed shape), not random junk.
"""

import math
import random
import re
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from minillava.conversation import get_template
from minillava.eval.failures import TOPICS, topic
from minillava.loss import lm_loss_sum
from minillava.toyworld import Scene
from minillava.train import GROUPS


# ---------------------------------------------------------------- projector
def _mlp(act):
    class Projector(nn.Sequential):
        def __init__(self, vision_dim, text_dim):
            super().__init__(nn.Linear(vision_dim, text_dim), act, nn.Linear(text_dim, text_dim))
    return Projector


class SingleLinear(nn.Linear):  # LLaVA v1's projector, not 1.5's
    def __init__(self, vision_dim, text_dim):
        super().__init__(vision_dim, text_dim)


class GeluAtTheEnd(nn.Sequential):
    def __init__(self, vision_dim, text_dim):
        super().__init__(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim), nn.GELU())


# ---------------------------------------------------------------- splice
def _splice(image_labels, keep_placeholder=False, reverse=False):
    def splice_sample(input_ids, labels, text_embeds, image_features, image_token_id):
        features = list(reversed(image_features)) if reverse else list(image_features)
        embeds, out_labels = [], []
        for i, token in enumerate(input_ids.tolist()):
            if token == image_token_id:
                f = features.pop(0)
                if keep_placeholder:
                    embeds.append(text_embeds[i:i + 1]); out_labels.append(labels[i:i + 1])
                embeds.append(f)
                out_labels.append(torch.full((len(f),), int(labels[i]) if image_labels == "copy" else -100))
            else:
                embeds.append(text_embeds[i:i + 1]); out_labels.append(labels[i:i + 1])
        return torch.cat(embeds), torch.cat(out_labels)
    return splice_sample


# ---------------------------------------------------------------- masked loss
def loss_without_shift(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def loss_over_all_positions(logits, labels):  # masked tokens add 0 but still count
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                ignore_index=-100, reduction="none")
    return per_token.mean()


def loss_mean_of_sample_means(logits, labels):  # weights a token in a short answer more
    return torch.stack([F.cross_entropy(logits[i, :-1], labels[i, 1:], ignore_index=-100)
                        for i in range(len(logits))]).mean()


# ---------------------------------------------------------------- symbolic context (chapter 2)
def _context(box_key="box", decimals=3, blank_line=True, with_size=True):
    def symbolic_context(annotation):
        captions = Scene.from_annotation(annotation).captions()
        lines = []
        for o in annotation["objects"]:
            name = f"{o['size']} {o['name']}" if with_size else o["name"]
            lines.append(f"{name}: [" + ", ".join(f"{v:.{decimals}f}" for v in o[box_key]) + "]")
        return "\n".join(captions) + ("\n\n" if blank_line else "\n") + "\n".join(lines)
    return symbolic_context


def context_pixel_boxes(annotation):  # pixel coordinates written as integers
    lines = [f"{o['size']} {o['name']}: {o['pixel_box']}" for o in annotation["objects"]]
    return "\n".join(Scene.from_annotation(annotation).captions()) + "\n\n" + "\n".join(lines)


def context_unformatted_floats(annotation):  # str(list): 0.76 instead of 0.760
    lines = [f"{o['size']} {o['name']}: {o['box']}" for o in annotation["objects"]]
    return "\n".join(Scene.from_annotation(annotation).captions()) + "\n\n" + "\n".join(lines)


# ---------------------------------------------------------------- parse conversation (chapter 2)
def _parse(roles=("human", "gpt"), strip=True, keep_label=False, keep_unanswered=False):
    def parse_conversation(raw):
        turns = []
        for block in re.split(r"^[ \t]*===[ \t]*$", raw, flags=re.MULTILINE):
            label, _, text = block.strip().partition(":")
            if label not in ("Question", "Answer"):
                continue
            value = (block.strip() if keep_label else text.strip()) if strip else (block if keep_label else text)
            turns.append({"from": roles[label == "Answer"], "value": value})
        if not keep_unanswered and turns and turns[-1]["from"] == roles[0]:
            turns.pop()
        return turns
    return parse_conversation


def parse_keeping_separators(raw):  # split at the labels only: the "===" lines stay in the values
    parts = re.split(r"^\s*(Question|Answer):", raw, flags=re.MULTILINE)[1:]
    turns = [{"from": "human" if label == "Question" else "gpt", "value": text.strip()}
             for label, text in zip(parts[::2], parts[1::2])]
    return turns[:-1] if turns and turns[-1]["from"] == "human" else turns


def parse_one_line_answers(raw):  # keeps only the first line of each text
    turns = []
    for block in re.split(r"^[ \t]*===[ \t]*$", raw, flags=re.MULTILINE):
        label, _, text = block.strip().partition(":")
        if label in ("Question", "Answer"):
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")
            turns.append({"from": "human" if label == "Question" else "gpt", "value": first})
    return turns[:-1] if turns and turns[-1]["from"] == "human" else turns


# ---------------------------------------------------------------- select best resolution (chapter 5)
def _best_resolution(sizes_as_wh=False, whole_pixels=True, on_tie="least waste"):
    def select_best_resolution(image_size, pinpoints):
        height, width = image_size
        if sizes_as_wh:  # PIL's (width, height) order read as (height, width)
            width, height = image_size
        best, best_key = None, None
        for canvas_h, canvas_w in pinpoints:
            scale = min(canvas_w / width, canvas_h / height)
            if whole_pixels:
                effective = min(int(width * scale) * int(height * scale), width * height)
            else:  # a fraction of a pixel row counts as more resolution
                effective = min(width * scale * height * scale, width * height)
            key = {"least waste": (effective, -(canvas_h * canvas_w - effective)),
                   "largest canvas": (effective, canvas_h * canvas_w),
                   "first listed": (effective,)}[on_tie]
            if best_key is None or key > best_key:
                best, best_key = (canvas_h, canvas_w), key
        return best
    return select_best_resolution


# ---------------------------------------------------------------- unpad (chapter 5)
def _unpad(where="centre", sizes_as_wh=False, rounding=True, keep_odd_row=True):
    def unpad(features, original_size):
        _, h, w = features.shape
        orig_h, orig_w = original_size[::-1] if sizes_as_wh else original_size
        fix = (lambda x: int(round(x, 7))) if rounding else int  # int alone: the original LLaVA's truncation
        new_h, new_w = h, w
        if orig_w / orig_h > w / h:
            fitted = fix(orig_h * (w / orig_w))
            new_h = h - 2 * ((h - fitted) // 2) if keep_odd_row else fitted
        else:
            fitted = fix(orig_w * (h / orig_h))
            new_w = w - 2 * ((w - fitted) // 2) if keep_odd_row else fitted
        top, left = ((h - new_h) // 2, (w - new_w) // 2) if where == "centre" else (0, 0)
        return features[:, top:top + new_h, left:left + new_w]
    return unpad


# ---------------------------------------------------------------- pack rows with a newline (chapter 5)
def pack_newline_first(features, newline):  # the newline starts every row instead of ending it
    c, h, _ = features.shape
    return torch.cat([newline[:, None, None].expand(c, h, 1), features], dim=2).flatten(1).T


def pack_column_major(features, newline):  # reads the map column by column
    c, _, w = features.shape
    return torch.cat([features.transpose(1, 2), newline[:, None, None].expand(c, w, 1)], dim=2).flatten(1).T


def pack_one_newline_at_the_end(features, newline):  # the right length only when H == 1
    return torch.cat([features.flatten(1).T, newline[None]])


def pack_without_transpose(features, newline):  # (C, H * (W + 1)): channels first
    c, h, _ = features.shape
    return torch.cat([features, newline[:, None, None].expand(c, h, 1)], dim=2).flatten(1)


# ---------------------------------------------------------------- POPE metrics (chapter 8)
def _pope_metrics(positive="yes", yes_ratio_of="predictions", guard=True, f1="harmonic"):
    def pope_metrics(predictions, labels):
        pairs = list(zip(predictions, labels))
        tp = sum(p == positive and l == positive for p, l in pairs)
        fp = sum(p == positive and l != positive for p, l in pairs)
        fn = sum(p != positive and l == positive for p, l in pairs)
        if guard:
            precision = tp / (tp + fp) if tp + fp else 0.0
        else:  # crashes on a model that never says yes
            precision = tp / (tp + fp)
        recall = tp / (tp + fn) if tp + fn else 0.0
        if f1 == "harmonic":
            f1_score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        else:  # the arithmetic mean: 0.75 for an always-yes model instead of 0.667
            f1_score = (precision + recall) / 2
        answers = predictions if yes_ratio_of == "predictions" else labels
        return {"accuracy": sum(p == l for p, l in pairs) / len(pairs), "precision": precision, "recall": recall,
                "f1": f1_score, "yes_ratio": answers.count("yes") / len(answers)}
    return pope_metrics


# ---------------------------------------------------------------- CHAIR (chapter 8)
def _chair_scores(once=True, synonyms=True, swap=False, pooled=True):
    def chair_scores(descriptions, present_objects, vocab):
        forms = {}
        for obj, names in vocab.items():
            for name in (names if synonyms else [obj, obj + "s"]):  # without synonyms: the name and "+s"
                forms[name] = obj
        mentions = hallucinated = hallucinating = 0
        rates = []
        for text, present in zip(descriptions, present_objects):
            found = [forms[w] for w in re.findall(r"\w+", text.lower()) if w in forms]
            if once:
                found = list(dict.fromkeys(found))
            wrong = [obj for obj in found if obj not in present]
            mentions += len(found)
            hallucinated += len(wrong)
            hallucinating += bool(wrong)
            rates.append(len(wrong) / len(found) if found else 0.0)
        chair_i = (hallucinated / mentions if mentions else 0.0) if pooled else sum(rates) / len(rates)
        chair_s = hallucinating / len(descriptions)
        return (chair_s, chair_i) if swap else (chair_i, chair_s)
    return chair_scores


# ---------------------------------------------------------------- judge scores (chapter 8)
def _parse_judgement(on_failure=None, check_range=True, commas=True):
    def parse_judgement(text):
        lines = text.strip().splitlines()
        fields = (lines[0].replace(",", " ") if commas else lines[0]).split() if lines else []
        try:
            scores = tuple(float(f) for f in fields)
        except ValueError:
            return on_failure
        if len(scores) != 2 or (check_range and not all(1 <= s <= 10 for s in scores)):
            return on_failure
        return scores
    return parse_judgement


def parse_judgement_anywhere(text):  # the first two numbers anywhere in the reply
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]
    if len(numbers) < 2 or not all(1 <= n <= 10 for n in numbers[:2]):
        return None
    return tuple(numbers[:2])


WRONG = {
    "projector": [_mlp(nn.ReLU()), _mlp(nn.GELU(approximate="tanh")), SingleLinear, GeluAtTheEnd],
    "splice": [_splice("copy"), _splice(-100, keep_placeholder=True), _splice(-100, reverse=True)],
    "masked_loss": [loss_without_shift, loss_over_all_positions, loss_mean_of_sample_means],
    "symbolic_context": [context_pixel_boxes, _context(decimals=2), _context(blank_line=False),
                         _context(with_size=False), context_unformatted_floats],
    "parse_conversation": [_parse(roles=("gpt", "human")), _parse(strip=False), _parse(keep_label=True),
                           _parse(keep_unanswered=True), parse_keeping_separators, parse_one_line_answers],
    "select_best_resolution": [_best_resolution(sizes_as_wh=True), _best_resolution(on_tie="largest canvas"),
                               _best_resolution(on_tie="first listed"), _best_resolution(whole_pixels=False)],
    "unpad": [_unpad(where="top left"), _unpad(sizes_as_wh=True), _unpad(rounding=False),
              _unpad(keep_odd_row=False)],
    "pack_rows": [pack_newline_first, pack_column_major, pack_one_newline_at_the_end, pack_without_transpose],
    "pope_metrics": [_pope_metrics(positive="no"), _pope_metrics(yes_ratio_of="labels"), _pope_metrics(guard=False),
                     _pope_metrics(f1="mean")],
    "chair_scores": [_chair_scores(swap=True), _chair_scores(once=False), _chair_scores(synonyms=False),
                     _chair_scores(pooled=False)],
    "parse_judgement": [_parse_judgement(on_failure=(-1.0, -1.0)), _parse_judgement(check_range=False),
                        _parse_judgement(commas=False), parse_judgement_anywhere],
}


# ---------------------------------------------------------------- chat templates (chapter 6)
def _render_vicuna(end="</s>", after_system=" ", generation="ASSISTANT:", move_image=True, image_sep="\n",
                   override=True, user_start="USER: "):
    default_system = get_template("vicuna_v1").system

    def render_vicuna(messages, add_generation_prompt=False):
        system = default_system
        if messages[0]["role"] == "system":
            system = messages[0]["content"] if override else system
            messages = messages[1:]
        text = system + after_system
        for i, m in enumerate(messages):
            content = m["content"]
            if i == 0 and move_image and "<image>" in content:
                rest = content.replace("<image>", "").strip()
                content = "<image>" + (image_sep + rest if rest else "")
            text += user_start + content + " " if m["role"] == "user" else "ASSISTANT: " + content + end
        return text + (generation if add_generation_prompt else "")
    return render_vicuna


def _build_labels(bos_label="masked", shift=False, end=True, role_marker=False, fill=-100):
    def build_labels(segments, bos_id):
        input_ids = [] if bos_id is None else [bos_id]
        labels = [] if bos_id is None or bos_label == "dropped" else [bos_id if bos_label == "supervised" else fill]
        for ids, is_answer in segments:
            if is_answer:
                if role_marker and labels:   # the last prompt token ("ASSISTANT:"'s colon) counted as answer
                    labels[-1] = input_ids[-1]
                labels += ids if end else ids[:-1] + [fill]
            else:
                labels += [fill] * len(ids)
            input_ids += ids
        if shift:   # labels as next-token targets: but the loss shifts them itself
            labels = labels[1:] + [fill]
        return input_ids, labels
    return build_labels


WRONG.update({
    # no </s> after answers; "...questions.USER:"; "ASSISTANT: " open turn; <image> left in place, or glued to
    # the text; the system message ignored; a space after </s> before the next USER
    "render_vicuna": [_render_vicuna(end=""), _render_vicuna(after_system=""), _render_vicuna(generation="ASSISTANT: "),
                      _render_vicuna(move_image=False), _render_vicuna(image_sep=""), _render_vicuna(override=False),
                      _render_vicuna(end="</s> ")],
    "build_labels": [_build_labels(bos_label="supervised"), _build_labels(bos_label="dropped"), _build_labels(shift=True),
                     _build_labels(end=False), _build_labels(role_marker=True), _build_labels(fill=0)],
})


# ---------------------------------------------------------------- write scene (chapter 1)
def _write_scene(order="left edge", y="down", last_comma="", size=True, marks=True, article="a/an", thirds=True):
    def write_scene(annotation):
        def key(o):
            return o["box"][0] if order == "left edge" else (o["box"][0] + o["box"][2]) / 2
        objects = sorted(annotation["objects"], key=key) if order else annotation["objects"]
        phrases = []
        for o in objects:
            x1, y1, x2, y2 = o["box"]
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            if y == "up":
                cy = 1 - cy
            low, high = (1 / 3, 2 / 3) if thirds else (0.25, 0.75)
            row = "top" if cy < low else "bottom" if cy > high else ""
            col = "left" if cx < low else "right" if cx > high else ""
            place = (f"in the {row} {col}" if row and col else f"at the {row}" if row
                     else f"on the {col}" if col else "in the centre")
            phrase = f"a {o['size']} {o['name']}" if size else f"a {o['name']}"
            if marks and o["mark"]:
                an = "an" if article == "a/an" and o["mark"][0] in "aeiou" else "a"
                phrase += f" with {an} {o['mark']} dot"
            phrases.append(f"{phrase} {place}")
        listing = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + last_comma + " and " + phrases[-1]
        return f"On a {annotation['background']} background, from left to right: {listing}."
    return write_scene


WRONG.update({
    "write_scene": [_write_scene(order=None), _write_scene(order="centre"), _write_scene(y="up"),
                    _write_scene(last_comma=","), _write_scene(size=False), _write_scene(marks=False),
                    _write_scene(article="a"), _write_scene(thirds=False)],
})


# ---------------------------------------------------------------- param groups (chapter 4)
def _param_groups(everything=False, modes="per group", newline=True, unfreeze=True, one_lr=False, check=True):
    def param_groups(model, lrs):
        if check and set(lrs) - set(GROUPS):
            raise ValueError(f"unknown group; choose from {GROUPS}")
        groups = {name: [] for name in lrs}
        for name, p in model.named_parameters():
            group = "projector" if newline and name == "image_newline" else name.split(".")[0]
            if group in lrs:
                groups[group].append(p)
                if unfreeze:   # without this, what stage 1 froze stays frozen in stage 2
                    p.requires_grad_(True)
            else:
                p.requires_grad_(False)
        if modes == "per group":
            for group in GROUPS:
                getattr(model, group).train(group in lrs)
        else:   # the whole model in one mode
            model.train(modes == "train")
        if everything:   # frozen parameters handed to the optimizer too
            return [{"params": list(model.parameters()), "lr": max(lrs.values())}]
        lr = max(lrs.values())
        return [{"params": params, "lr": lr if one_lr else lrs[name]} for name, params in groups.items()]
    return param_groups


# ---------------------------------------------------------------- token-weighted accumulation (chapter 4)
def _accumulate(weighting="tokens", count="labels", zero_between=False):
    def accumulate(model, micro_batches):
        outputs = [model(**batch) for batch in micro_batches]
        if count == "labels":
            total = sum(int((out.labels[:, 1:] != -100).sum()) for out in outputs)
        else:   # every real position, prompt and image included
            total = sum(int(out.attention_mask.sum()) for out in outputs)
        value = 0.0
        for out in outputs:
            if zero_between:
                model.zero_grad()
            if weighting == "tokens":
                loss = lm_loss_sum(out.logits, out.labels)[0] / total
            elif weighting == "micro-batch means":   # average of the micro-batches' averages
                loss = out.loss / len(outputs)
            elif weighting == "summed means":   # the means added up, never divided
                loss = out.loss
            else:   # "samples": every sample's mean weighs the same
                n_samples = sum(len(o.labels) for o in outputs)
                loss = sum(lm_loss_sum(out.logits[i:i + 1], out.labels[i:i + 1])[0]
                           / lm_loss_sum(out.logits[i:i + 1], out.labels[i:i + 1])[1]
                           for i in range(len(out.labels))) / n_samples
            loss.backward()
            value += loss.item()
        return value
    return accumulate


# ---------------------------------------------------------------- ratio sampler (chapter 7)
def _ratio_sample(rounding="largest remainder", within="passes", final_shuffle=True, rng="seeded", check=True):
    def ratio_sample(sizes, weights, total, seed=0):
        if check and (min(weights.values()) < 0 or sum(weights.values()) <= 0):
            raise ValueError("weights must be >= 0 with a positive sum")
        r = random.Random(seed) if rng == "seeded" else random
        names = list(sizes)
        exact = [total * weights[n] / sum(weights.values()) for n in names]
        if rounding == "weighted draws":   # each record's source drawn at random: shares only on average
            picks = r.choices(names, [weights[n] for n in names], k=total)
            counts = [picks.count(n) for n in names]
        elif rounding == "round":
            counts = [round(x) for x in exact]
        else:
            counts = [math.floor(x) for x in exact]
            if rounding == "largest remainder":
                for i in sorted(range(len(names)), key=lambda i: exact[i] - counts[i], reverse=True)[:total - sum(counts)]:
                    counts[i] += 1
        drawn = []
        for name, n in zip(names, counts):
            if within == "replacement":
                picked = [r.randrange(sizes[name]) for _ in range(n)]
            else:
                picked = []
                while len(picked) < n:
                    pool = list(range(sizes[name]))
                    if within == "passes":
                        r.shuffle(pool)
                    picked += pool[:n - len(picked)]
            drawn += [(name, i) for i in picked]
        if final_shuffle:
            r.shuffle(drawn)
        return drawn
    return ratio_sample


WRONG.update({
    "param_groups": [_param_groups(everything=True), _param_groups(modes="train"), _param_groups(modes="eval"),
                     _param_groups(newline=False), _param_groups(unfreeze=False), _param_groups(one_lr=True),
                     _param_groups(check=False)],
    "token_weighted_accumulation": [_accumulate(weighting="micro-batch means"), _accumulate(weighting="summed means"),
                                    _accumulate(weighting="samples"), _accumulate(count="positions"),
                                    _accumulate(zero_between=True)],
    "ratio_sampler": [_ratio_sample(rounding="weighted draws"), _ratio_sample(rounding="floor"),
                      _ratio_sample(rounding="round"), _ratio_sample(within="replacement"),
                      _ratio_sample(within="first records"), _ratio_sample(final_shuffle=False),
                      _ratio_sample(rng="global"), _ratio_sample(check=False)],
})


# ---------------------------------------------------------------- gap by topic (chapter 9)
def _gap_by_topic(sign=1, grouping="topic", n_from="right", empty=False, order="topics", check="prompts"):
    def gap_by_topic(right, blank):
        if check == "prompts" and (len(right) != len(blank) or
                                   any(a["prompt"] != b["prompt"] for a, b in zip(right, blank))):
            raise ValueError("mismatch")
        if check == "lengths" and len(right) != len(blank):
            raise ValueError("mismatch")
        groups = defaultdict(lambda: ([], []))
        for a, b in zip(right, blank):
            name = topic(a["prompt"]) if grouping == "topic" else "all"
            groups[name][0].append(a["result"]["accuracy"])
            groups[name][1].append(b["result"]["accuracy"])
        if grouping == "overall":   # one overall figure copied to every topic
            groups = {topic(a["prompt"]): groups["all"] for a in right}
        names = [t for t, _ in TOPICS] + ["other"] if order == "topics" else sorted(groups)
        if order == "first seen":
            names = list(dict.fromkeys(topic(a["prompt"]) for a in right))
        out = {}
        for name in names:
            seen, unseen = groups.get(name, ([], []))
            if not seen and not empty:
                continue
            w = sum(seen) / len(seen) if seen else 0.0
            b = sum(unseen) / len(unseen) if unseen else 0.0
            out[name] = {"with image": w, "blank": b, "gap": sign * (w - b),
                         "n": len(seen) * (2 if n_from == "both" else 1)}
        return out
    return gap_by_topic


WRONG.update({
    "gap_by_topic": [_gap_by_topic(sign=-1), _gap_by_topic(grouping="overall"), _gap_by_topic(n_from="both"),
                     _gap_by_topic(empty=True), _gap_by_topic(order="alphabetical"),
                     _gap_by_topic(order="first seen"), _gap_by_topic(check="lengths"), _gap_by_topic(check=None)],
})
