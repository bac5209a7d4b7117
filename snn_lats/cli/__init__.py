"""Command-line tools shipped with the package: ``snn-lats-measure`` (snn_lats.cli.measure) and the data-set
vocabulary it shares with the repository's experiments (snn_lats.cli.data)."""
