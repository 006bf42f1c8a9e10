"""The networks: DiT, SAME autoencoder, conditioners and the layers they share (no generation logic)."""
