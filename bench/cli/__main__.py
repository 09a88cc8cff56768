import sys

from bench.cli.parser import main

sys.exit(main())
