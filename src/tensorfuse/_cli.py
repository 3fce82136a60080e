"""The `tensorfuse` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys


def _selfcheck(args: argparse.Namespace) -> int:
    from tensorfuse._selfcheck import algebra_selfcheck, format_selfcheck

    rows = algebra_selfcheck(args.lmax)
    text = format_selfcheck(rows)
    print(text)
    return 0 if text.endswith("OK") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tensorfuse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("selfcheck", help="check the O(3) algebra in both bases and print a table")
    check.add_argument("--lmax", type=int, default=4, help="largest degree to check (default 4, at most 8)")
    check.set_defaults(run=_selfcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:  # user errors get one clear line, not a traceback
        print(f"tensorfuse {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
