"""Backends: ways out of a ladder Graph (installed as ``ladder.backends``). The reference interpreter
lives in the core (``ladder.interpreter``); native CPU code and the ASIC target come here."""
