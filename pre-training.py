import sys
from dwgn.pretraining import main
raise SystemExit(main(sys.argv[1:]))
