"""Fuzz inputs per surface (the .lir text, GGUF files, safetensors files): seed inputs, mutators and the check
each input must pass, shared by the fast hypothesis tests (tests/test_fuzz*.py) and the long driver
(``python tests/fuzz --help``)."""
