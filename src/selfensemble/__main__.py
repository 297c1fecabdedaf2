from selfensemble.cli import main

main()
