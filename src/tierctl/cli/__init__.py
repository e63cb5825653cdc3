"""The command line: parse, call :mod:`tierctl.api`, print, map errors to exit codes."""
