"""The licence file and the package metadata agree with each other."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def metadata() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    return parser["metadata"]


def listed(value: str) -> list[str]:
    return [line.strip() for line in value.strip().splitlines() if line.strip()]


def test_the_licence_file_is_the_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_metadata_names_the_same_licence_and_the_authors() -> None:
    meta = metadata()
    assert meta["name"] == "hydrogen-gateway"
    assert meta["license"] == "Apache-2.0"
    assert "License :: OSI Approved :: Apache Software License" in listed(meta["classifiers"])
    assert [c for c in listed(meta["classifiers"]) if c.startswith("License ::")] == [
        "License :: OSI Approved :: Apache Software License"
    ]
    assert meta["author"] == "The Hydrogen developers"
    # No invented home page: a url, when there is one, is a real https address.
    assert meta.get("url", "https://").startswith("https://")


def test_every_licence_file_is_shipped() -> None:
    """Ours, and the vendored uPlot's (MIT, compatible with Apache-2.0)."""
    files = listed(metadata()["license_files"])
    assert files == ["LICENSE", "web/static/vendor/uplot/LICENSE"]
    for name in files:
        assert (ROOT / name).is_file(), name
    assert "MIT License" in (ROOT / "web/static/vendor/uplot/LICENSE").read_text(encoding="utf-8")
