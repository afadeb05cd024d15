"""The README is true as written: its Python runs, every command and flag it shows exists, and the
demo prints the block the README shows (times and the run folder's name aside)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from medcls.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    """The fenced blocks of the README in `language` ('' for plain ones), fences paired in order."""
    found, open_as, lines = [], None, []
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if open_as is None:
                open_as, lines = line[3:].strip(), []
            else:
                if open_as == language:
                    found.append("\n".join(lines) + "\n")
                open_as = None
        elif open_as is not None:
            lines.append(line)
    return found


def commands() -> list[list[str]]:
    """Each `medcls ...` command of the bash blocks, continuation lines joined, comments dropped."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0].endswith("medcls"):
                found.append(words[1:])
    return found


def test_the_readme_shows_its_commands():
    assert {c[0] for c in commands()} >= {"train"}


@pytest.mark.parametrize("words", commands(), ids=lambda w: " ".join(w)[:60])
def test_every_readme_command_and_flag_exists(words):
    group_ctx = cli.make_context("medcls", [], resilient_parsing=True)
    command = cli.get_command(group_ctx, words[0])
    assert command is not None, f"medcls {words[0]}: no such command"
    flags = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
    for word in words[1:]:
        if word.startswith("-"):
            assert word.split("=")[0] in flags, f"medcls {words[0]} has no {word}"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_the_readme_python_runs_as_written(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks("python")[index], f"README.md python block {index + 1}", "exec"), {"__name__": "readme"})


@pytest.mark.slow
def test_the_demo_prints_the_readme_block(tmp_path, monkeypatch):
    """The first block's second command, run as written (in a scratch folder): its table, reading and
    operating point are the README's, line for line."""
    monkeypatch.chdir(tmp_path)
    demo = next(c for c in commands() if c[0] == "train")
    result = CliRunner().invoke(cli, demo)
    assert result.exit_code == 0, result.output
    shown = next(b for b in blocks("") if "| metric | train | val | test |" in b)

    def lasting(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip() and not line.startswith(("time: ", "Run folder: "))]

    printed = lasting(result.stdout)
    assert printed == lasting(shown)
    assert any(line.startswith("time: about ") for line in result.stderr.splitlines())
