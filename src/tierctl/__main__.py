from tierctl.cli.main import run

run()
