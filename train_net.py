#!/usr/bin/env python
"""Train or evaluate RecursiveDet / Sparse R-CNN from a LazyConfig file (detectron2's conventions).

    python train_net.py --config-file <Project>/<config>.py [--num-gpus N] [--resume] [--eval-only] [key=value ...]

``python train_net.py --help`` lists the paper switches (config overrides) and examples. A problem with the
input (config, override, dataset, checkpoint, device, a loss that becomes NaN) ends the command with one line
``error: ...`` and exit status 2; ``RECURSIVEDET_TRACEBACK=1`` shows the traceback too.
"""

import recursivedet  # noqa: F401  (first: it silences known warnings of detectron2's import)

# isort: split
import logging

from detectron2.engine import default_setup

from recursivedet.engine import (
    argument_parser,
    check_config,
    check_training_config,
    do_train,
    evaluate,
    launch_reporting_user_errors,
    load_config,
    parse_options_anywhere,
)
from recursivedet.engine.output_folder import output_folder
from recursivedet.errors import run_command
from recursivedet.model_zoo import get_config_file


def setup(args):
    """Load the config with checked overrides, set up logging, seeds and ``output_dir/config.yaml``."""
    cfg = load_config(args.config_file, args.opts)
    # default_setup reads the file again to log it: give it the file a config name stands for
    if "://" not in args.config_file:
        args.config_file = get_config_file(args.config_file)
    default_setup(cfg, args)
    return cfg


def main(args):
    """One process: ``--eval-only`` returns the evaluation results, training returns the trainer."""
    cfg = setup(args)
    if args.eval_only:
        return evaluate(cfg)
    return do_train(cfg, resume=args.resume)


def run(argv=None) -> None:
    """Parse the command line, check the config, datasets, checkpoint and device here, before any process
    starts (each would fail with the same error), then run :func:`main` in ``--num-gpus`` processes."""
    parser = argument_parser()
    args = parse_options_anywhere(parser, argv)
    if not args.config_file:
        parser.error("--config-file is required")
    # Logging is set up in each process by default_setup. Until then, what detectron2 logs while the checks
    # load datasets would reach stderr bare; each process logs it again.
    logging.getLogger("detectron2").addHandler(logging.NullHandler())
    cfg = load_config(args.config_file, args.opts)
    check_training_config(cfg, args.config_file)
    check_config(
        cfg,
        eval_only=args.eval_only,
        resume=args.resume,
        world_size=args.num_gpus * args.num_machines,
        processes_per_machine=args.num_gpus,
    )
    # One run per output folder (this process holds it while the worker processes run), checked writable now.
    with output_folder(cfg.train.output_dir, "train_net.py"):
        launch_reporting_user_errors(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )


def invoke_main(argv=None) -> None:
    """The command: :func:`run`, then exit; a user error exits with status 2 and one ``error: ...`` line."""
    run_command(lambda: run(argv))


if __name__ == "__main__":
    invoke_main()
