"""Recipes: each source experiment as a named, configurable run (`vaelab run NAME`).

Importing this package is light: the recipes' settings are in `settings` (no torch), and the
recipe modules are imported by `recipes`, which the EXPERIMENTS registry imports on its first
lookup.
"""
