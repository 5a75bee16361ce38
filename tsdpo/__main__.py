from tsdpo.cli import main

main()
