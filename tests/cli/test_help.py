"""Every command's help ends with examples a user can copy."""

import subprocess
import sys

import click

from demoe.cli import main


def commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(group, info_name="demoe-eval")
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            found += commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def test_every_command_ends_its_help_with_examples_of_itself():
    found = commands(main)
    assert len(found) >= 15
    for path, command in found:
        epilog = command.epilog or ""
        assert "Examples:" in epilog, f"demoe-eval {' '.join(path)} --help has no examples"
        assert f"demoe-eval {' '.join(path)}" in epilog, (
            f"the examples of {' '.join(path)} show another command"
        )


def test_help_of_a_subcommand_prints_its_examples():
    done = subprocess.run(
        [sys.executable, "-m", "demoe.cli", "bench", "make", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.rstrip().splitlines()[-2:] == [
        "    demoe-eval bench make aio-synth",
        "    demoe-eval bench make --psf psf.npy --input sharp/ --out my_bench --poisson 0.01",
    ]
