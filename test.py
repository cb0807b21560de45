import sys
from dwgn.evaluation import main
main(sys.argv[1:])
