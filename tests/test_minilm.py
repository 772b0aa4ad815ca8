"""`hf-prokt minilm-path` / `hf_prokt.minilm.minilm_path`: where the `minilm` extra's model lives, or how to
install it; and the docs' commands that need MiniLM use it."""

import re
from pathlib import Path

import pytest

from hf_prokt.cli import main
from hf_prokt.minilm import MINILM_PACKAGE, minilm_path

ROOT = Path(__file__).resolve().parent.parent


def test_minilm_path_names_the_installed_package_folder(tmp_path, monkeypatch, capsys):
    package = tmp_path / "site" / MINILM_PACKAGE
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert minilm_path() == str(package / "model")
    assert main(["minilm-path"]) == 0
    assert capsys.readouterr().out == f"{package / 'model'}\n"


def test_minilm_path_without_the_extra_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "hf-prokt\[minilm\]"'):
        minilm_path()
    assert main(["minilm-path"]) == 1
    assert 'pip install "hf-prokt[minilm]"' in capsys.readouterr().err


def test_every_documented_command_that_loads_minilm_gets_its_path_from_the_command():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "examples").glob("*/README.md"))]
    uses = 0
    for page in pages:
        for block in re.findall(r"```(?:bash|shell)\n(.*?)```", page.read_text(), flags=re.S):
            for value in re.findall(r'(?:model_name_or_path|tokenizer_name)[ =]("[^"]*"|\S+)', block):
                if "minilm" in value.lower():
                    assert value == '"$(hf-prokt minilm-path)"', (page, value)
                    uses += 1
    assert uses >= 1
