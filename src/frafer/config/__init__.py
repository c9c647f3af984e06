"""Configuration: the typed schema (`schema`, the bottom of the package) and reading recipes (`loader`).

Nothing is imported here, so that data and models can read the schema without pulling in the loader, which sits
above the method registry.
"""
