from dwgn.errors import run_main
from dwgn.training.finetuning import main

run_main(main, "train.py")
