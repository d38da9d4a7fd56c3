"""`omnideft demo`: offline end-to-end run on the tiny OmniGen (synthetic shards -> DEFT -> generation -> report)."""
