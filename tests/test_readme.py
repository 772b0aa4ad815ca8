"""The README's example runs as written (in a temporary directory)."""

import re
from pathlib import Path

from transformers import AutoModelForSequenceClassification

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "eval_teacher_loss" in printed
    # It logs what its comment says, at every logging step: 256 examples, batch 8, 2 epochs = 64 steps.
    training_logs = [line for line in printed.splitlines() if "'teacher_loss'" in line]
    assert len(training_logs) == 64 // namespace["args"].logging_steps == 4
    for key in ("'loss'", "'kl_student_teacher'", "'learning_rate'", "'teacher_learning_rate'"):
        assert all(key in line for line in training_logs), key
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "distilled")
    assert student.config.num_hidden_layers == 2
    assert not (tmp_path / "distilled" / "teacher").exists()


def test_readme_opens_with_the_install_and_test_commands():
    lines = README.read_text().splitlines()
    commands = lines[lines.index("```bash") + 1:lines.index("```bash") + 3]
    assert commands[0].startswith('pip install torch==2.13.0 -e ".[dev]" && hf-prokt demo')
    assert commands[1].startswith("pytest")
    assert 'python3 -m pip install --quiet torch==2.13.0 -e ".[dev]"' in (README.parent / ".ci" / "run").read_text()
