"""`python -m bertclf` and `accelerate launch -m bertclf train ...`."""

from bertclf.cli import main

main()
