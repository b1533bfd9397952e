"""Population packs: P trial configs trained as one batched model, and which configs can share a pack."""
