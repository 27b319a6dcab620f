"""The command group itself."""

from click.testing import CliRunner

from cerberus_cli import __version__
from cerberus_cli.cli import COMMANDS, main


def test_version_and_help():
    runner = CliRunner()
    res = runner.invoke(main, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0 and "cerberus segment slide.svs" in res.output


def test_every_subcommand_has_help_with_example():
    runner = CliRunner()
    for name in COMMANDS:
        res = runner.invoke(main, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)
        assert "Example" in res.output, name
