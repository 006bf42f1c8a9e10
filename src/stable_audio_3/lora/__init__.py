"""LoRA adapters on the networks: adapter maths, official LoRA files, merging."""
