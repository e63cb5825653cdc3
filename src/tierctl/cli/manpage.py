"""Generate man/tierctl.1 from the CLI itself, so the page cannot drift from --help.

python -m tierctl.cli.manpage > man/tierctl.1
"""

from __future__ import annotations

from typing import Any

import typer

from tierctl import __version__


def _escape(text: str) -> str:
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _params(command: Any, ctx: Any) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        if param.name == "help":
            continue
        record = param.get_help_record(ctx)
        if record is None:
            if param.param_type_name == "argument":
                out += [".TP", f"\\fB{_escape(param.human_readable_name)}\\fR", "(argument)"]
            continue
        names, help_text = record
        out += [".TP", f"\\fB{_escape(names)}\\fR", _escape(help_text)]
    return out


def render() -> str:
    from tierctl.cli.main import app

    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="tierctl")
    lines = [
        f'.TH TIERCTL 1 "" "tierctl {__version__}" "User Commands"',
        ".SH NAME",
        "tierctl \\- data sync and tiering with a policy engine",
        ".SH SYNOPSIS",
        "\\fBtierctl\\fR [\\fB-c\\fR \\fIPATH\\fR] [\\fB--index\\fR \\fIPATH\\fR]"
        " \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        _escape(root.help or ""),
        ".SH GLOBAL OPTIONS",
        *_params(root, ctx),
        ".SH COMMANDS",
    ]
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub_ctx = typer.Context(command, info_name=name, parent=ctx)
        usage = " ".join(command.collect_usage_pieces(sub_ctx))
        lines += [
            ".SS",
            f"\\fBtierctl {name}\\fR {_escape(usage)}",
            _escape(command.help or ""),
            *_params(command, sub_ctx),
        ]
        if hasattr(command, "list_commands"):
            for sub_name in command.list_commands(sub_ctx):
                sub = command.get_command(sub_ctx, sub_name)
                if sub is None:
                    continue
                leaf_ctx = typer.Context(sub, info_name=sub_name, parent=sub_ctx)
                leaf_usage = " ".join(sub.collect_usage_pieces(leaf_ctx))
                lines += [
                    ".SS",
                    f"\\fBtierctl {name} {sub_name}\\fR {_escape(leaf_usage)}",
                    _escape(sub.help or ""),
                    *_params(sub, leaf_ctx),
                ]
    lines += [
        ".SH EXIT STATUS",
        "0 success; 1 error (a user mistake or a failed precondition, with a message and a hint); "
        "2 changes pending (plan --detailed-exitcode); 3 some actions failed or were skipped; "
        "4 the index is locked by another process; 70 a bug (with a traceback); 130 interrupted.",
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBTIERCTL_CONFIG\\fR",
        "The policy file when -c is not given.",
        ".SH FILES",
        ".TP",
        "\\fBpolicies.yaml\\fR",
        "The default policy file.",
        ".TP",
        "\\fB.tierctl/index.db\\fR",
        "The SQLite index, beside the policy file unless `index:` or --index says otherwise.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
