from dwgn.errors import run_main
from dwgn.evaluation.evaluate import main

run_main(main, "test.py")
