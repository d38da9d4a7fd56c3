"""omnideft: DEFT adapters for OmniGen — shards, training, in-context generation, evaluation.

Importing the package is cheap: heavy modules (torch, diffusers) load only in the rooms that need them.
"""

__version__ = "0.1.0"
