"""The switch: what the chapters run on, toy or real backbones, read from the environment.

``settings()`` reads MINILLAVA_BACKBONES (toy or real) and the variables that swap single
pieces (MINILLAVA_VISION, _LANGUAGE, _TEMPLATE, _DATA, _STAGE1_DATA, _IMAGE_FOLDER, _STAGE1_IMAGE_FOLDER); the
package docstring (``help(minillava.course)``) explains each. The backbones' zoo imports
transformers (seconds), so it is imported only when a chapter loads a model, not with
``from minillava import course``.
"""

import dataclasses
import os

from minillava.data.sources import DataError, source_kind
from minillava.pipeline import PipelineConfig

# The embedded default: PipelineConfig's toy backbones and template (toy-vision, toy-lm, vicuna_v1).
TOY = {key: getattr(PipelineConfig(), key) for key in ("vision", "language", "template")}
# LLaVA-1.5-7B's pair and its template.
REAL = {"vision": "openai/clip-vit-large-patch14-336", "language": "lmsys/vicuna-7b-v1.5", "template": "vicuna_v1"}
BACKBONE_MODES = {"toy": TOY, "real": REAL}   # MINILLAVA_BACKBONES (image modes are minillava.image.MODES)
# LLaVA's stage-2 learning rate for a pretrained chat LM; the toy preset's reason is in PipelineConfig.
REAL_STAGE2_LR = 2e-5


@dataclasses.dataclass(frozen=True)
class CourseSettings:
    """What the chapters run on: backbones, template and data, toy or real."""
    mode: str                 # "toy" or "real" (MINILLAVA_BACKBONES)
    vision: str               # zoo name, local folder or Hugging Face id
    language: str
    template: str             # the chat template the language model was tuned with
    data: str = "toy"         # stage-2 data: "toy" or a data source (data.sources: JSON/JSONL, parquet, ...)
    stage1_data: str = "toy"
    image_folder: str | None = None
    stage1_image_folder: str | None = None   # None: image_folder (LLaVA keeps LLaVA-Pretrain/images apart)

    @property
    def toy(self) -> bool:
        """True when everything is the embedded default (the chapters' stored outputs)."""
        return (self.vision, self.language, self.template, self.data, self.stage1_data) == \
            (TOY["vision"], TOY["language"], TOY["template"], "toy", "toy")

    def describe(self) -> str:
        """One line for a chapter's first output: what it runs on, and how to switch."""
        data = "toy scenes" if self.data == "toy" else f"{self.data} (images: {self.image_folder})"
        line = f"{self.mode} mode: vision {self.vision}, language {self.language} ({self.template}), data: {data}"
        if self.mode == "toy":
            line += "\n(real backbones on a GPU: set MINILLAVA_BACKBONES=real before starting, see minillava.course)"
        return line

    def pipeline_config(self, **options):
        """A ``PipelineConfig`` on these backbones and data; ``options`` set the rest (budgets).

        In real mode stage 2 uses LLaVA's learning rate (2e-5) unless options give one, and
        the language model recomputes activations in backward to fit a GPU.
        """
        backbones = dict(vision=self.vision, language=self.language, template=self.template, data=self.data,
                         stage1_data=self.stage1_data, image_folder=self.image_folder,
                         stage1_image_folder=self.stage1_image_folder)
        if not self.toy:
            backbones.update(stage2_lr=REAL_STAGE2_LR, gradient_checkpointing=True, threads=0)
        return PipelineConfig(**{**backbones, **options})

    def pretrained_model(self, projector: str = "mlp2x_gelu"):
        """``zoo.pretrained_model`` on these backbones: (MiniLlava with a fresh projector, tokenizer)."""
        from minillava.backbones import zoo   # transformers: late, see the module docstring

        return zoo.pretrained_model(self.vision, self.language, projector)


def settings(environ: dict | None = None) -> CourseSettings:
    """The course settings from the environment (``os.environ`` unless one is given)."""
    env = os.environ if environ is None else environ
    mode = env.get("MINILLAVA_BACKBONES", "toy").strip().lower() or "toy"
    if mode not in BACKBONE_MODES:
        raise ValueError(f"MINILLAVA_BACKBONES={env['MINILLAVA_BACKBONES']!r} is not a mode; use "
                         f"{' or '.join(BACKBONE_MODES)} (or unset it for the toy default)")
    preset = BACKBONE_MODES[mode]
    data = {key: env.get(f"MINILLAVA_{key.upper()}")
            for key in ("data", "stage1_data", "image_folder", "stage1_image_folder")}
    for key in ("data", "stage1_data"):
        if data[key]:
            try:
                source_kind(data[key])
            except DataError as err:
                raise ValueError(f"MINILLAVA_{key.upper()}: {err} (or unset it to train on toy scenes)") from None
    return CourseSettings(mode=mode, vision=env.get("MINILLAVA_VISION") or preset["vision"],
                          language=env.get("MINILLAVA_LANGUAGE") or preset["language"],
                          template=env.get("MINILLAVA_TEMPLATE") or preset["template"],
                          data=data["data"] or "toy", stage1_data=data["stage1_data"] or "toy",
                          image_folder=data["image_folder"], stage1_image_folder=data["stage1_image_folder"])
