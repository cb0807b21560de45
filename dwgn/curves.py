"""`python -m dwgn.curves RUN_DIR [--out PNG]`: draw a run's training curves (see dwgn/training/curves.py)."""
import sys

from dwgn.training.curves import main

if __name__ == "__main__":
    sys.exit(main())
