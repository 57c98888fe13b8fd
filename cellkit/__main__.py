from cellkit.cli import main

main()
