"""`python -m pinfeed` is the `pinfeed` command."""

from pinfeed.cli import main

main()
