"""Lets `python -m lab` run the command line."""

from lab.cli import main

main()
