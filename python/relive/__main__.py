from relive.cli import main

main()
