"""`python -m dwgn.curves RUN_DIR [--out PNG]`: draw a run's training curves into RUN_DIR/curves.png
(or PNG); see dwgn/training/curves.py."""
from dwgn.errors import run_main
from dwgn.training.curves import main

if __name__ == "__main__":
    run_main(main, "python -m dwgn.curves")
