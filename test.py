import sys
from dwgn.evaluation.evaluate import main
main(sys.argv[1:])
