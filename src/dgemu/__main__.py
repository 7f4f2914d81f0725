from dgemu.cli import main

main()
