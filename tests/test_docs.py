"""The README stays true: every train option is documented, and every command it shows exists."""

import re

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _options(command: str) -> set[str]:
    import typer.main

    from bertclf.cli import app

    group = typer.main.get_command(app)
    return {opt for param in group.commands[command].params for opt in param.opts if opt.startswith("--")}


def test_every_train_option_is_in_the_readme():
    missing = [opt for opt in _options("train") - {"--help"} if opt not in README]
    assert not missing, f"README does not document: {missing}"


def test_every_option_the_readme_uses_exists():
    known = {cmd: _options(cmd) for cmd in ("train", "pretrain", "eval", "predict", "compare")}
    for command, args in re.findall(r"^\s*(?:cat \S+ \| )?bertclf (train|pretrain|eval|predict|compare) (.*)$", README,
                                    re.M):
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", args):
            assert flag in known[command], f"bertclf {command} has no {flag}"


def test_quick_start_names_make_demo_and_make_test_first():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert quick_start.index("make demo") < quick_start.index("make test")
