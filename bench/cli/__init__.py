"""`twinbench`: a thin command line over the Python API.

`parser` holds the command table and `main`; `args` the shared argument types; one module per area
(`machine`: what is here; `data`: grids and twins; `run`: measuring; `decide`: reports and gates;
`choose`: select and export)
turns a command's arguments into one request to the library. Heavy imports happen inside commands.
"""

from bench.cli.parser import main

__all__ = ["main"]
