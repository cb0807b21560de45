import sys
from dwgn.training.pretraining import main
raise SystemExit(main(sys.argv[1:]))
