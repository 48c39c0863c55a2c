from hydracompute.cli import main

main()
