"""`python -m compiler ...` is the `omnic` command."""
from .cli import main

main()
