import sys
from dwgn.finetuning import main
raise SystemExit(main(sys.argv[1:]))
