from dwgn.errors import run_main
from dwgn.training.pretraining import main

run_main(main, "pre-training.py")
