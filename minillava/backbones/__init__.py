"""The backbones: the zoo that loads any vision tower and language model, and how the shipped toy pair is made.

LLaVA trains neither of its backbones. It starts from CLIP (a vision encoder trained
contrastively on 400M image-caption pairs) and Vicuna (LLaMA fine-tuned on chats), and
only teaches the bridge between them. A model trained end to end from random weights
on a CPU learns nothing useful in minutes, so the course ships toy counterparts, made
from the toy world:

1. a tokenizer: byte-level BPE trained on the toy text, with <image> and the chat
   markers as single special tokens;
2. ``toy-clip``: a vision tower and a text tower trained together with CLIP's
   contrastive loss on rendered scenes and their captions; later stages use only its
   vision tower (``toy-vision``);
3. ``toy-lm``: a LLaMA trained on toy text -- captions, chats, world knowledge, and
   questions answered over *written* scenes in the vicuna_v1 template. That is the
   toy version of Vicuna's skills: stage 1 then only has to make images readable as
   such words, and stage 2 learns fast.

``minillava zoo build`` remakes all three from fixed seeds (build.py says how long it takes
and when it gives the same weights bit for bit).

The modules, in reading order:

    zoo        load a backbone: a shipped toy one, a local folder or a Hugging Face id
    recipe     every number that decides what gets built (FULL ships, QUICK is for tests)
    toy_text   the toy text the language model reads, and the tokenizer learnt from it  (1)
    toy_clip   toy-clip: two towers, CLIP's contrastive loss, its training              (2)
    toy_vit    the candidate toy-vision: transformers' CLIP ViT, trained as toy-clip    (2')
    toy_lm     toy-lm: a LLaMA that reads written scenes, its training                  (3)
    build      trains all three and installs them in weights/ with a manifest of hashes
    gates      how good they are: the quality gates of tests/test_zoo.py
"""
