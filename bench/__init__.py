"""The benchmark of SPEC §6: ``python -m bench.run [--quick] [--out FILE]``."""
