#!/usr/bin/env python
"""Train or evaluate RecursiveDet / Sparse R-CNN from a LazyConfig file (detectron2's conventions).

    python train_net.py --config-file configs/<config>.py [--num-gpus N] [--resume] [--eval-only] [key=value ...]

``python train_net.py --help`` lists the paper switches (config overrides) and examples.
"""

from detectron2.engine import default_setup, launch

from recursivedet.engine import ConfigOverrideError, argument_parser, do_train, evaluate, load_config


def setup(args):
    """Load the config with checked overrides, set up logging, seeds and ``output_dir/config.yaml``."""
    cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    return cfg


def main(args):
    """One process: ``--eval-only`` returns the evaluation results, training returns the trainer."""
    cfg = setup(args)
    if args.eval_only:
        return evaluate(cfg)
    return do_train(cfg, resume=args.resume)


def invoke_main(argv=None) -> None:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if not args.config_file:
        parser.error("--config-file is required")
    try:  # fail before starting any process
        load_config(args.config_file, args.opts)
    except ConfigOverrideError as e:
        parser.error(str(e))
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
