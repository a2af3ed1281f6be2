"""Project hygiene: CI runs the README's test command, and the console script answers --help."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The shell lines of the README's set-up block (between its ```sh fences under 'Set-up')."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up.*?```sh\n(.*?)```", text, re.S)
    assert block, "README.md has no '## Set-up' section with a ```sh block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_ci_runs_exactly_the_readmes_test_command():
    install_and_run, test_command = readme_commands()
    assert "alexnet-tf" in install_and_run and "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_help_lists_every_command():
    result = subprocess.run(["alexnet-tf", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("summary", "prepare", "train", "evaluate", "export", "serve", "predict", "figures", "embed"):
        assert command in result.stdout
