"""Model analysis: parameter and FLOP tables against the paper's figures, the benchmark command, and the
measuring helpers it shares with the comparison with the official code (``measure``)."""
