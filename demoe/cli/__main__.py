"""``python -m demoe.cli``: what torchrun launches for ``--nproc``."""

from demoe.cli import main

main(prog_name="demoe-eval")
