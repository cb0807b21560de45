from dwgn.analysis.run import main
from dwgn.errors import run_main

run_main(main, "python -m dwgn.analysis")
