"""Pretraining the `small` base OmniGen in full on the procedural shape tasks: `omnideft pretrain RECIPE --out DIR`.

recipe.py names every setting; stream.py draws the training batches; vae_fit.py fits the VAE first; loop.py is the
loop. Single process and seeded throughout, so one command reproduces the shipped weights bit for bit on CPU.
"""
