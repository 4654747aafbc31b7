"""Media and dataset sources: decoding, label files, the demo dataset, the manifest and its frame times."""
