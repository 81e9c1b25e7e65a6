"""Edit the source of notebook cells with a regular expression, leaving outputs and format alone.

    python tools/nb_edit.py 'from minillava import grading' 'from minillava.course import grading' notebooks/*.ipynb

Each file is read and written under one lock (``/tmp/minillava-nb.lock``), so that several
people editing notebooks at once do not overwrite each other's changes. Only cell sources
change; a notebook whose cells do not match is not rewritten. Prints what changed.
"""

import argparse
import fcntl
import json
import re
from pathlib import Path

LOCK = Path("/tmp/minillava-nb.lock")


def dump(notebook: dict) -> str:
    """The notebook as Jupyter writes it (one-space indent, UTF-8 kept, final newline)."""
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def edit(path: Path, pattern: str, replacement: str, kinds=("code",)) -> int:
    """Substitute in every cell of ``kinds``; return how many substitutions were made."""
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        notebook = json.loads(path.read_text())
        total = 0
        for cell in notebook["cells"]:
            if cell["cell_type"] not in kinds:
                continue
            source = "".join(cell["source"])
            new, n = re.subn(pattern, replacement, source, flags=re.M)
            if n:
                cell["source"] = new.splitlines(keepends=True)
                total += n
        if total:
            path.write_text(dump(notebook))
        return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern")
    parser.add_argument("replacement")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--markdown", action="store_true", help="edit markdown cells too")
    args = parser.parse_args()
    kinds = ("code", "markdown") if args.markdown else ("code",)
    for path in args.notebooks:
        n = edit(path, args.pattern, args.replacement, kinds)
        if n:
            print(f"{path}: {n} change(s)")


if __name__ == "__main__":
    main()
