"""Stage 1 pre-training (DESIGN.md §2, §6): all logic lives in dwgn.pretraining."""
import sys

from dwgn.pretraining import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
