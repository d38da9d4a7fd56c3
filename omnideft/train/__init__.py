"""Training: recipe (contract 3), rectified-flow loss, batch building, the loop."""
