"""``python -m transfer_influence`` runs the command-line tool."""

from .cli import main

main()
