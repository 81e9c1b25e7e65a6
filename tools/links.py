"""The repository's public location is one setting; every link to it is made from it.

The setting is ``[project.urls] Repository`` in pyproject.toml: ``https://github.com/OWNER/NAME``.
From it come

- the Colab links (README's course map, and any in a notebook):
  ``https://colab.research.google.com/github/OWNER/NAME/blob/main/notebooks/03_architecture.ipynb``;
- every notebook's first code cell (notebooks/, solutions/, exercises/), which installs the
  package from that repository when the notebook runs in Colab (:func:`install_cell`).

Nothing is downloaded from the repository at run time: results a chapter loads ship inside the
package (``course.results``), so a raw.githubusercontent.com link to it is reported too.

    python tools/links.py --check   # exit 1, listing each place that disagrees with the setting
    python tools/links.py --write   # rewrite the links and the install cells from the setting

The install cell's output is empty outside Colab, so rewriting it changes no stored output.
Exercises get the same cell as their solutions, so ``make_exercises.py --check`` stays clean.
"""

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

import nb_edit  # sibling script: notebooks are edited only through it (a lock, outputs untouched)

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "main"   # the branch Colab opens the notebooks from
FOLDERS = ("notebooks", "solutions", "exercises")
INSTALL_FIRST_LINE = "# Colab: install the course package"
# A notebook opened in Colab straight from GitHub names its repository as OWNER/NAME here.
COLAB = re.compile(r"(https://colab\.research\.google\.com/github/)([\w.-]+/[\w.-]+)(/blob/)")
# The whole install cell, whatever repository it names now (it is one cell's entire source).
INSTALL = re.compile(r"(?s)\A" + re.escape(INSTALL_FIRST_LINE) + r".*\Z")


def repository(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """OWNER/NAME of the course's GitHub repository, read from the setting."""
    urls = tomllib.loads(pyproject.read_text()).get("project", {}).get("urls", {})
    url = urls.get("Repository", "")
    found = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?", url)
    if not found:   # Colab opens notebooks from GitHub, so the setting must be a GitHub address
        raise ValueError(f"{pyproject}: [project.urls] Repository is {url!r}; "
                         "set it to the course's public address, https://github.com/OWNER/NAME")
    return found.group(1)


def install_cell(repo: str) -> str:
    """The first code cell of every notebook: in Colab, install the package and only what Colab lacks."""
    return "\n".join([
        f'{INSTALL_FIRST_LINE} (elsewhere: `pip install -e ".[test]"` in the repository).',
        "# Only what Colab lacks comes in (a recent transformers, ...), not the test tools. Colab's torch",
        "# stays: the package asks only torch>=2.2 and none of its dependencies pins torch, so pip",
        "# leaves it alone instead of downloading gigabytes of another build.",
        "import sys",
        "",
        'IN_COLAB = "google.colab" in sys.modules',
        "if IN_COLAB:",
        f'    %pip install -q "minillava @ git+https://github.com/{repo}"',
    ])


def colab_link(repo: str, notebook: str) -> str:
    """The address that opens ``notebook`` (a path in the repository) in Colab."""
    return f"https://colab.research.google.com/github/{repo}/blob/{BRANCH}/{notebook}"


def notebooks(root: Path = ROOT) -> list[Path]:
    return [path for folder in FOLDERS for path in sorted((root / folder).glob("*.ipynb"))]


def problems(root: Path = ROOT) -> list[str]:
    """One line per place that disagrees with the setting."""
    repo = repository(root / "pyproject.toml")
    report = [f"README.md: a Colab link names {other}, not {repo}"
              for other in sorted({m.group(2) for m in COLAB.finditer((root / "README.md").read_text())} - {repo})]
    for path in notebooks(root):
        name = path.relative_to(root)
        cells = json.loads(path.read_text())["cells"]
        code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
        if not code or code[0] != install_cell(repo):
            report.append(f"{name}: the first code cell is not the install cell for {repo}")
        for source in ("".join(cell["source"]) for cell in cells):
            report += [f"{name}: a Colab link names {m.group(2)}, not {repo}"
                       for m in COLAB.finditer(source) if m.group(2) != repo]
            if f"raw.githubusercontent.com/{repo}" in source:
                report.append(f"{name}: downloads from the repository; load shipped results with course.results(name)")
    return report


def write(root: Path = ROOT) -> None:
    """Make the README's Colab links and every notebook's install cell from the setting."""
    repo = repository(root / "pyproject.toml")
    readme = root / "README.md"
    text = readme.read_text()
    new = COLAB.sub(lambda m: m.group(1) + repo + m.group(3), text)
    if new != text:
        readme.write_text(new)
        print(f"wrote {readme}")
    cell = install_cell(repo).replace("\\", r"\\")   # a replacement string: backslashes escaped
    for path in notebooks(root):
        cells = json.loads(path.read_text())["cells"]
        first = next(("".join(c["source"]) for c in cells if c["cell_type"] == "code"), "")
        if not first.startswith(INSTALL_FIRST_LINE):
            raise ValueError(f"{path}: its first code cell must be the install cell, starting {INSTALL_FIRST_LINE!r}")
        changes = nb_edit.edit(path, INSTALL.pattern, cell) if first != install_cell(repo) else 0
        if any(m.group(2) != repo for c in cells for m in COLAB.finditer("".join(c["source"]))):
            changes += nb_edit.edit(path, COLAB.pattern, rf"\g<1>{repo}\g<3>", kinds=("code", "markdown"))
        if changes:
            print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="list what disagrees with the setting; exit 1 if any")
    action.add_argument("--write", action="store_true", help="rewrite the links and install cells from the setting")
    args = parser.parse_args(argv)
    if args.write:
        write()
    report = problems()
    for line in report:
        print(line)
    if report:
        print("run: python tools/links.py --write" if args.check else "left for you to fix: see above")
        return 1
    print(f"every link and install cell names {repository()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
