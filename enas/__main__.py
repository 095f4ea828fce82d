from enas.cli import main

main()
