"""The repository's location is one setting, and every Colab link and install cell follows it (tools/links.py)."""

import json
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
from nbformat import v4
from packaging.requirements import Requirement

import links  # tools/links.py: conftest.py puts tools/ on sys.path

ROOT = Path(__file__).resolve().parent.parent


def test_every_link_and_install_cell_follows_the_setting():
    assert links.problems() == [], "run: python tools/links.py --write"


def test_the_install_cell_leaves_colabs_torch_alone_and_brings_no_test_tools():
    pip = next(line for line in links.install_cell("owner/name").splitlines() if "%pip install" in line)
    assert '"minillava @ git+https://github.com/owner/name"' in pip   # the package, no [extra]
    assert not re.search(r"\s(-U|--upgrade|--force-reinstall)\b", pip)   # -U would replace Colab's torch
    dependencies = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    torch = next(r for r in dependencies if r.name == "torch")
    assert {s.operator for s in torch.specifier} == {">="}, "an upper bound or pin on torch would reinstall Colab's"


def course_copy(root: Path, repository: str) -> Path:
    """A tiny course: the setting, a README with one Colab link, one notebook with an old install cell."""
    (root / "pyproject.toml").write_text(f'[project]\nname = "x"\n[project.urls]\nRepository = "{repository}"\n')
    (root / "README.md").write_text(
        "[open](https://colab.research.google.com/github/minillava/minillava/blob/main/notebooks/00_tour.ipynb)\n")
    old = links.install_cell("minillava/minillava").replace("minillava @", "minillava[test] @")
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("# Tour"), v4.new_code_cell(old, execution_count=1),
                                v4.new_code_cell("print(1)", execution_count=2,
                                                 outputs=[v4.new_output("stream", name="stdout", text="1\n")])])
    (root / "notebooks").mkdir()
    nbformat.write(nb, root / "notebooks" / "00_tour.ipynb")
    return root / "notebooks" / "00_tour.ipynb"


def test_write_makes_the_links_and_cells_that_check_asks_for(tmp_path):
    notebook = course_copy(tmp_path, "https://github.com/someone/course.git")
    found = links.problems(tmp_path)
    assert "README.md: a Colab link names minillava/minillava, not someone/course" in found
    assert "notebooks/00_tour.ipynb: the first code cell is not the install cell for someone/course" in found
    before = json.loads(notebook.read_text())
    links.write(tmp_path)
    assert links.problems(tmp_path) == []
    assert "github/someone/course/blob/main/notebooks/00_tour.ipynb" in (tmp_path / "README.md").read_text()
    after = json.loads(notebook.read_text())
    assert "".join(after["cells"][1]["source"]) == links.install_cell("someone/course")
    assert [c.get("outputs") for c in after["cells"]] == [c.get("outputs") for c in before["cells"]]


@pytest.mark.parametrize("setting", ["", "https://gitlab.com/someone/course", "github.com/someone/course"])
def test_a_setting_that_is_not_a_github_address_is_a_clear_error(tmp_path, setting):
    (tmp_path / "pyproject.toml").write_text(f'[project.urls]\nRepository = "{setting}"\n')
    with pytest.raises(ValueError, match=r"Repository is .*https://github\.com/OWNER/NAME"):
        links.repository(tmp_path / "pyproject.toml")


def test_a_download_from_the_repository_is_reported(tmp_path):
    notebook = course_copy(tmp_path, "https://github.com/someone/course")
    links.write(tmp_path)
    url = 'url = "https://raw.githubusercontent.com/someone/course/main/results/gains.json"'
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(v4.new_code_cell(url))
    nbformat.write(nb, notebook)
    assert links.problems(tmp_path) == [
        "notebooks/00_tour.ipynb: downloads from the repository; load shipped results with course.results(name)"]
