"""The comparison's report (the dict of :func:`~.session.compare`) as text and as JSON."""

from recursivedet.analysis.comparison_report import print_images, print_timing, print_training, write_report

__all__ = ["print_report", "write_report"]


def print_report(report: dict) -> None:
    """Print the agreement per image, the timing and the training step (those run), then AGREE or DISAGREE."""
    print(
        f"AdaMixer: {report['proposals']} queries, seed {report['seed']}, float32, "
        f"tolerances: score {report['score_tol']:g}, box {report['box_tol']:g} x longer side"
    )
    print_images(report["images"])
    if report.get("timing"):
        print_timing(report["timing"], report["images"][0]["height"], report["images"][0]["width"])
    if report.get("training"):
        print_training(report["training"])
    print(f"\n{'AGREE' if report['agree'] else 'DISAGREE'}")
