"""Parses a PowerShell script with tree-sitter's PowerShell grammar and prints its commands.

Usage: ps_check.py SCRIPT. Exit 1 with the first syntax error (line:column) if the script
does not parse; otherwise one JSON line per command: {"command": name, "args": [[parameter
or null, argument text or null], ...]}, in script order (nested commands too).
"""
import json
import sys

import tree_sitter
import tree_sitter_powershell

source = open(sys.argv[1], "rb").read()
if source.startswith(b"\xef\xbb\xbf"):
    source = source[3:]
parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
tree = parser.parse(source)


def first_error(node):
    if node.type == "ERROR" or node.is_missing:
        return node
    for c in node.children:
        e = first_error(c)
        if e is not None:
            return e
    return None


err = first_error(tree.root_node)
if err is not None:
    row, col = err.start_point
    print(f"syntax error at {row + 1}:{col + 1}: {source[err.start_byte:err.end_byte][:60]!r}")
    sys.exit(1)


def text(n):
    return source[n.start_byte:n.end_byte].decode("utf-8")


def commands(node):
    if node.type == "command":
        name = node.child_by_field_name("command_name")
        elements = node.child_by_field_name("command_elements")
        args = []
        if elements is not None:
            for c in elements.named_children:
                if c.type == "command_argument_sep":
                    continue
                if c.type == "command_parameter":
                    args.append([text(c), None])
                elif args and args[-1][1] is None and args[-1][0] is not None:
                    args[-1][1] = text(c)
                else:
                    args.append([None, text(c)])
        print(json.dumps({"command": text(name) if name else None, "args": args}))
    for c in node.children:
        commands(c)


commands(tree.root_node)
