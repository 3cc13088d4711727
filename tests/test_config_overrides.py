"""Command-line overrides: unknown keys and wrong types fail with the key and suggestions."""

import re

import pytest
from detectron2.config import LazyConfig
from training_setup import REPO, TINY_CONFIG, tiny_run_at, train_net

from recursivedet.engine import (
    ConfigOverrideError,
    argument_parser,
    check_overrides,
    load_config,
    parse_options_anywhere,
)
from recursivedet.switches import PAPER_SWITCHES

MODEL_CONFIG = str(REPO / "projects" / "SparseRCNN" / "configs" / "models" / "recursivedet.py")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    with tiny_run_at(tmp_path_factory.mktemp("overrides")):
        return LazyConfig.load(str(TINY_CONFIG))


@pytest.mark.parametrize(
    "override, suggestion",
    [
        ("train.max_itr=5", "train.max_iter"),
        ("model.decoder.stage_sharin=all", "model.decoder.stage_sharing"),
        ("model.decoder.stage.box_pe_self_atention=True", "model.decoder.stage.box_pe_self_attention"),
        ("optimizer.params.lr_factor_func.multiplyer=0.1", "optimizer.params.lr_factor_func.multiplier"),
        ("dataloader.train.total_batchsize=8", "dataloader.train.total_batch_size"),
        ("trian.seed=1", "train.seed"),
    ],
)
def test_unknown_key_names_it_and_suggests_the_closest(cfg, override, suggestion):
    key = override.split("=")[0]
    with pytest.raises(ConfigOverrideError, match=f"no key '{key}'; did you mean: .*{suggestion}"):
        check_overrides(cfg, [override])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.max_iter=abc", "train.max_iter expects int"),
        ("train.max_iter=1.5", "train.max_iter expects int"),
        ("train.amp.enabled=1", "train.amp.enabled expects bool"),
        ("optimizer.lr=fast", "optimizer.lr expects float"),
        ("model.decoder.stage_sharing=3", "model.decoder.stage_sharing expects str"),
        ("lr_multiplier.steps=5", "lr_multiplier.steps expects list"),
        ("model.decoder.stage=7", "model.decoder.stage expects dict"),
        ("train.max_iter=None", r"train.max_iter expects int .*got str 'None' \(None is written null\)"),
    ],
)
def test_wrong_type_names_the_key_and_both_types(cfg, override, expected):
    with pytest.raises(ConfigOverrideError, match=expected):
        check_overrides(cfg, [override])


def test_valid_overrides_apply(cfg, tiny_run):
    overrides = [
        "optimizer.lr=1",  # int for a float
        "train.init_checkpoint=null",
        "lr_multiplier.steps=[100,200]",
        "dataloader.test.batch_size=2",  # a keyword of the LazyCall target not written in the config
        "+train.note=hello",  # a new key, on purpose
        "train.output_dir=${train.init_checkpoint}",  # interpolation
    ]
    result = load_config(str(TINY_CONFIG), overrides)
    assert result.optimizer.lr == 1 and result.lr_multiplier.steps == [100, 200]
    assert result.dataloader.test.batch_size == 2 and result.train.note == "hello"


def test_every_documented_paper_switch_is_a_valid_override():
    model_cfg = LazyConfig.load(MODEL_CONFIG)
    for _, _, overrides in PAPER_SWITCHES:
        for override in overrides.split():
            key, values = override.split("=")
            for value in values.split("|"):
                check_overrides(model_cfg, [f"{key}={value}"])


def test_command_line_stops_before_training_with_the_message(tiny_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_net.invoke_main(["--config-file", str(TINY_CONFIG), "train.max_itr=5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "train.max_itr" in err and "did you mean: train.max_iter" in err
    assert not (tiny_run / "output").exists()


def test_a_value_with_an_unquoted_space_is_named_with_the_quoted_form(cfg, tiny_run, capsys):
    # the shell splits train.output_dir=./my output into two words
    with pytest.raises(ConfigOverrideError) as info:
        check_overrides(cfg, ["train.output_dir=./my", "output"])
    assert str(info.value) == (
        "override 'output' is not key=value (it follows 'train.output_dir=./my': a value with spaces needs quotes, "
        'e.g. "train.output_dir=./my output")'
    )
    with pytest.raises(ConfigOverrideError, match="^override 'output' is not key=value$"):
        check_overrides(cfg, ["output"])
    with pytest.raises(SystemExit):
        train_net.invoke_main(["--config-file", str(TINY_CONFIG), "model.num_proposals=[1,2"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: cannot parse the overrides: ") and "[1,2" in line


def test_a_comma_separated_value_is_refused_with_the_list_to_write(cfg):
    with pytest.raises(ConfigOverrideError, match=r"several values \(a sweep\).*'model.rego.alphas=\[1,1,1\]'"):
        check_overrides(cfg, ["model.rego.alphas=1,1,1"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.rego.alphas='[1,1,1]'", "model.rego.alphas must be null or a list of numbers, .*got '\\[1,1,1\\]'"),
        ("model.rego.alphas=[a,b,c]", "model.rego.alphas must be null or a list of numbers, .*got \\['a', 'b', 'c'\\]"),
        ("train.output_dir=", "train.output_dir must name a folder for the run's checkpoints, got ''"),
    ],
)
def test_values_of_the_right_type_but_no_meaning_stop_with_one_line(tiny_run, capsys, override, expected):
    with pytest.raises(SystemExit) as exit_info:
        train_net.invoke_main(["--config-file", str(TINY_CONFIG), "model.rego.num_stages=2", override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(expected, err.strip().splitlines()[-1]) and "Traceback" not in err, err[-2000:]


def test_options_may_follow_the_overrides():
    """``... train.max_iter=40 --resume`` as ``--resume ... train.max_iter=40``; an option's values move with it."""
    parser = argument_parser()
    args = parse_options_anywhere(parser, ["--config-file", "a.py", "train.max_iter=40", "--resume"])
    assert args.resume and args.opts == ["train.max_iter=40"]
    args = parse_options_anywhere(parser, ["--config-file", "a.py", "x=1", "--num-gpus", "2", "y=2", "--eval-only"])
    assert args.num_gpus == 2 and args.eval_only and args.opts == ["x=1", "y=2"]


def test_a_config_without_the_training_keys_is_named_in_one_line(tmp_path, capsys):
    config = tmp_path / "only_model.py"
    config.write_text(
        'from recursivedet.model_zoo import get_config\nmodel = get_config("SparseRCNN/models/recursivedet.py").model\n'
    )
    with pytest.raises(SystemExit) as exit_info:
        train_net.invoke_main(["--config-file", str(config)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: config {config} defines no train, dataloader, optimizer, lr_multiplier: a training config defines "
        "model, train, dataloader, optimizer, lr_multiplier (start from one, e.g. "
        "model_zoo.get_config('SparseRCNN/recursivedet_shapes_demo.py'), and change what differs)"
    ]


def test_a_config_that_exits_while_loaded_is_an_error_not_a_silent_success(tmp_path):
    from recursivedet.errors import ConfigFileError

    config = tmp_path / "exits.py"
    config.write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(ConfigFileError, match=r"config file .*exits.py called sys.exit\(0\) while it was loaded"):
        load_config(str(config))
