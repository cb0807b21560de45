"""Index an ImageNet train folder for pre-training: python dataset/prepare_imagenet.py --root DIR [--out LIST].

No logic here: see dwgn/data/imagenet.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dwgn.errors import run_main  # noqa: E402
from dwgn.data.imagenet import main  # noqa: E402

if __name__ == "__main__":
    run_main(main, "dataset/prepare_imagenet.py")
