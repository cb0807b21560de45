"""Do the generated weights separate the weathers? `python -m dwgn.analysis` (see run.py)."""
