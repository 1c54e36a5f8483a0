"""``python -m wasmai`` == ``wasmai``."""

from wasmai.cli import main

main()
