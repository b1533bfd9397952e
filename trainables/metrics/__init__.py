"""What a trial measures: FID/KID and their feature extractors and caches, domain statistics, toy quality, Lipschitz bounds, per-trial figures."""
