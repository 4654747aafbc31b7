"""What every extractor shares: the base class and registry, the runner, weight files, common helpers."""
