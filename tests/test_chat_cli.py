"""`minillava chat`: what each turn sends, and the real command driven in a pseudo-terminal.

The first tests run the chat loop in-process with a stand-in assistant that records what it
is sent, to pin the conversation down exactly: the whole of it re-sent each turn, the picture
in the first user turn only, /reset and /image starting over, a turn cut by Ctrl-C forgotten.
The others start the command itself in a pseudo-terminal (pexpect), as a person types into
it, against a small saved assistant, and check its streamed answers against the assistant's
own `chat` for the same conversation; Ctrl-C is a real SIGINT from the terminal.
"""

import copy
import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from minillava.chat import load_assistant
from minillava.cli import main
from minillava.serve.terminal import ANSWER, PROMPT, Conversation, chat_loop
from minillava.toyworld import make_scene, render
from tiny_assistant import DESCRIBE, save_tiny_assistant

pexpect = pytest.importorskip("pexpect", reason="pexpect drives the chat in a pseudo-terminal: pip install -e '.[test]'")

RED, BLUE = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")


class Recorder:
    """Stands in for an Assistant: records each turn's messages and images, answers "answer N"
    in two pieces; on the turn ``interrupt_at`` the user presses Ctrl-C after the first piece."""

    context_length, max_new_tokens = None, 8   # no limit on the conversation's length

    def __init__(self, interrupt_at: int | None = None):
        self.calls, self.closed, self.interrupt_at = [], 0, interrupt_at

    def stream(self, messages, images, **sampling):
        self.calls.append((copy.deepcopy(messages), list(images), sampling))
        try:
            yield "answer "
            if len(self.calls) == self.interrupt_at:
                raise KeyboardInterrupt
            yield str(len(self.calls))
        finally:
            self.closed += 1


def typed(*lines):
    """input() for a scripted user: each line in turn (an exception is raised), then Ctrl-D."""
    queue = list(lines)

    def read(prompt):
        assert prompt == PROMPT
        if not queue:
            raise EOFError
        line = queue.pop(0)
        if isinstance(line, BaseException):
            raise line
        return line
    return read


def user(text):
    return {"role": "user", "content": text}


def assistant_turn(text):
    return {"role": "assistant", "content": text}


def test_each_turn_resends_the_conversation_with_the_picture_in_the_first_user_turn(tmp_path):
    BLUE.save(tmp_path / "blue.png")
    fake, out = Recorder(), io.StringIO()
    chat_loop(fake, Conversation(RED), typed("What is it?", "And its colour?", "/reset", "What is it?",
                                             f"/image {tmp_path / 'blue.png'}", "Again?"), out, temperature=0.0)
    sent = [(messages, images) for messages, images, _ in fake.calls]
    assert sent[0] == ([user("<image>\nWhat is it?")], [RED])
    assert sent[1] == ([user("<image>\nWhat is it?"), assistant_turn("answer 1"), user("And its colour?")], [RED])
    assert sent[2] == ([user("<image>\nWhat is it?")], [RED])   # /reset: the same picture, a new conversation
    messages, images = sent[3]
    assert messages == [user("<image>\nAgain?")] and len(images) == 1   # /image: the new picture, from the start
    assert images[0].tobytes() == BLUE.tobytes()
    assert fake.calls[0][2] == {"temperature": 0.0}   # the sampling options reach the assistant
    text = out.getvalue()
    assert f"{ANSWER}answer 1\n" in text and f"{ANSWER}answer 2\n" in text
    assert "(conversation forgotten, same picture)" in text and "(new conversation about" in text
    assert fake.closed == 4


def test_without_a_picture_every_turn_is_text():
    fake = Recorder()
    chat_loop(fake, Conversation(), typed("Hello?", "Who are you?"), io.StringIO())
    assert fake.calls[1][:2] == ([user("Hello?"), assistant_turn("answer 1"), user("Who are you?")], [])


def test_ctrl_c_during_an_answer_forgets_that_turn_and_the_chat_goes_on():
    fake, out = Recorder(interrupt_at=2), io.StringIO()
    chat_loop(fake, Conversation(RED), typed("One?", "Two?", "Three?"), out)
    assert fake.calls[2][0] == [user("<image>\nOne?"), assistant_turn("answer 1"), user("Three?")]
    assert fake.closed == 3   # the cut stream was closed, so it stops generating
    assert "answer  [stopped: this turn is forgotten]\n" in out.getvalue()


def test_ctrl_c_or_ctrl_d_at_the_prompt_ends_the_chat():
    for leave in (KeyboardInterrupt(), EOFError()):
        fake = Recorder()
        chat_loop(fake, Conversation(), typed("One?", leave, "never read"), io.StringIO())
        assert len(fake.calls) == 1


def test_bad_lines_get_one_error_line_and_change_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("not a picture")
    fake, out = Recorder(), io.StringIO()
    chat_loop(fake, Conversation(RED), typed("One?", "/image", f"/image {tmp_path / 'missing.png'}",
                                             f"/image {tmp_path / 'notes.txt'}", f"/image {tmp_path}",
                                             "Where is the <image>?", "/colour blue", "", "Two?"), out)
    errors = [line for line in out.getvalue().splitlines() if line.startswith("error: ")]
    assert len(errors) == 6, errors
    assert "needs a path" in errors[0] and "no image at" in errors[1] and "not an image" in errors[2]
    assert "is a folder" in errors[3] and "<image> marks where the picture goes" in errors[4]
    assert "unknown command /colour: /help lists them" in errors[5]
    # None of it was sent, and the conversation about the red picture went on.
    assert fake.calls[1][:2] == ([user("<image>\nOne?"), assistant_turn("answer 1"), user("Two?")], [RED])


# ---------------------------------------------------------------------------------------------
# The command itself, in a pseudo-terminal.

# The child's Assistant.stream slowed to 0.3 s a piece, so that Ctrl-C surely lands mid-answer.
# Only the pace is changed: the signal, its handling and the closing of the stream are real.
SLOW_CHAT = """
import signal, sys, time
# Ctrl-C raises KeyboardInterrupt, as in a terminal, even when the tests were started as a background job
# (a shell without job control starts those with SIGINT ignored, and the child would inherit that).
signal.signal(signal.SIGINT, signal.default_int_handler)
from minillava.chat import Assistant
from minillava.cli import main
fast = Assistant.stream
def slow(self, *args, **kwargs):
    for piece in fast(self, *args, **kwargs):
        time.sleep(0.3)
        yield piece
Assistant.stream = slow
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat")
    for seed in (3, 5):
        render(make_scene(seed)).save(folder / f"scene{seed}.png")
    return save_tiny_assistant(folder / "assistant"), folder


def spawn(*args, code=None):
    """`minillava chat ...` in a pseudo-terminal (TERM=dumb: no escape codes around the prompt)."""
    argv = ["-c", code, "chat", *args] if code else ["-m", "minillava.cli", "chat", *args]
    return pexpect.spawn(sys.executable, argv, env=dict(os.environ, TERM="dumb"),
                         encoding="utf-8", timeout=60, dimensions=(24, 500))


def say(child, line: str) -> str:
    """Type a question; the streamed answer, once the next prompt shows."""
    child.sendline(line)
    child.expect_exact(ANSWER)
    child.expect_exact(PROMPT)
    return child.before.replace("\r\n", "\n").strip()


def test_a_terminal_conversation_streams_the_assistants_own_answers(saved):
    folder, pictures = saved
    reference = load_assistant(folder)
    scene3, scene5 = (Image.open(pictures / f"scene{s}.png").convert("RGB") for s in (3, 5))
    child = spawn(str(folder), "--image", str(pictures / "scene3.png"))
    child.expect_exact(PROMPT)
    assert "a conversation about" in child.before

    first = say(child, DESCRIBE)
    assert first == reference.ask(scene3, DESCRIBE)
    second = say(child, "What colour is it?")   # multi-turn: the first turn is sent again
    history = [user(f"<image>\n{DESCRIBE}"), assistant_turn(first), user("What colour is it?")]
    assert second == reference.chat([history], [scene3])[0]

    child.sendline(f"/image {pictures / 'scene5.png'}")
    child.expect_exact("(new conversation about")
    child.expect_exact(PROMPT)
    other = say(child, DESCRIBE)
    assert other == reference.ask(scene5, DESCRIBE) != first   # the new picture, with no history

    child.sendline("/reset")
    child.expect_exact("(conversation forgotten, same picture)")
    child.expect_exact(PROMPT)
    assert say(child, "What colour is it?") == reference.ask(scene5, "What colour is it?")

    child.sendline(f"/image {pictures / 'nowhere.png'}")   # a typo: one line, and the chat goes on
    child.expect_exact("error: no image at")
    child.expect_exact(PROMPT)
    child.sendeof()   # Ctrl-D
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in child.before


def test_a_conversation_too_long_for_the_context_is_refused_in_one_line(saved):
    folder, pictures = saved
    reference, out = load_assistant(folder), io.StringIO()
    room = reference.context_length
    scene3 = Image.open(pictures / "scene3.png").convert("RGB")
    chat_loop(reference, Conversation(scene3), typed("red " * room), out)
    assert out.getvalue() == (f"error: the conversation and a {reference.max_new_tokens}-token answer would not fit "
                              f"in the assistant's {room} positions: /reset to start over (or ask a shorter question)"
                              "\n\n")


def test_ctrl_c_stops_an_answer_then_leaves_at_the_prompt(saved):
    folder, pictures = saved
    reference = load_assistant(folder)
    scene3 = Image.open(pictures / "scene3.png").convert("RGB")
    child = spawn(str(folder), "--image", str(pictures / "scene3.png"), code=SLOW_CHAT)
    child.expect_exact(PROMPT)
    child.sendline(DESCRIBE)
    child.expect_exact(ANSWER)
    child.expect(r"\S")   # the first piece is on screen: the answer is under way
    child.sendintr()      # Ctrl-C
    child.expect_exact("[stopped: this turn is forgotten]")
    child.expect_exact(PROMPT)
    # The stopped turn was forgotten: the next question is the conversation's first.
    assert say(child, "What colour is it?") == reference.ask(scene3, "What colour is it?")
    child.sendintr()      # Ctrl-C at the prompt: leave, quietly
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in child.before


@pytest.mark.parametrize("case, message", [
    ("no folder", "no folder"),
    ("not an assistant", "was not written by save_assistant"),
    ("missing image", "no image at"),
    ("not an image", "is not an image"),
    ("bad device", "--device nonsense"),
])
def test_bad_input_is_one_line_and_exit_status_2(saved, tmp_path, capsys, case, message):
    folder, _ = saved
    (tmp_path / "notes.txt").write_text("not a picture")
    args = {"no folder": [str(tmp_path / "nowhere")],
            "not an assistant": [str(tmp_path)],
            "missing image": [str(folder), "--image", str(tmp_path / "missing.png")],
            "not an image": [str(folder), "--image", str(tmp_path / "notes.txt")],
            "bad device": [str(folder), "--device", "nonsense"]}[case]
    with pytest.raises(SystemExit) as exit:
        main(["chat", *args])
    out, err = capsys.readouterr()
    assert exit.value.code == 2 and out == ""
    assert err.startswith("minillava chat: ") and message in err and len(err.strip().splitlines()) == 1


def test_the_command_itself_fails_in_one_line_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "minillava.cli", "chat", str(tmp_path)], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"minillava chat: {tmp_path / 'chat.json'} is missing")
    assert done.stderr.count("\n") == 1 and "was not written by save_assistant" in done.stderr   # no traceback
