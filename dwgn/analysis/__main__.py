from dwgn.analysis.run import main

main()
