"""Imports every command module so that each registers itself on the app (in help order)."""

# isort: off
# (filled in as commands land)
