import sys
from dwgn.training.finetuning import main
raise SystemExit(main(sys.argv[1:]))
