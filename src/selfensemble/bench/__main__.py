"""``python -m selfensemble.bench ARGS`` is ``selfensemble bench ARGS`` (benchmarks/checks/gpu_check.sh uses it).

A program entry point, like ``selfensemble/__main__.py``: it sits on top of the CLI (the library
modules never import it).
"""

import sys

from selfensemble.cli import main

main(["bench", *sys.argv[1:]])
