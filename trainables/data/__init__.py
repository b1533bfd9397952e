"""Training data: the registered datasets (image sets, embedded subsets, the toys), where they come from and how they are cached."""
