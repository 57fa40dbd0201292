"""The ASIC target: an ISA for a LUT-based low-bit accelerator (isa.py, text assembly in asm.py), hardware
configs (config.py, configs/*.toml), the lowering of a graph to a tiled instruction program (lower.py), a
functional simulator that runs a program with numpy (funcsim.py) and the backend entry point (compiler.py)."""
