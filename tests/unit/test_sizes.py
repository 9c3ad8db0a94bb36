import pytest

from streaming_runtime.errors import ConfigError
from streaming_runtime.sizes import parse_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("65536", 65536),
        (4096, 4096),
        ("64Ki", 65536),
        ("64KiB", 65536),
        ("2MB", 2_000_000),
        ("1.5Gi", 1610612736),
        ("16_777_216", 16777216),
        (" 8 mib ", 8 * 1024 * 1024),
        ("10B", 10),
    ],
)
def test_sizes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-5", "0", "5 parsecs", "1e3", True, "0.5"])
def test_bad_sizes_name_the_setting(text):
    with pytest.raises(ConfigError, match="maxWindowBytes"):
        parse_bytes(text, setting="maxWindowBytes")
