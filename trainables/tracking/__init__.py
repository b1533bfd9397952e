"""MLflow: a trial's runs, the logger and its retries, and the provenance and environment every run carries."""
