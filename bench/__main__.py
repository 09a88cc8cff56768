"""`python -m bench ...`: the CLI where the console script is not installed (the GPU machine)."""

import sys

from bench.cli import main

sys.exit(main())
