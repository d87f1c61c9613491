"""The committed ground truth still is OctoPrint's: record it again and compare.

tests/octoprint_truth/octoprint.json holds the status and shape of OctoPrint's answer
to every case of tests/octoprint_truth/cases.py, recorded from a real OctoPrint by
tests/octoprint_truth/record.py. Hydrogen's adapter is diffed against that file
(tests/test_octoprint_api.py); this test runs the recording again against the
OctoPrint installed in .venv/octoprint, so an OctoPrint release that answers
differently, or a case edited without recording again, fails here.
"""

from __future__ import annotations

import json

import pytest

from tests.octoprint_truth import record
from tests.octoprint_truth.server import OctoPrintServer, octoprint_executable
from tests.octoprint_truth.shapes import diff


@pytest.fixture(scope="module")
def recorded() -> dict:
    if octoprint_executable() is None:
        pytest.skip(
            "OctoPrint is not installed in .venv/octoprint (.ci/run installs it): "
            "the ground truth cannot be recorded again here"
        )
    with OctoPrintServer() as server:
        return record.record(server)


def test_every_case_is_recorded_in_the_committed_truth(recorded):
    committed = json.loads(record.TRUTH.read_text())
    assert sorted(recorded["cases"]) == sorted(committed["cases"]), (
        "cases.py and octoprint.json disagree: run python -m tests.octoprint_truth.record"
    )


def test_octoprint_answers_as_recorded(recorded):
    committed = json.loads(record.TRUTH.read_text())
    differences = []
    for name, now in recorded["cases"].items():
        then = committed["cases"].get(name)
        if then is None:
            continue
        if now["status"] != then["status"]:
            differences.append(f"{name}: status {now['status']}, recorded {then['status']}")
        if now["shape"] is not None and then["shape"] is not None:
            differences += [f"{name}: {line}" for line in diff(then["shape"], now["shape"])]
    for part in ("connected", "history", "current"):
        differences += [
            f"socket {part}: {line}"
            for line in diff(committed["socket"][part], recorded["socket"][part])
        ]
    for kind, then in committed["socket"]["events"].items():
        now = recorded["socket"]["events"][kind]
        differences += [f"socket event {kind}: {line}" for line in diff(then, now)]
    assert not differences, (
        f"OctoPrint {recorded['octoprint']} answers differently from the recording of "
        f"{committed['octoprint']}:\n" + "\n".join(differences)
    )
