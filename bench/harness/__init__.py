"""The side-by-side benchmark behind `python3 dev.py bench`; see bench/README.md.

The orchestrator (`run.py`, `orchestrate.py`) starts one nginx, then runs every client on every
workload in fresh worker processes (`worker.py`), each speaking the same small JSON job protocol.
"""
