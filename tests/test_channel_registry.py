"""Channel types are registered once; config loading finds them by `type`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from alertd.channels.registry import CHANNEL_TYPES, CONFIG_MODELS, parse_channel_config
from alertd.errors import ConfigErrors
from alertd.settings import load_config


def load_channels(tmp_path: Path, channels: str) -> ConfigErrors | dict[str, object]:
    (tmp_path / "channels").mkdir(exist_ok=True)
    (tmp_path / "channels" / "c.toml").write_text(channels)
    (tmp_path / "alertd.toml").write_text("")
    try:
        return dict(load_config(tmp_path / "alertd.toml", env={}).channels)
    except ConfigErrors as exc:
        return exc


class TestRegistry:
    """Each type has one sender and one config model, found by its `type`."""

    def test_every_sender_has_its_config_model(self) -> None:
        assert sorted(CHANNEL_TYPES) == sorted(CONFIG_MODELS)
        for kind, cls in CHANNEL_TYPES.items():
            assert cls.config_model is CONFIG_MODELS[kind]

    def test_the_union_picks_the_model_by_type(self) -> None:
        cfg = parse_channel_config({"type": "webhook", "url": "http://127.0.0.1:1/x"})
        assert CONFIG_MODELS["webhook"] is type(cfg)

    def test_settings_do_not_name_a_sender(self) -> None:
        source = (Path(__file__).parent.parent / "alertd" / "settings.py").read_text()
        assert [] == [name for name in ("Channel,", "CHANNEL_TYPES") if name in source]


class TestChannelFileErrors:
    """A mistake in a channel table names the file, the channel and the key."""

    def test_unknown_key_has_a_suggestion(self, tmp_path: Path) -> None:
        errors = load_channels(
            tmp_path, '[channels.hook]\ntype = "webhook"\nurl = "http://x/"\nheaderz = {}\n'
        )
        assert isinstance(errors, ConfigErrors)
        assert [
            "unknown key 'headerz' in channels/c.toml channel hook; did you mean 'headers'?"
        ] == [str(e) for e in errors.errors]

    def test_bad_value_names_the_key_without_the_type_tag(self, tmp_path: Path) -> None:
        errors = load_channels(tmp_path, '[channels.hook]\ntype = "webhook"\nurl = "ftp://x/"\n')
        assert isinstance(errors, ConfigErrors)
        assert ["channels/c.toml channel hook: url: url must start with http:// or https://"] == [
            str(e) for e in errors.errors
        ]

    @pytest.mark.parametrize("kind", ["webhok", "pager"])
    def test_unknown_type_lists_the_known_ones(self, tmp_path: Path, kind: str) -> None:
        errors = load_channels(tmp_path, f'[channels.x]\ntype = "{kind}"\n')
        assert isinstance(errors, ConfigErrors)
        assert "unknown channel type" in str(errors)
        assert "webhook" in str(errors)


class TestShippedExamples:
    """Every commented example in channels/examples.toml loads once uncommented."""

    def test_examples_validate(self, tmp_path: Path) -> None:
        shipped = Path(__file__).parent.parent / "channels" / "examples.toml"
        toml = "\n".join(
            line[2:]
            for line in shipped.read_text().splitlines()
            if re.match(r"^# (\[|[a-z_]+ = )", line)
        )
        env = {
            name: "https://example.com/x" if "URL" in name else "value-of-" + name
            for name in re.findall(r"\$\{([A-Z_]+)", toml)
        }
        env["OPS_HOOK_SECRET"] = "whsec_c2VjcmV0LWtleQ=="
        shutil.copytree(shipped.parent.parent / "templates", tmp_path / "templates")
        (tmp_path / "channels").mkdir()
        (tmp_path / "channels" / "examples.toml").write_text(toml)
        (tmp_path / "alertd.toml").write_text("")
        config = load_config(tmp_path / "alertd.toml", env=env)
        kinds = {c.type for c in config.channels.values()}
        assert set(CONFIG_MODELS) == kinds
        templated = sorted(c.type for c in config.channels.values() if c.template)
        assert ["email", "slack", "telegram", "webhook"] == templated
