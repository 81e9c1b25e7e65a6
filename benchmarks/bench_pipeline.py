"""The main job against its targets: the whole `minillava pipeline` command, timed.

Issue 6 asks, for the embedded default (toy world, shipped toy backbones, rule teacher) on
a 2-core CPU with one torch thread: the whole command in <= 10 minutes, and on held-out
scenes short-answer VQA accuracy >= 85 %, POPE (random) F1 >= 0.85 and CHAIR_s <= 20 %.

    python benchmarks/bench_pipeline.py [--out runs/bench-pipeline] [any `minillava pipeline` flag ...]

The command runs in a fresh process, so the wall time includes starting Python and the
imports, as a learner's run does. The CPU may be shared: the load average is printed
before and after, and timings only compare at similar load. The numbers also go to
OUT/bench.json.

WHICH PART LIMITS THE ASSISTANT? (issue 19, 2026-12-02/03; one run each, seed 0, a 2-core CPU shared with
one or two other trainings, so the seconds are noisy). `minillava pipeline` with one backbone swapped, or its
stage budgets tripled; VQA, POPE (random) and CHAIR on the pipeline's own 100 held-out scenes; the looking
test (``python benchmarks/looking.py OUT/assistant``: eval.failures.looking_test on 200 other held-out scenes,
scenes.eval_seeds(200, seed=9)): accuracy with the right image, a blank one, another scene's, and the gap
(right minus the better of the other two).
The LMs' text reading is benchmarks/lm_layouts.py's score (1,600 questions on written held-out scenes).

| toy-lm (its text reading) | tower | stages | VQA | POPE F1 (yes) | CHAIR_s (mentions) | looking: right / blank / other, gap |
|---|---|---|---:|---:|---:|---|
| shipped (~0.80) | RegNet (shipped) | 1000 + 500 | 0.710 | 0.923 | 0.18 | - |
| shipped | CLIP ViT (run J) | 1000 + 500 | 0.690 | 0.912 (0.49) | 0.21 (167) | - |
| mix short_answer=40, 10k steps (0.820) | RegNet | 1000 + 500 | 0.710 | 0.785 (0.56) | 0.09 (139) | 0.662 / 0.357 / 0.448, 0.215 |
| the same | CLIP ViT | 1000 + 500 | 0.655 | 0.787 (0.60) | 0.18 (138) | 0.610 / 0.405 / 0.453, 0.157 |
| reading drill only, 6k steps (0.863) | RegNet | 1000 + 500 | 0.580 | 0.671 (0.94) | 0.10 (17) | 0.532 / 0.453 / 0.460, 0.072 |
| the same | CLIP ViT | 1000 + 500 | 0.570 | 0.650 (0.89) | 0.01 (16) | 0.535 / 0.403 / 0.443, 0.093 |
| shipped | RegNet | 3000 + 1500 | 0.745 | 0.966 (0.49) | 0.05 (145) | 0.752 / 0.395 / 0.455, 0.297 |
| shipped | RegNet | 3000 + 500 | 0.740 | 0.937 (0.51) | 0.10 (157) | 0.705 / 0.417 / 0.453, 0.252 |
| shipped | RegNet | 1000 + 1500 | 0.730 | 0.968 (0.51) | 0.14 (145) | 0.752 / 0.427 / 0.463, 0.292 |

(first row: issue 19's measurement on main; second: benchmarks/vit_tower.py run J. Stages: stage-1 + stage-2
steps, e.g. `--stage1-steps 3000 --stage2-steps 1500`: 592 s; the two rows after it ran beside two other jobs,
845 and 867 s, so their seconds say nothing.) Commands:
`python benchmarks/lm_layouts.py --mix short_answer=40 --steps 10000 --scenes 80000 --save LM` (or
`--steps 6000 --scenes 40000 --save LM` for the drill), then `minillava pipeline --language LM [--vision DIR/toy-vision]`.

What it says:
* The LM's reading of WRITTEN scenes is not what limits the assistant. An LM that reads the text better on
  every topic but size (the mix, 0.820) makes the same VQA (0.710) and a worse POPE; the drill LM, which
  reads best (0.863, size 0.93) but learnt nothing else, makes a far worse assistant (VQA 0.58, POPE yes-ratio
  0.94, 17 object mentions in 100 descriptions): stage 1 and 500 stage-2 steps cannot teach it to caption
  and converse. Issue 19's accepted diagnosis ("the assistant cannot exceed the LM's reading") is not borne out.
* Neither is the tower's information: the CLIP ViT, whose tokens name their grid cell at 0.995, leaves the
  assistant's position answers at 0.195 (looking test, by topic) with both LMs tried, as the RegNet does at
  the same budget (0.146-0.195); only the longer budgets lift position (0.34-0.37), with the RegNet.
* The training budget matters more, POPE most: tripling both stages with the shipped backbones gives VQA 0.745
  (+0.035, about one standard error of 200 questions: within noise),
  POPE F1 0.966 (yes-ratio 0.49) against 0.923, CHAIR_s 0.05 against 0.18 (but 145 mentions against the ~190
  of the issue's run: shorter descriptions), and the largest looking gap of these runs (0.30), at the 600 s
  limit. Either stage alone gets most of the POPE gain (0.937 and 0.968). What the projector and stage 2 make
  of the tokens is the open question, not the backbones' skills.
* Size is at chance in every assistant (0.33-0.52 by the looking test), though an object's size is in its
  token for both towers (object-token probe: RegNet 0.895, ViT 0.98): "What size is the green square?" needs
  the LM to find the token whose colour and shape match and read its size -- the same binding the toy LM
  fails to learn from the mixed toy text (benchmarks/lm_layouts.py), now over image tokens.

ONE KNOB AT A TIME, AND AN LM THAT BINDS IN TEXT (2026-12-03, fourth session; seed 0 unless said, shipped
backbones unless said, 1000 + 500 steps, one thread, the two cores each running one job). The looking test
asks 400 questions (about 57 per topic: a topic's SE is about 0.065).

| run | VQA | POPE F1 (yes) | CHAIR_s (mentions) | looking: right / blank / other, gap | size, position (looking) |
|---|---:|---:|---:|---|---|
| today's default, rerun (215 s) | 0.710 | 0.923 (0.51) | 0.18 (192) | 0.708 / 0.453 / 0.453, 0.255 | 0.455, 0.244 |
| the same, --seed 1 | 0.760 | 0.933 (0.49) | 0.10 (168) | 0.710 / 0.438 / 0.465, 0.245 | 0.333, 0.268 |
| --stage2-lr 1e-3 | 0.670 | 0.892 (0.50) | 0.12 (172) | 0.660 / 0.443 / 0.445, 0.215 | 0.333, 0.341 |
| --stage2-projector-lr 1e-3 | 0.740 | 0.914 (0.51) | 0.22 (198) | 0.708 / 0.455 / 0.450, 0.253 | 0.455, 0.341 |
| --stage2-batch 32 (273 s) | 0.715 | 0.952 (0.51) | 0.13 (158) | 0.720 / 0.430 / 0.470, 0.250 | 0.394, 0.293 |
| --stage1-lr 3e-3 | 0.760 | 0.933 (0.52) | 0.15 (179) | 0.708 / 0.430 / 0.460, 0.247 | 0.394, 0.268 |
| --mixture vqa=6 | 0.720 | 0.922 (0.50) | 0.32 (176) | 0.735 / 0.412 / 0.460, 0.275 | 0.394, 0.341 |
| shipped LM, CLIP ViT (run J), rerun | 0.690 | 0.912 (0.49) | 0.21 (167) | 0.640 / 0.425 / 0.453, 0.188 | 0.333, 0.195 |
| slot LM (benchmarks/lm_slots.py --mix ''), RegNet | 0.690 | 0.583 (0.44) | 0.01 (5) | 0.642 / 0.445 / 0.443, 0.197 | 0.303, 0.171 |
| slot LM, CLIP ViT (run J) | 0.665 | 0.611 (0.48) | 0.01 (3) | 0.637 / 0.415 / 0.425, 0.212 | 0.303, 0.171 |
| **slot curriculum LM (lm_slots.py), RegNet** (193 s) | 0.730 | 0.851 (0.51) | 0.03 (172) | 0.748 / 0.435 / 0.440, **0.308** | **0.788**, 0.244 |
| **slot curriculum LM, CLIP ViT (run J)** (188 s) | 0.735 | 0.824 (0.47) | 0.10 (167) | 0.735 / 0.427 / 0.458, 0.277 | **0.879**, 0.244 |
| curriculum LM (below), RegNet | 0.600 | 0.675 (0.72) | 0.09 (134) | 0.590 / 0.435 / 0.440, 0.150 | 0.485, 0.195 |
| curriculum LM, CLIP ViT (run J) | 0.585 | 0.685 (0.75) | 0.11 (120) | 0.615 / 0.427 / 0.460, 0.155 | 0.636, 0.195 |

* Seed 0 against seed 1 of the default moves VQA by 0.05 and CHAIR_s by 0.08, the looking test's right-image
  accuracy by 0.002: VQA and CHAIR_s on 100 scenes are noisy, the looking test less so.
* No single knob moves the looking test beyond its noise (right image 0.66-0.735, gap 0.215-0.275); the
  stage-2 rate of 1e-3 is worse on every measure. Size stays at chance and position near it in all.
* The curriculum LM (``benchmarks/lm_layouts.py --init DRILL --mix '' --steps 3000 --scenes 40000``: the 6,000-step
  reading drill, then 3,000 steps of the shipped toy text) reads written scenes at 0.847 with size BOUND (0.948)
  and keeps its world knowledge (0.97): the LM the issue asked for, short of its 0.97. As an assistant it is
  WORSE than the shipped LM (VQA 0.60, POPE yes-ratio 0.72, presence 0.69) and its size answers stay near
  chance (0.485 RegNet; 0.636 ViT, 1.8 SE above the default's 0.455). A lookup learnt over written words does
  not carry over to image tokens: the issue's premise (read the text well, then the image) does not hold at
  this scale. benchmarks/lm_slots.py tests the next hypothesis: an LM that reads each object as ONE position;
  not at 1,500-3,000 steps (its text reading binds nothing, and as an assistant it hardly describes), but at
  full length it binds, and its curriculum LM reads size from images (the last point of the next section).

READING FAILS BEFORE BINDING. ``python benchmarks/looking.py OUT/assistant --scenes 100 --by-objects`` asks the
looking test's questions on scenes of ONE object, where nothing needs binding (81 such scenes, 6-17 questions a
topic: read the figures as +-0.1 to 0.15). Default (RegNet): size 0.64, position 0.00 on lone objects (3x
stage budgets: 0.64 and 0.00 again); shipped LM + ViT: size 0.50, position 0.25; curriculum LM: size 0.70. On
300 scenes the default's answers to size questions are "small" 40 times in 44 (27 of the 44 were large), and to
position questions "top"/"bottom"/"centre" nearly always: left and right are named once in 70.

WHERE SIZE IS LOST (``python benchmarks/where_lost.py OUT/assistant``: the token under each object's centre in
the tower and after the projector, then the LM's last hidden state where it answers "What size is the <name>?"
on 1,200 questions; probe = standardised linear probe accuracy, sep = d' between the classes' means):

| assistant | tower size probe / sep | projected size probe / sep | colour sep tower / proj | answer-state probe / sep | says "small" |
|---|---|---|---|---|---:|
| default (RegNet) | 0.888 / 1.06 | 0.879 / 0.54 | 2.71 / 2.62 | 0.625 / 0.30 | 100 % |
| shipped LM + ViT (run J) | 0.978 / 1.73 | 0.972 / 1.42 | 3.48 / 3.39 | 0.717 / 0.41 | 100 % |
| curriculum LM, RegNet | 0.888 / 1.06 | 0.873 / 0.38 | | 0.528 / 0.10 | 66 % (accuracy 0.521) |
| curriculum LM + ViT | 0.978 / 1.73 | 0.966 / 1.26 | | 0.669 / 0.52 | 55 % (accuracy 0.570) |
| slot LM + ViT | 0.978 / 1.73 | 0.977 / 1.56 | | 0.781 / 0.30 | 99.8 % |
| **slot curriculum LM, RegNet** | 0.888 / 1.06 | 0.872 / 0.49 | 2.71 / 2.42 | 0.836 / 1.35 | 59 % (accuracy **0.818**) |
| **slot curriculum LM + ViT** | 0.978 / 1.73 | 0.970 / 1.52 | 3.48 / 3.20 | 0.889 / 1.56 | 52 % (accuracy **0.893**) |
| shipped LM + ViT, 3000 + 1500 steps | 0.978 / 1.73 | 0.964 / 1.43 | | 0.767 / 0.66 | 67 % (accuracy 0.619) |

* The tower holds size, weakly in the RegNet (d' 1.06 against colour's 2.71), and the trained projector HALVES
  it (0.54) while it keeps colour and sharpens shape (1.73 -> 2.02): stages 1 and 2 gave it no reason to keep
  size, because the LM never uses it. The ViT's size survives the projector (1.42).
* Some size reaches the LM's answer state (probe 0.63-0.72; with the ViT, on questions about a lone object, 0.85
  of 41 test questions, its "probe by objects in the scene"), yet the assistant answers "small" to every one of the
  1,200 questions (accuracy 0.515 = the share of small objects): the LM's output never learnt to read it.
  The slot LM's answer state holds the most (0.78; 0.90 on lone objects) and it too says "small" every time.
  Only the curriculum LM, which copies size words in text, answers "large" at all (34-45 %), barely above
  chance (0.52-0.57) -- and the ViT given three times the stage budgets (``--vision DIR --stage1-steps 3000
  --stage2-steps 1500``, 526 s): accuracy 0.619 on the 1,200 questions, the first assistant that reads size
  at all (its pipeline run: VQA 0.700, POPE F1 0.940 (yes 0.49), CHAIR_s 0.21 (147 mentions), looking test
  0.720 / 0.425 / 0.450, gap 0.270, size 0.576, position 0.268). A strong size direction AND a longer stage 2.
* Why colour and shape work and size does not: the toy LM reads colour and shape words from a WRITTEN scene
  (copies them), but reads size from text at chance (benchmarks/lm_layouts.py, shipped LM); stage 1 aligns the
  image tokens to what the LM can copy, so shape and colour become copyable and size does not. The LM that does
  read size from text (curriculum, 0.948) learnt it as "the word before the named shape", a circuit image tokens
  cannot use. The token position (column, row from the centre token: probes 0.48-0.60, sep 0.25-0.64 in both
  towers) is nearly absent from the tokens themselves; the RegNet gives it only by the token's place in the sequence.
* THE SLOT CURRICULUM LM READS SIZE FROM IMAGES (2026-12-03, end of the fourth session; one run each). The LM of
  ``benchmarks/lm_slots.py --steps 6000 --scenes 40000 --save DRILL``, then ``--init DRILL --mix '' --steps 3000
  --scenes 40000 --save DIR`` (text reading 0.915, size 0.943, position 0.89, world knowledge 0.995), under the
  DEFAULT stages (``minillava pipeline --language DIR [--vision ...]``): size questions answered right 0.818
  (RegNet) and 0.893 (ViT) of 1,200, against 0.515 for every earlier LM at this budget; the looking test's size
  0.79 / 0.88 against 0.33-0.46; its gap 0.308 with the RegNet, the largest of any run, at 193 s. The answer
  state now holds size (d' 1.35-1.56, against 0.30-0.41). What is still missing: position (0.244: the slots hold
  place WORDS, which neither tower's tokens state), POPE F1 0.82-0.85 (below the default's 0.923), colour 0.60.
  Not yet repeated over seeds, not yet with longer stages or through findings.py.
* OVER SEEDS (2026-12-03, fifth session; seeds chosen before any result: 0, 1, 2; RegNet, default stages):

  | arm | VQA | POPE F1 | CHAIR_s (mentions) | looking gap | size (looking) | size, 1,200 questions (where_lost) |
  |---|---|---|---|---|---|---|
  | shipped LM (default) | 0.710, 0.760, 0.725 | 0.923, 0.933, 0.916 | 0.18, 0.10, 0.37 (192, 168, 156) | 0.255, 0.245, 0.217 | 0.455, 0.333, 0.364 | 0.515 (seed 0) |
  | slot curriculum LM | 0.730, 0.730, 0.745 | 0.851, 0.852, 0.865 | 0.03, 0.07, 0.09 (172, 182, 182) | 0.308, 0.250, 0.318 | 0.788, 0.758, 0.818 | 0.818, 0.830, 0.811 |

  Size is read from the image in every seed (0.81-0.83, against 0.515: "small" every time); the gap is
  larger on average (0.292 against 0.239, SD ~0.03 a run); VQA does not move (0.735 against 0.732) and POPE
  F1 is lower in every seed (0.856 against 0.924). POPE's errors are conjunctions
  (``python benchmarks/pope_kinds.py OUT``, random split; seeds 0, 1, 2):

  | POPE question | shipped LM: accuracy | slot curriculum LM: accuracy |
  |---|---|---|
  | present (219) | 0.936, 0.927, 0.918 | 0.863, 0.840, 0.904 |
  | absent; its colour and its shape both on other objects (27) | 0.963, 1.000, 0.852 | 0.519, 0.667, 0.481 |
  | absent; colour only in the scene (42) | 0.929, 0.929, 0.905 | 0.833, 0.881, 0.881 |
  | absent; shape only (77) | 0.792, 0.870, 0.857 | 0.831, 0.844, 0.766 |
  | absent; neither (73) | 1.000, 1.000, 1.000 | 0.959, 0.959, 0.945 |

  A slot is a SUM of word vectors: the LM must tell "green square" + "red cross" from "green cross" by
  itself, where a written phrase keeps "green cross" adjacent, and the slot LM reads colour from text at only
  0.69. Position is 0.244 in every run: one answer for every position question.
* WITH THREE TIMES THE STAGE BUDGETS (``--stage1-steps 3000 --stage2-steps 1500``, seed 0, RegNet; POPE's
  three splits by ``minillava eval OUT/assistant --tasks pope_popular,pope_adversarial --n 100``):

  | LM | VQA | POPE F1 random / popular / adversarial (yes) | CHAIR_s (mentions) | looking gap | size (looking) | wall |
  |---|---:|---|---|---:|---:|---:|
  | shipped LM, default stages | 0.710 | 0.923 / 0.936 / 0.928 (0.51) | 0.18 (192) | 0.255 | 0.455 | 215 s |
  | shipped LM, 3x stages | 0.745 | 0.966 / 0.970 / 0.970 (0.49) | 0.05 (145) | 0.297 | -- | 592 s |
  | slot curriculum LM, 3x stages | **0.785** | 0.908 / 0.864 / 0.883 (0.49-0.54) | **0.05 (181)** | **0.320** | **0.909** | 609 s |

  The slot LM with 3x stages is the best VQA of any run (presence 0.99, shape 1.00, size 0.91, count 0.80,
  colour 0.66, relation 0.48, position 0.22) and the first to meet CHAIR_s <= 0.10 without shorter descriptions
  (181 mentions in 100). POPE's conjunctions improve with the budget (0.74 right, against 0.48-0.67 at the
  default budget) but remain its weakness: F1 0.86-0.91 against the shipped LM's 0.97. One seed, one core
  shared with another job.
* SLOT LM VARIANTS AT THE DEFAULT STAGES (fifth session; seed 0; benchmarks/lm_slots.py; each LM a 6,000-step
  drill then 3,000 steps of the shipped mix in its layout, as the slot curriculum):

  | LM | tower | VQA | POPE F1 (yes) | CHAIR_s (mentions) | looking gap | colour, size, position (looking) | size (where_lost) |
  |---|---|---:|---|---|---:|---|---:|
  | slot curriculum (above) | RegNet | 0.730 | 0.851 (0.51) | 0.03 (172) | 0.308 | 0.62, 0.788, 0.244 | 0.818 |
  | + ``--scene-captions`` in the mix | RegNet | **0.780** | 0.873 (0.53) | 0.05 (176) | **0.327** | 0.66, **0.909**, 0.268 | **0.878** |
  | ``--layout grid`` (16 slots, no place words) | RegNet | 0.720 | 0.696 (0.38) | 0.12 (152) | 0.237 | 0.82, 0.667, 0.220 | 0.688 |
  | ``--layout grid`` | ViT (run J) | 0.730 | 0.844 (0.53) | 0.19 (139) | 0.275 | 0.74, 0.818, 0.268 | 0.888 |
  | ``--layout grid_cells`` (drill 4,000, then the mix) | ViT (run J) | 0.745 | **0.954 (0.50)** | 0.27 (174) | 0.295 | 0.70, 0.909, **0.317** | **0.907** |

  * ``--scene-captions`` (the mix's caption documents read their slot scene first, where stage 1 puts the
    image) helps on every measure in this seed: stage 1 then asks the LM for what it already does, and the
    projector keeps more of size (projected separation 0.70, against 0.44-0.56). Over seeds 0, 1, 2 (fixed
    before any result): VQA 0.780, 0.775, 0.775 (shipped LM 0.710, 0.760, 0.725; slot curriculum 0.730, 0.730,
    0.745); looking gap 0.327, 0.327, 0.328 (shipped 0.255, 0.245, 0.217); size (looking) 0.909, 0.879, 0.879;
    POPE F1 0.873, 0.908, 0.886 (shipped 0.923, 0.933, 0.916); CHAIR_s 0.05, 0.12, 0.11 (176, 188, 186
    mentions). VQA +0.045 and the gap +0.088 over the shipped LM, each several standard errors of the
    seed spread; POPE -0.035.
  * The grid layout answers background-colour questions (colour 0.74-0.82, against 0.62-0.66: every other
    LM says "gray" whatever the background, since its scene names the background in words and the image
    does not) but loses elsewhere: it was taught that an object is ONE slot under its centre, and a large
    object covers several image tokens (RegNet: presence 0.85, POPE yes-ratio 0.38, says "small" 70 %);
    with the ViT POPE says yes to an absent object whose colour is present (0.59). Rejected at this budget.
  * ``--layout grid_cells`` (each slot also holds its cell's learnt vector, as a ViT's position embedding),
    with the ViT whose tokens carry their cell: POPE F1 0.954, its conjunctions right 0.926 (every other slot
    LM 0.41-0.85), size 0.907 of 1,200, and position 0.317, the highest of any run (0.22-0.27 elsewhere).
    Over seeds 0, 1, 2: VQA 0.745, 0.770, 0.795; POPE F1 random 0.954, 0.963, 0.957 (yes 0.50; seed 0's popular
    0.924 and adversarial 0.922); conjunctions 0.926, 0.889, 0.889; looking gap 0.295, 0.333, 0.312; size
    (looking) 0.909, 0.879, 0.909; position 0.317, 0.244, 0.317; CHAIR_s 0.27, 0.23, 0.23 (174, 146, 176
    mentions), the one measure it worsens; 162-181 s a run.
* SIXTH SESSION (2026-12-03; the ViT of run J, default stages, seeds 0, 1, 2 fixed before any result; each LM
  from benchmarks/lm_slots.py, continuing the 4,000-step grid_cells drill):

  | LM | VQA | POPE F1 random (yes) | CHAIR_s (mentions) | looking gap | colour, size, position (looking) |
  |---|---|---|---|---|---|
  | grid_cells (above) | 0.745, 0.770, 0.795 | 0.954, 0.963, 0.957 | 0.27, 0.23, 0.23 (174, 146, 176) | 0.295, 0.333, 0.312 | 0.70-0.76, 0.88-0.91, 0.24-0.32 |
  | grid_cells, mix with ``--scene-captions`` | 0.825, 0.820, 0.775 | 0.890, 0.897, 0.905 (0.56-0.59) | 0.23, 0.12, 0.32 (171, 154, 123) | 0.345, 0.342, 0.285 | 0.76-0.84, 0.85-0.91, 0.17-0.39 |
  | grid_cover, + 1,500 drill, then the mix | 0.785, 0.785, 0.805 | 0.944, 0.950, 0.957 (0.48-0.51) | 0.17, 0.23, 0.15 (158, 167, 162) | 0.292, 0.300, 0.315 | 0.78-0.84, **0.94-0.97**, 0.20-0.34 |
  | halves world*, + 1,500 drill, mix with ``--scene-captions`` | **0.840, 0.825, 0.820** | 0.926, 0.947, 0.945 (0.49-0.53) | 0.17, 0.22, 0.17 (153, 167, 151) | **0.350, 0.335, 0.318** | **0.86-0.90**, 0.88-0.91, 0.37-0.42 |

  (*) ``benchmarks/with_edges.py 0.5``: the world's places are halves, which nest in the 4 x 4 token grid
  (benchmarks/lm_slots.py); its VQA asks position with 4 answers instead of 9, so it is not comparable
  with the other rows on position, only on the rest. Commands: ``python benchmarks/lm_slots.py --layout
  grid_cells --init DRILL4K --mix '' --scene-captions --steps 3000 --scenes 40000 --save LM``, then
  ``minillava pipeline --language LM --vision VIT --seed S`` and ``python benchmarks/looking.py OUT/assistant``;
  the halves row runs each of them under ``python benchmarks/with_edges.py 0.5`` (and its own MINILLAVA_CACHE).
  * Scene captions lift VQA (+0.037 mean over seeds) and the gap (+0.011) but cost POPE 0.06: the absent
    objects whose colour is in the scene are answered "yes" (conjunctions 0.44 and colour-only 0.50 right in
    seed 0, against 0.93 and 0.83 without, 0.96 and 0.79 in the halves row; ``python benchmarks/pope_kinds.py OUT``).
  * Halves: the best VQA (0.828 mean) and gap (0.334 mean) of any run, POPE back to 0.926-0.947, CHAIR_s 0.17-0.22,
    colour 0.86-0.90. Position, the topic it was for, rises only to 0.37-0.42 of the looking test (its where-
    questions: 8 of 16 right in seed 0's VQA, chance 0.25), though the LM reads place from the written cells at
    0.72 and the tower's tokens name their cell at 0.995: the projector does not yet carry the cell to the LM.
  * grid_cover (each object in every cell it covers, as the image tokens show it): against grid_cells, VQA
    +0.022 and CHAIR_s -0.06 in the mean of the seeds, POPE and the gap the same, size 0.94-0.97; but its LM
    also had 1,500 more drill steps, and its descriptions still name a large object twice now and then
    ("There is a small orange square in the top left. There is also a small orange square in the bottom
    right."). ``python benchmarks/lm_slots.py --layout grid_cover --init DRILL4K --steps 1500 --save D``, then
    ``--init D --mix '' --steps 3000``.
* THE PACKAGE'S BUILD OF THE SAME LM (``recipe.SLOTS``: ``minillava.backbones.build.make_lm``, 3,593 s on one
  core; its drill and mix documents are the benchmark's, checked equal) is NOT the benchmark's LM: its fresh
  LM starts from another draw of the random initialisation, and the result answers as well (seeds 0, 1: VQA
  0.790, 0.760; POPE F1 0.942, 0.944; looking gap 0.302, 0.295; size 0.94, 0.97) but describes badly: "the
  shape on the right." -- 11-13 words a description against 50, 34-57 object mentions in 100 against 146-176
  (CHAIR_s 0.07-0.11 says nothing then). Not the stripping of its slot rows: the benchmark's LM stripped the
  same way (toy_slots.strip) gives its own numbers again (VQA 0.745, POPE 0.954, CHAIR_s 0.26 at 173 mentions,
  50 words). So whether the slot LM keeps the detail-description format depends on its initialisation: a
  fragile recipe, not to be shipped until that is understood.
* SEVENTH SESSION: THE COLLAPSE IS CHAIR'S UNSEEN WORDING (2026-12-03). Both builders drew the fresh LM's weights
  unseeded, so neither build was reproducible; now ``torch.manual_seed(recipe.seed)`` comes first (tested). Built
  with ``recipe.SLOTS`` at LM seeds 0 and 1 (``/tmp``-scripted make_lm; 4,504-4,664 s with three jobs on two cores),
  a ViT of ``recipe.VIT`` rebuilt the same way (2,363 s), pipeline seed 0, ``python benchmarks/describe_prompts.py
  OUT/assistant`` (100 held-out scenes, CHAIR's "Please describe this image in detail." against stage 2's six
  wordings):

  | LM | VQA | POPE F1 (yes) | CHAIR_s (mentions) | looking gap | words: CHAIR's wording / the six (ratio) |
  |---|---|---|---|---|---|
  | seed 0 | 0.700 | 0.801 (0.43) | 0.17 (153) | 0.287 | 51.3 / 51.4 (1.00) |
  | seed 1 | 0.705 | 0.936 (0.50) | 0.48 (207) | 0.260 | **19.9** / 56.5 (0.35) |
  | seed 1's drill, mix with detail requests only in DETAIL_WORDINGS (detail=0, detail_any=1) | 0.740 | 0.936 (0.50) | 0.16 (156) | 0.272 | 45.4 / 50.8 (0.89) |
  | seed 0's drill, mix + DETAIL_WORDINGS (detail_any=1; now recipe.SLOTS) | 0.745 | **0.0 (0.00)** | 0.24 (174) | 0.330 | 54.1 / 53.7 (1.01) |
  | seed 1's drill, mix + DETAIL_WORDINGS (detail_any=1) | 0.710 | 0.943 (0.51) | 0.22 (181) | 0.278 | 57.9 / 55.9 (1.04) |

  * The collapse is made in pretraining: asked in slots, the seed-1 LM itself answers CHAIR's wording with a
    reasoning answer ("The image has a circle would roll smoothly, ...", 23 words, CHAIR_s 0.45) and the six
    wordings with 53-56-word descriptions; the seed-0 LM describes for all seven.
  * DETAIL_WORDINGS (294 composed requests, CHAIR's left out) fixes it at both levels: both LMs describe for all
    seven wordings (53-58 words, LM CHAIR_s 0.03-0.10), both assistants at ratio >= 1. Replacing the six instead
    of adding to them (the detail=0 row) lost two of the six in the LM ("Provide a detailed description..." ->
    "A red circle on a gray background.", 9 words: the brief kind's "Provide a brief description..."); stage 2
    restored them.
  * Still not shippable: LM seed 0 with the pool answers "No, there is no ... in the image." to all 438 POPE
    questions (VQA 0.745 and the best gap of these, 0.330, so it looks), and seed 0 without it reached only
    0.801. POPE's yes/no answer, like the description format before, depends on the LM seed: the next thing to
    make robust, over LM seeds, before the long build.
* So the next lever is an LM whose pretraining makes it read an attribute out of the SAME position it matched
  (what an image token needs), plus a tower whose size and place directions are strong (d' >= 2), and a gate on
  separation, not only on standardised probes: issue 19 §1's probe targets pass directions too faint for the LM.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from minillava.pipeline import TARGETS, TIME_TARGET_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/bench-pipeline", help="the pipeline's output folder")
    args, pipeline_flags = parser.parse_known_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")   # one thread, as the target is stated
    load_before = os.getloadavg()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "minillava.cli", "pipeline", "--out", args.out, *pipeline_flags],
                   env=env, check=True)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()

    out = Path(args.out)
    summary = json.loads((out / "summary.json").read_text())
    values = {task: summary["metrics"][task][metric] for task, (metric, _, _) in TARGETS.items()}
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "flags": pipeline_flags,
              "wall_s": round(wall, 1), "load_before": load_before, "load_after": load_after,
              "cpus": os.cpu_count(), "metrics": values, "seconds": summary["seconds"],
              "chair_mentions": summary["metrics"]["chair"]["n_mentions"]}
    (out / "bench.json").write_text(json.dumps(record, indent=2))

    print(f"\nload average (1, 5, 15 min) before {load_before}, after {load_after}, on {os.cpu_count()} CPUs")
    print("| measure | value | target |\n|---|---:|---|")
    print(f"| whole command (s) | {wall:.0f} | <= {TIME_TARGET_S} |")
    for task, (metric, op, target) in TARGETS.items():
        print(f"| {task} {metric} | {values[task]:.3f} | {op} {target:g} |")
    print("seconds per step: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()))


if __name__ == "__main__":
    main()
