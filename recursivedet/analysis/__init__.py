"""Model analysis: parameter and FLOP tables against the paper's figures, the benchmark command, the comparison of
every host with its official code (``compare``: the command; ``comparison_*``, ``output_diff``,
``training_comparison``, ``worker_process``: its parts) and the measuring helpers both use (``measure``)."""
