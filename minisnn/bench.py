"""Benchmarks: ``python -m minisnn.bench {train,kernels,rtl} [--json]``.

Figures are medians over repeated runs inside one process; quote ratios
measured in one run, absolute times drift between machines and loads.
"""

import argparse
import json
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minisnn.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for register in REGISTRY:
        name, run = register(sub)
        commands[name] = run
    args = parser.parse_args(argv)
    result = commands[args.command](args)
    if getattr(args, "json", False):
        json.dump(result, sys.stdout, indent=2)
        print()


# Each entry adds its subparser and returns (name, run(args) -> JSON-able result).
REGISTRY = []

if __name__ == "__main__":
    main()
