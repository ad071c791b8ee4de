"""``python -m demoe``: the ``demoe-eval`` command line."""

from demoe.cli import main

main(prog_name="demoe-eval")
