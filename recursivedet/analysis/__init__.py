"""Model analysis: parameter and FLOP tables against the paper's figures."""
