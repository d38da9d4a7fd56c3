"""Model families (docs/design.md, "Two extension points"): one folder per family, the interface in family.py, the
table and the one resolver in registry.py. Importing this package is light: families load on first use."""
