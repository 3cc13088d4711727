"""``python -m recursivedet.projects.SparseRCNN.side_by_side ARGS`` is
``python -m recursivedet.analysis.compare --host SparseRCNN ARGS``."""

import sys

from recursivedet.analysis.compare import main as compare_main
from recursivedet.errors import run_command


def main(argv=None) -> int:
    return compare_main(["--host", "SparseRCNN", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    run_command(main)
