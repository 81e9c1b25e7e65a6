"""`minillava chat ASSISTANT [--image PATH]`: talk to a saved assistant in the terminal.

A chat model has no memory between calls: what makes a conversation is that the whole of it
is sent again each turn. So ``Conversation`` keeps the messages, and each question is sent
with every turn before it -- the picture's ``<image>`` marker in the first user turn, where
the assistant was trained to find it (``Assistant.ask`` puts it there too), and plain text in
the turns after. ``/image PATH`` starts a new conversation about another picture; ``/reset``
starts over about the same one.

The answer is printed as it is generated (``Assistant.stream``). Ctrl-C while it answers
stops the answer and forgets that turn, as if the question had not been asked; Ctrl-C or
Ctrl-D at the prompt ends the chat.
"""

import argparse
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from minillava.conversation import IMAGE_MARKER
from minillava.device import pick_device

PROMPT, ANSWER = "you> ", "assistant> "
HELP = """commands:
  /image PATH   talk about another picture (a new conversation)
  /reset        forget the conversation, keep the picture
  /help         this list
Ctrl-C stops an answer; Ctrl-D, or Ctrl-C at the prompt, leaves."""


class ChatError(Exception):
    """Input the chat refuses, with the one line that says why and what to do."""


def open_image(path: str | Path) -> Image.Image:
    """The picture at ``path`` as RGB, or a ChatError naming the problem."""
    path = Path(path).expanduser()
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ChatError(f"no image at {path}: check the path") from None
    except IsADirectoryError:
        raise ChatError(f"{path} is a folder: give an image file (PNG, JPEG, ...)") from None
    except UnidentifiedImageError:
        raise ChatError(f"{path} is not an image PIL can read: give a PNG, JPEG, ...") from None
    except OSError as err:   # unreadable, truncated
        raise ChatError(f"cannot read the image {path}: {err}") from None


class Conversation:
    """One conversation about one picture (or none): the messages and images to send each turn."""

    def __init__(self, image: Image.Image | None = None):
        self.image = image
        self.messages: list[dict] = []

    def reset(self) -> None:
        self.messages = []

    @property
    def images(self) -> list:
        return [] if self.image is None else [self.image]

    def with_question(self, question: str) -> list[dict]:
        """Every turn so far plus this question, as the assistant reads them; the conversation
        itself changes only once the answer is complete (``add``)."""
        if IMAGE_MARKER in question:   # one marker per image, and the picture's is placed already
            raise ChatError(f"{IMAGE_MARKER} marks where the picture goes and is added for you: "
                            "ask without it (/image PATH changes the picture)")
        first = not self.messages and self.image is not None
        content = f"{IMAGE_MARKER}\n{question}" if first else question
        return self.messages + [{"role": "user", "content": content}]

    def add(self, sent: list[dict], answer: str) -> None:
        self.messages = sent + [{"role": "assistant", "content": answer}]


def answer(assistant, conversation: Conversation, question: str, out, **sampling) -> str:
    """Stream the answer to ``question`` into ``out``, then keep the turn. Ctrl-C on the way
    (a KeyboardInterrupt, left to the caller) leaves the conversation as it was."""
    sent = conversation.with_question(question)
    room, longest = assistant.context_length, sampling.get("max_new_tokens") or assistant.max_new_tokens
    if room is not None and assistant.prompt_length(sent, conversation.images) + longest > room:
        raise ChatError(f"the conversation and a {longest}-token answer would not fit in the assistant's "
                        f"{room} positions: /reset to start over (or ask a shorter question)")
    out.write(ANSWER)
    out.flush()
    pieces = []
    stream = assistant.stream(sent, conversation.images, **sampling)
    try:
        for piece in stream:
            pieces.append(piece)
            out.write(piece)
            out.flush()
    finally:
        stream.close()   # cut short: the generator stops generating here
    out.write("\n")
    text = "".join(pieces).strip()
    conversation.add(sent, text)
    return text


def command(line: str, conversation: Conversation, out) -> Conversation:
    """Carry out a /command; returns the conversation to go on with."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name == "/image":
        if not arg:
            raise ChatError("/image needs a path: /image scene.png")
        conversation = Conversation(open_image(arg))
        out.write(f"(new conversation about {arg})\n")
    elif name == "/reset":
        conversation.reset()
        out.write("(conversation forgotten" + (", same picture)\n" if conversation.image else ")\n"))
    elif name == "/help":
        out.write(HELP + "\n")
    else:
        raise ChatError(f"unknown command {name}: /help lists them")
    return conversation


def chat_loop(assistant, conversation: Conversation, read=input, out=sys.stdout, **sampling) -> None:
    """Read a line, answer it, until Ctrl-D or Ctrl-C at the prompt."""
    while True:
        try:
            line = read(PROMPT).strip()
        except (EOFError, KeyboardInterrupt):   # Ctrl-D / Ctrl-C at the prompt: leave quietly
            out.write("\n")
            return
        try:
            if line.startswith("/"):
                conversation = command(line, conversation, out)
            elif line:
                answer(assistant, conversation, line, out, **sampling)
        except ChatError as err:
            out.write(f"error: {err}\n")
        except KeyboardInterrupt:   # Ctrl-C while it answers: back to the prompt, the turn forgotten
            out.write(" [stopped: this turn is forgotten]\n")


def chat_command(args: argparse.Namespace) -> None:
    try:   # the input first, then the model: a typo fails at once, not after seconds of loading
        if not Path(args.assistant).is_dir():
            raise ChatError(f"no folder {args.assistant}: give the folder save_assistant wrote "
                            "(runs/pipeline/assistant after `minillava pipeline`)")
        image = open_image(args.image) if args.image else None
        try:
            device = pick_device(args.device)
        except RuntimeError as err:
            raise ChatError(f"--device {args.device}: {err}") from None
        from minillava.chat import load_assistant   # transformers (seconds): only once the input is good

        assistant = load_assistant(args.assistant, device)
    except (ChatError, FileNotFoundError) as err:   # a missing picture, a folder that is no assistant
        print(f"minillava chat: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input(), where the terminal has them)
    about = f"about {args.image}" if image else "without a picture (/image PATH gives it one)"
    print(f"{Path(args.assistant).name}: a conversation {about}. /help for commands, Ctrl-D to leave.")
    chat_loop(assistant, Conversation(image), temperature=args.temperature, top_p=args.top_p,
              max_new_tokens=args.max_new_tokens)


def add_parser(sub) -> None:
    """Register `minillava chat` on the main parser's subcommands."""
    p = sub.add_parser("chat", help="talk to a saved assistant in the terminal, answers streamed as generated")
    p.add_argument("assistant", help="a folder saved by minillava.chat.save_assistant "
                   "(e.g. runs/pipeline/assistant, written by `minillava pipeline`)")
    p.add_argument("--image", help="the picture to talk about (PNG, JPEG, ...); /image PATH changes it")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy, the same answer each time")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling when --temperature > 0 (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="longest answer in tokens (default: the assistant's own setting)")
    p.set_defaults(func=chat_command)
