"""``python -m selfensemble.bench ARGS`` is ``selfensemble bench ARGS`` (benchmarks/checks/gpu_check.sh uses it)."""

import sys

from selfensemble.cli import main

sys.argv = [sys.argv[0], "bench", *sys.argv[1:]]
main()
