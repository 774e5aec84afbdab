"""quantbench runners: config -> backend adapter -> workload loop -> record -> table.

Nothing here imports torch or an engine at import time: `--help` must stay fast.
"""
