"""The viewer page's three files (assets/index.html, viewer.js, viewer.css).

Their size as the server sends them (each gzipped at level 9, the sizes
summed) stays within 16 KiB; each starts with its SPDX licence line; the
script is plain ES5 (no build step turns newer syntax into what older
phone browsers run).
"""
import gzip
import os
import re
import unittest

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
FILES = ("index.html", "viewer.js", "viewer.css")
BUDGET = 16 * 1024
SPDX = {
    "index.html": "<!-- SPDX-License-Identifier: MIT -->",
    "viewer.js": "/* SPDX-License-Identifier: MIT */",
    "viewer.css": "/* SPDX-License-Identifier: MIT */",
}
# Syntax newer than ES5, once comments, strings and regular expressions are gone.
NEWER_THAN_ES5 = re.compile(r"=>|`|\.\.\.|\b(?:let|const|class|import|export|async|await|yield|of)\b")
# After these, a "/" starts a regular expression, not a division.
BEFORE_REGEX = set("(,=:[!&|?{};+-*%<>~^") | {"return", "typeof", "case", "in", "else"}
WORD = re.compile(r"\w+")


def read(name):
    with open(os.path.join(ASSETS, name), "rb") as f:
        return f.read()


def code_only(script):
    """The script without comments, string literals and regular expressions."""
    out, i, previous = [], 0, ""
    while i < len(script):
        c, pair = script[i], script[i:i + 2]
        if pair == "//":
            i = script.find("\n", i)
            i = len(script) if i < 0 else i
        elif pair == "/*":
            i = script.index("*/", i + 2) + 2
        elif c in "'\"" or (c == "/" and previous in BEFORE_REGEX):
            end, in_class = i + 1, False
            while script[end] != c or in_class:
                if script[end] == "\\":
                    end += 1
                elif c == "/" and script[end] in "[]":
                    in_class = script[end] == "["
                end += 1
            out.append(" 0 ")
            i, previous = end + 1, "0"
        else:
            word = WORD.match(script, i)
            token = word.group(0) if word else c
            out.append(token)
            i += len(token)
            if not token.isspace():
                previous = token
    return "".join(out)


class ViewerFilesTests(unittest.TestCase):
    def test_gzipped_size_within_budget(self):
        sizes = {name: len(gzip.compress(read(name), 9)) for name in FILES}
        total = sum(sizes.values())
        self.assertLessEqual(total, BUDGET, "the viewer is %d bytes gzipped (%s), over %d"
                             % (total, ", ".join("%s %d" % item for item in sizes.items()), BUDGET))

    def test_each_file_starts_with_its_spdx_line(self):
        for name in FILES:
            lines = read(name).decode("utf-8").splitlines()
            if name.endswith(".html") and lines[0].lower() == "<!doctype html>":
                lines = lines[1:]                   # the doctype stays first
            self.assertEqual(lines[0], SPDX[name], name)

    def test_script_is_es5(self):
        code = code_only(read("viewer.js").decode("utf-8"))
        self.assertIn("function", code)
        self.assertNotIn("SPDX", code, "comments are left")
        newer = sorted(set(m.group(0) for m in NEWER_THAN_ES5.finditer(code)))
        self.assertEqual(newer, [], "syntax newer than ES5 in viewer.js")

    def test_es5_check_sees_newer_syntax(self):
        for sample in ("let x = 1;", "const y = 2;", "[1].map((a) => a);", "var s = `t`;",
                       "class A {}", "f(...args);", "for (var v of list) {}"):
            self.assertTrue(NEWER_THAN_ES5.search(code_only(sample)), sample)
        for sample in ("var s = 'let => `';", "/* const */ var r = /`|=>/g;", "// class\nx = a / b / c;",
                       "element.classList.add('of');"):
            self.assertIsNone(NEWER_THAN_ES5.search(code_only(sample)), sample)


if __name__ == "__main__":
    unittest.main()
