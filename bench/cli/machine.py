"""Commands about this machine: what is registered and cached here (list), and its device and
energy meters (env)."""

from __future__ import annotations

import argparse


def add_commands(commands) -> None:
    listing = commands.add_parser("list", help="twins, suites and grids known here, and which grids are cached")
    listing.set_defaults(func=cmd_list)
    env = commands.add_parser("env", help="the device, the energy meters available here and why others are not")
    env.set_defaults(func=cmd_env)


def cmd_list(args: argparse.Namespace) -> int:
    from bench.run.inventory import inventory

    print("\n".join(inventory()))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    import torch

    from bench.measure.meters import choose_meter
    from bench.measure.runtimes import runtime_names

    print(f"cuda: {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}")
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        print(f"energy meter on {device}: {choose_meter(device).why}")
    if not torch.cuda.is_available():
        print("energy meter on cuda: none (no CUDA device)")
    print(f"runtimes: {', '.join(runtime_names())}")
    return 0
