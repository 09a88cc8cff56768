"""The command table and `main`: each area's module adds its commands; `main` turns the library's
errors into a message and an exit code (2 for bad input), never a traceback."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from bench.cli.choose import add_commands as choose_commands
from bench.cli.data import add_commands as data_commands
from bench.cli.decide import add_commands as decide_commands
from bench.cli.machine import add_commands as machine_commands
from bench.cli.run import add_commands as run_commands
from models.errors import TwinbenchError

AREAS = (
    machine_commands,
    data_commands,
    run_commands,
    decide_commands,
    choose_commands,
)  # `twinbench --help` lists them in this order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twinbench",
        description="Which variant of a digital-twin model gives the accuracy you need "
        "for the fewest joules per inference, on your hardware?",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in AREAS:
        add_commands(commands)
    return parser


# The library names a setting by its request field, in backticks (`max_minutes`); on the command line
# it is a flag. Names of the library's requests and arguments -> the flag that sets them.
FLAGS = {
    "batch_size": "--batch-size",
    "device": "--device",
    "executor": "--executor",
    "export": "--export",
    "fill_gaps": "--fill-gaps",
    "force": "--force",
    "grid": "--grid",
    "max_minutes": "--max-minutes",
    "objective": "--objective",
    "out": "--out",
    "profiles": "--profiles",
    "rate": "--rate",
    "region": "--region",
    "carbon_intensity": "--carbon-intensity",
    "resample": "--resample",
    "ray_address": "--ray-address",
    "resume": "--resume",
    "retrain_every": "--retrain-every",
    "run": "--run",
    "runtime": "--runtime",
    "scenario": "--scenario",
    "shard_size": "--shard-size",
    "suite": "--suite",
    "where": "--where",
}


def flag_wording(message: str) -> str:
    """A library message in the command line's words: each `setting` it names becomes its flag."""
    return re.sub(r"`([a-z_]+)`", lambda m: FLAGS.get(m.group(1), m.group(0)), message)


def _quiet_imports() -> None:
    """torchao logs a warning for each CUDA kernel library it cannot load on this machine, and torch's
    pytree one for each enum torchao registers: noise on every `train` and `run`, not problems."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed its usage error (or --help): its code, as a return value
        return e.code if isinstance(e.code, int) else 2
    _quiet_imports()
    try:
        return args.func(args)
    except TwinbenchError as e:
        print(f"error: {flag_wording(str(e))}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a path the user gave that cannot be read or written (a file for a folder, no space)
        print(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
