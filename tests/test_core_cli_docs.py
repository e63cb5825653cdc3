"""The CLI documents itself: every command and option has help, and the man page is current."""

from __future__ import annotations

from pathlib import Path

import typer

from tierctl.cli import manpage
from tierctl.cli.main import app

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="tierctl")
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        yield name, command, typer.Context(command, info_name=name, parent=ctx)
        if hasattr(command, "list_commands"):
            sub_ctx = typer.Context(command, info_name=name, parent=ctx)
            for sub_name in command.list_commands(sub_ctx):
                sub = command.get_command(sub_ctx, sub_name)
                yield f"{name} {sub_name}", sub, typer.Context(sub, info_name=sub_name, parent=sub_ctx)


def test_every_command_and_option_has_help() -> None:
    missing = []
    for name, command, ctx in _commands():
        if not (command.help or "").strip():
            missing.append(name)
        for param in command.get_params(ctx):
            if param.param_type_name == "option" and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{name} {param.opts[0]}")
    assert not missing, f"no help text: {missing}"


def test_man_page_is_up_to_date() -> None:
    committed = (ROOT / "man" / "tierctl.1").read_text()
    assert committed == manpage.render(), (
        "man/tierctl.1 is stale: run `python -m tierctl.cli.manpage > man/tierctl.1`"
    )


def test_help_runs_for_every_command(cli) -> None:
    for name, _command, _ctx in _commands():
        result = cli(*name.split(), "--help")
        assert result.code == 0, (name, result.err)
        assert "Usage:" in result.out


def test_usage_errors_exit_1_without_traceback(cli) -> None:
    result = cli("plan", "--no-such-option")
    assert result.code == 1
    assert "No such option" in result.err and "Traceback" not in result.err
    result = cli("apply", "--jobs", "0")
    assert result.code == 1 and "Traceback" not in result.err
