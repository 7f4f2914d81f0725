from keyledger.bootstrap import main

main()
