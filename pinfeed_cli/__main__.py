"""`python -m pinfeed_cli ...` = `pinfeed ...`."""

from pinfeed_cli import main

main()
