"""The networks: the papers' generators and discriminators, and a pack's batched form of them."""
