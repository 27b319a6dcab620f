from cerberus_cli.cli import main

main()
