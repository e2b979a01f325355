"""`python -m dlcore`: the command line (main.py parses and dispatches)."""
