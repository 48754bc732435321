from pulse.flows.cli import main

main()
