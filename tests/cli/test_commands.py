"""The command line as a thin shell: every command parses and explains itself, and `train`'s flags resolve to the
config the library would build from the same settings (precedence: preset, config file, flags, --set)."""

import json

import pytest

from alexnet_tf import cli
from alexnet_tf.cli import train as train_command
from alexnet_tf.training import config as config_module


@pytest.mark.parametrize("command", [c.NAME for c in cli.COMMANDS])
def test_every_command_has_a_help_that_explains_it(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: alexnet-tf {command}") and len(text.splitlines()) > 5


def test_train_flags_resolve_in_order_preset_file_flags_set(tmp_path):
    settings = tmp_path / "run.json"
    settings.write_text(json.dumps({"train": {"epochs": 7, "batch_size": 16}, "data": {"pca_std": 0.0}}))
    args = cli.build_parser().parse_args(["train", "--preset", "smoke", "--config", str(settings), "--epochs", "9",
                                          "--set", "train.epochs=11", "--seed", "3"])
    resolved = train_command.resolve_config(args)
    expected = config_module.preset("smoke").override(
        {"train": {"epochs": 7, "batch_size": 16}, "data": {"pca_std": 0.0}}).override(
        {"train.epochs": 11, "data.seed": 3, "train.seed": 3})
    assert resolved == expected
    assert (resolved.train.epochs, resolved.train.batch_size, resolved.data.pca_std) == (11, 16, 0.0)


def test_the_preset_follows_the_data_when_not_named():
    parse = cli.build_parser().parse_args
    assert train_command.resolve_config(parse(["train"])).preset == "demo"
    assert train_command.resolve_config(parse(["train", "--data", "folder:/photos"])).preset == "paper"


def test_bad_settings_are_user_errors():
    parse = cli.build_parser().parse_args
    with pytest.raises(cli.UserError, match="--set wants SECTION.KEY=VALUE, got 'epochs'"):
        train_command.resolve_config(parse(["train", "--set", "epochs"]))
    with pytest.raises(cli.UserError, match="no config file at"):
        train_command.resolve_config(parse(["train", "--config", "/no/such/run.yaml"]))
