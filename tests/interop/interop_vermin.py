"""Interop check: alsserve.py runs on Python 3.8 (ALS's oldest supported).

vermin (tests/requirements-extra.txt, installed by `make venv`) reads the
module and reports any language feature or library member newer than 3.8.
A `getattr(module, "New", fallback)` passes vermin, so the fallback is also
run here: the command line's on/off switches must work without
argparse.BooleanOptionalAction (3.9+).

Run from the repository root:  .venv/bin/python -m unittest tests/interop/interop_vermin.py -v
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import alsserve  # noqa: E402

TARGET = "-t=3.8-"


def vermin_command():
    for candidate in (os.path.join(ROOT, ".venv", "bin", "vermin"),
                      os.path.join(os.path.dirname(sys.executable), "vermin"), shutil.which("vermin")):
        if candidate and os.path.isfile(candidate):
            return [candidate]
    raise AssertionError("vermin is not installed: run `make venv` (python3 -m venv .venv && "
                         ".venv/bin/pip install -r tests/requirements-extra.txt)")


def vermin(path):
    proc = subprocess.run(vermin_command() + [TARGET, "--violations", "--no-tips", path],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    return proc.returncode, proc.stdout.decode(errors="replace")


class VerminTest(unittest.TestCase):
    def test_alsserve_needs_nothing_newer_than_3_8(self):
        status, output = vermin(os.path.join(ROOT, "alsserve.py"))
        self.assertEqual(status, 0, output)

    def test_vermin_does_catch_a_3_9_member(self):
        # The check above can fail: the same call flags what 3.8 lacks.
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "newer.py")
            with open(path, "w") as f:
                f.write("import argparse\n"
                        "parser = argparse.ArgumentParser()\n"
                        "parser.add_argument('--watch', action=argparse.BooleanOptionalAction)\n")
            status, output = vermin(path)
        self.assertNotEqual(status, 0, output)
        self.assertIn("BooleanOptionalAction", output)


class SwitchesWithoutBooleanOptionalActionTest(unittest.TestCase):
    """What Python 3.8 sees: argparse has no BooleanOptionalAction."""

    def parse(self, *argv):
        with mock.patch.dict(argparse.__dict__):
            argparse.__dict__.pop("BooleanOptionalAction", None)
            self.assertFalse(hasattr(argparse, "BooleanOptionalAction"))
            return alsserve.build_argument_parser().parse_args(list(argv))

    def test_defaults(self):
        args = self.parse()
        self.assertIs(args.watch, True)
        self.assertIsNone(args.qr)

    def test_switches_off(self):
        args = self.parse("--no-watch", "--no-qr")
        self.assertIs(args.watch, False)
        self.assertIs(args.qr, False)

    def test_switches_on(self):
        args = self.parse("--watch", "--qr")
        self.assertIs(args.watch, True)
        self.assertIs(args.qr, True)

    def test_same_meaning_on_newer_pythons(self):
        for argv in ((), ("--no-watch", "--no-qr"), ("--watch", "--qr"), ("--qr",)):
            newer = alsserve.build_argument_parser().parse_args(list(argv))
            older = self.parse(*argv)
            self.assertEqual((older.watch, older.qr), (newer.watch, newer.qr), argv)


if __name__ == "__main__":
    unittest.main()
