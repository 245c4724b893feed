"""Settings loading: a good file loads; every bad one is refused with file, field path and line."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from service.cli import main
from service.config import ConfigError, Settings, load_settings, parse_settings

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"

FEEDS = """\
feeds:
  - name: sim
    kind: random_walk
    seed: 7
    symbols:
      - {symbol: AAPL, price: 189.5}
      - {symbol: MSFT, price: 415.2}
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the `occurrence`-th line of `text` that contains `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence - 1]


def config_error(text: str, filename: str = "cfg.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, filename)
    return str(info.value)


# --- good files ----------------------------------------------------------------------------


def test_repo_config_loads() -> None:
    """The shipped config.yaml loads into Settings with its feeds and symbols."""
    settings = load_settings(REPO_CONFIG)
    assert isinstance(settings, Settings)
    kinds = [feed.kind for feed in settings.feeds]
    assert kinds == ["market", "replay"]
    names = [name for feed in settings.feeds for name in feed.symbol_names()]
    assert len(names) == len(set(names)) >= 20
    assert {"AAPL", "MSFT", "KO", "PEP", "PNNY", "ACME"} <= set(names)
    pennies = next(feed.build() for feed in settings.feeds if feed.kind == "market").symbols()
    assert {s.symbol: s.tick_size for s in pennies}["PNNY"] == Decimal("0.0001")
    assert settings.stream.replay_window >= 10_000


def test_minimal_config_gets_defaults() -> None:
    """Only `feeds` is required; every other section takes its documented default."""
    settings = parse_settings(FEEDS)
    assert settings.server.port == 8000
    assert settings.server.ws_per_message_deflate is False
    assert settings.stream.max_frame_bytes == 64 * 1024
    assert settings.stream.max_batch_bytes <= settings.stream.send_buffer_bytes
    assert settings.feeds[0].seed == 7


def test_symbols_are_upper_cased() -> None:
    """Symbols in the config are case-insensitive and stored upper case."""
    settings = parse_settings(FEEDS.replace("AAPL", "aapl"))
    assert [s.symbol for s in settings.feeds[0].symbols] == ["AAPL", "MSFT"]


# --- bad files: field path and line --------------------------------------------------------


def test_unknown_key_names_path_line_and_hint() -> None:
    """A misspelt key is refused with its dotted path, its line and a 'did you mean' hint."""
    text = FEEDS.replace("{symbol: MSFT, price: 415.2}", "symbol: MSFT\n        prcie: 415.2")
    message = config_error(text)
    assert message.startswith("cfg.yaml:")
    assert f"feeds[0].symbols[1].prcie (line {line_of(text, 'prcie')})" in message
    assert "unknown key" in message
    assert "did you mean 'price'?" in message


def test_unknown_section_key_gets_hint() -> None:
    """An unknown key in a section suggests the nearest real one."""
    text = "server:\n  prot: 8000\n" + FEEDS
    message = config_error(text)
    assert f"server.prot (line {line_of(text, 'prot:')})" in message
    assert "did you mean 'port'?" in message


def test_unknown_key_without_close_match_lists_allowed() -> None:
    """An unknown key with no close match lists the keys that are allowed there."""
    text = "bus:\n  zzzzzz: 1\n" + FEEDS
    message = config_error(text)
    assert f"bus.zzzzzz (line {line_of(text, 'zzzzzz')})" in message
    assert "expected one of kind" in message


def test_wrong_type_names_path_line_and_value() -> None:
    """A value of the wrong type is refused with its path, line and the offending input."""
    text = FEEDS.replace("price: 415.2", "price: cheap")
    message = config_error(text)
    assert f"feeds[0].symbols[1].price (line {line_of(text, 'cheap')})" in message
    assert "valid number" in message
    assert "'cheap'" in message


def test_out_of_range_names_path_line_and_bound() -> None:
    """An out-of-range value is refused with its path, line and the bound it broke."""
    text = "stream:\n  heartbeat_ms: 5\n" + FEEDS
    message = config_error(text)
    assert f"stream.heartbeat_ms (line {line_of(text, 'heartbeat_ms')})" in message
    assert "greater than or equal to 100" in message
    assert "got 5" in message


def test_negative_price_names_symbol_path() -> None:
    """A non-positive start price in a feed is refused at feeds[i].symbols[j].price."""
    text = FEEDS.replace("price: 189.5", "price: -3")
    message = config_error(text)
    assert f"feeds[0].symbols[0].price (line {line_of(text, 'price: -3')})" in message
    assert "greater than 0" in message


def test_missing_feeds_is_refused() -> None:
    """A file without `feeds` is refused, naming the missing field."""
    message = config_error("server:\n  port: 8000\n")
    assert message.startswith("cfg.yaml:")
    assert "feeds" in message
    assert "Field required" in message


def test_empty_file_is_refused_for_missing_feeds() -> None:
    """An empty file is an empty mapping, so it is refused for the missing `feeds`."""
    message = config_error("# nothing here\n")
    assert "feeds" in message
    assert "Field required" in message


def test_unknown_feed_kind_is_refused() -> None:
    """A feed kind that does not exist is refused at its list position."""
    text = FEEDS.replace("kind: random_walk", "kind: telepathy")
    message = config_error(text)
    assert f"feeds[0] (line {line_of(text, '- name: sim')})" in message
    assert "'telepathy'" in message


def test_duplicate_symbol_within_a_feed() -> None:
    """A symbol listed twice in one feed is refused at that feed's symbols."""
    text = FEEDS.replace("MSFT", "aapl")
    message = config_error(text)
    assert f"feeds[0].symbols (line {line_of(text, 'symbols:')})" in message
    assert "AAPL" in message


def test_duplicate_symbol_across_feeds_names_path_and_line() -> None:
    """A symbol in two feeds is refused at the second occurrence's path and line."""
    text = FEEDS + (
        "  - name: other\n"
        "    kind: random_walk\n"
        "    symbols:\n"
        "      - {symbol: NVDA, price: 121.4}\n"
        "      - {symbol: aapl, price: 10}\n"
    )
    message = config_error(text)
    assert "AAPL" in message
    assert "'sim'" in message
    assert "'other'" in message
    assert "feeds[1].symbols[1]" in message
    assert f"line {line_of(text, 'symbol: aapl')}" in message


def test_duplicate_feed_name_names_path_and_line() -> None:
    """Two feeds with one name are refused at the second feed's name, with its line."""
    text = FEEDS + ("  - name: sim\n    kind: random_walk\n    symbols:\n      - {symbol: NVDA, price: 121.4}\n")
    message = config_error(text)
    assert "'sim'" in message
    assert "feeds[1].name" in message
    assert f"line {line_of(text, '- name: sim', occurrence=2)}" in message


def test_batch_larger_than_buffer_names_the_field() -> None:
    """max_batch_bytes above send_buffer_bytes is refused at stream.max_batch_bytes with its line."""
    text = "stream:\n  send_buffer_bytes: 4096\n  max_batch_bytes: 8192\n" + FEEDS
    message = config_error(text)
    assert "stream.max_batch_bytes" in message
    assert f"line {line_of(text, 'max_batch_bytes')}" in message


def test_several_errors_are_all_reported() -> None:
    """Every problem in the file is listed, not only the first."""
    text = "server:\n  port: 70000\nstream:\n  heartbeat_ms: 5\n" + FEEDS
    message = config_error(text)
    assert "2 errors" in message
    assert f"server.port (line {line_of(text, 'port:')})" in message
    assert f"stream.heartbeat_ms (line {line_of(text, 'heartbeat_ms')})" in message


@pytest.mark.parametrize(
    ("text", "needle", "column"),
    [
        ("server:\n  port: [80\nfeeds: x\n", "feeds: x", 6),
        ("server:\n  port: 80\n bad: 1\n", " bad: 1", 2),
    ],
)
def test_invalid_yaml_names_line_and_column(text: str, needle: str, column: int) -> None:
    """A YAML syntax error is refused with the parser's line and column."""
    message = config_error(text)
    assert message.startswith("cfg.yaml:")
    assert f"line {line_of(text, needle)}, column {column}" in message
    assert "invalid YAML" in message


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just words\n", "str"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    """A file whose top level is not a mapping is refused, saying what it found."""
    message = config_error(text)
    assert message.startswith("cfg.yaml:")
    assert "mapping" in message
    assert kind in message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """A file that does not exist is refused with its path and the OS reason."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)
    assert "No such file" in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    """A directory given as the config file is refused, not crashed on."""
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    """A file that is not UTF-8 text is refused with the byte offset."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"# caf\xe9\n" + FEEDS.encode())
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert "not UTF-8" in str(info.value)
    assert "byte 5" in str(info.value)


def test_load_settings_names_the_real_file(tmp_path: Path) -> None:
    """Errors from a file on disk carry that file's path, not a placeholder."""
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: -1\n" + FEEDS)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}:")
    assert "server.port (line 2)" in str(info.value)


# --- the CLI -----------------------------------------------------------------------------


def test_check_config_bad_file_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config on a bad file returns 2 and explains on stderr, with no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  prot: 8000\n" + FEEDS)
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert str(path) in err
    assert "server.prot (line 2)" in err
    assert "Traceback" not in err


def test_check_config_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config on a missing file returns 2 with a one-line reason."""
    path = tmp_path / "missing.yaml"
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err
    assert "Traceback" not in err


def test_check_config_repo_file_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """check-config on the shipped config.yaml returns 0 and reports what it found."""
    assert main(["check-config", str(REPO_CONFIG)]) == 0
    out, err = capsys.readouterr()
    expected_symbols = sum(len(feed.symbol_names()) for feed in load_settings(REPO_CONFIG).feeds)
    assert "OK" in out
    assert f"{expected_symbols} symbols" in out
    assert err == ""


def test_serve_bad_config_refuses_to_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """serve with a bad config returns 2 and says it refuses to start, before binding anything."""
    path = tmp_path / "bad.yaml"
    path.write_text("stream:\n  heartbeat_ms: 5\n" + FEEDS)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err
    assert "stream.heartbeat_ms (line 2)" in err
    assert "Traceback" not in err
