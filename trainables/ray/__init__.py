"""The Ray Tune side of a trial: the one trainable for trials and packs, and its checkpoint chain."""
