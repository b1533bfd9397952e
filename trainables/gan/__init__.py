"""The GAN objective: losses, Lipschitz regularizers (each with its pack form) and optimizers."""
