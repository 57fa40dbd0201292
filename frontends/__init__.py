"""Frontends: ways into a ladder Graph (installed as ``ladder.frontends``).

* ``text``: the .lir text format, parsed with lark.
"""
