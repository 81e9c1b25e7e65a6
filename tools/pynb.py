"""Turn a percent-format text file into a notebook, for drafting chapters quickly.

    # %% [markdown]
    # # Chapter title
    # Prose, one "# " comment prefix per line.

    # %%
    x = 1

``# %%`` starts a code cell and ``# %% [markdown]`` a markdown cell (``# `` or a bare ``#``
is stripped from each of its lines); blank lines around a cell are dropped. Text before
the first marker becomes a code cell. Once written, the .ipynb is the source of truth: this
tool will not overwrite one unless told to.

    python tools/pynb.py draft.py -o notebooks/03_projector.ipynb [--force]
"""

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat import v4

CODE, MARKDOWN = "# %%", "# %% [markdown]"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _markdown_line(line: str, number: int) -> str:
    if line.strip() == "":
        return ""
    if line == "#" or line.startswith("# "):
        return line[2:]
    raise ValueError(f"line {number}: markdown lines must start with '# ' (forgot a '# %%'?): {line!r}")


def parse(text: str) -> nbformat.NotebookNode:
    """The notebook described by percent-format ``text``."""
    cells: list[tuple[str, list[str]]] = [("code", [])]
    for number, line in enumerate(text.splitlines(), 1):
        marker = line.rstrip()
        if marker == MARKDOWN:
            cells.append(("markdown", []))
        elif marker == CODE:
            cells.append(("code", []))
        elif marker.startswith(CODE):
            raise ValueError(f"line {number}: only '{CODE}' and '{MARKDOWN}' are understood: {line!r}")
        elif cells[-1][0] == "markdown":
            cells[-1][1].append(_markdown_line(line, number))
        else:
            cells[-1][1].append(line)
    nb = v4.new_notebook(metadata={"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    for kind, lines in cells:
        source = "\n".join(lines).strip("\n")
        if not source.strip():
            continue
        new_cell = v4.new_markdown_cell if kind == "markdown" else v4.new_code_cell
        # Numbered ids instead of nbformat's random ones: converting twice gives the same file.
        nb.cells.append(new_cell(source, id=f"cell-{len(nb.cells)}"))
    nbformat.validate(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="percent-format .py file")
    parser.add_argument("-o", "--output", type=Path, help="notebook to write (default: SOURCE with .ipynb)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing notebook")
    args = parser.parse_args(argv)
    output = args.output or args.source.with_suffix(".ipynb")
    if output.exists() and not args.force:
        parser.error(f"{output} exists and is the source of truth now; pass --force to replace it")
    nbformat.write(parse(args.source.read_text(encoding="utf-8")), output)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
