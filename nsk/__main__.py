from nsk.cli import main

main()
