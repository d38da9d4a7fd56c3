"""Generation verbs: batch jobs, contact sheets, orbits, validation renders, `omnideft generate` (docs/generate.md).
The Generator API itself is the families' one surface (families/generator.py)."""

from omnideft.families.generator import FamilyGenerator as Generator

__all__ = ["Generator"]
