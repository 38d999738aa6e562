from skysearch.cli.app import main

main()
