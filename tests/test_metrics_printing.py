"""Printer and job metrics through a real print on the simulated printer.

What a farm's Prometheus sees while a job runs (file, time elapsed and left) and after
it ends (jobs by outcome, printing seconds, the file series gone), scraped from the
real /metrics route.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hydrogen.gateway import Gateway
from hydrogen.host import HostSampler
from hydrogen.host_rpi import THROTTLED_NODE
from hydrogen.jobs.manager import JobManager
from hydrogen.printers.manager import PrinterManager
from hydrogen.printers.printer import PrinterState
from hydrogen.server.app import create_app
from tests.conftest import MONITOR_KEY, connect, make_config, receive_json, receive_until
from tests.test_jobs import gcode_file, job_gateway, run_job, upload, wait_job  # noqa: F401
from tests.test_printers import sim_printer, wait_state

AUTH = {"Authorization": f"Key {MONITOR_KEY}"}

Series = dict[str, dict[tuple[tuple[str, str], ...], float]]


async def scrape(client) -> Series:
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    series: Series = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            series.setdefault(sample.name, {})[key] = sample.value
    return series


def only(series: Series, name: str) -> tuple[dict[str, str], float]:
    ((labels, value),) = series[name].items()
    return dict(labels), value


async def test_a_print_as_prometheus_sees_it(job_gateway):  # noqa: F811
    _, client, _printer, _sim = job_gateway
    data, _ = gcode_file(400, header=";TIME:1200")  # Cura's estimate: 20 minutes
    assert (await upload(client, "benchy.gcode", data)).status == 201

    before = await scrape(client)
    labels, _ = only(before, "hydrogen_printer_info")
    assert labels["printer"] == "sim"
    assert labels["firmware"].startswith("Marlin") and "simulator" in labels["firmware"]
    assert labels["machine_type"] == "Hydrogen Simulator" and labels["protocol"] == "1.0"
    assert "hydrogen_job_file_info" not in before  # idle: no file series at all
    assert "hydrogen_job_print_time_elapsed_seconds" not in before
    assert before["hydrogen_printer_printing_seconds_total"] == {(("printer", "sim"),): 0.0}

    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json({"type": "subscribe", "id": 1, "topics": ["printer/sim/job"]})
    await receive_until(ws, lambda f: f.get("id") == 1)
    await run_job(ws, "benchy.gcode")
    # Paused, the job stands still while we look at it.
    await ws.send_json({"type": "job_pause", "printer": "sim", "id": "pause"})
    await wait_job(ws, "paused")

    during = await scrape(client)
    assert only(during, "hydrogen_job_file_info") == (
        {"printer": "sim", "file": "benchy.gcode"},
        1.0,
    )
    _, elapsed = only(during, "hydrogen_job_print_time_elapsed_seconds")
    _, left = only(during, "hydrogen_job_print_time_left_seconds")
    _, progress = only(during, "hydrogen_job_progress_ratio")
    assert elapsed > 0
    assert left == 1200 * (1 - progress)  # the slicer's estimate, scaled by progress
    assert only(during, "hydrogen_job_printing")[1] == 1.0

    await ws.send_json({"type": "job_resume", "printer": "sim", "id": "resume"})
    done = await wait_job(ws, "completed", "failed")
    assert done["state"] == "completed", done

    after = await scrape(client)
    jobs = {dict(k)["outcome"]: v for k, v in after["hydrogen_printer_jobs_total"].items()}
    assert jobs == {"completed": 1.0, "failed": 0.0, "cancelled": 0.0}
    assert after["hydrogen_jobs_total"] == after["hydrogen_printer_jobs_total"]  # DEPRECATED
    assert "hydrogen_job_file_info" not in after  # one series at a time, none when idle
    assert "hydrogen_job_print_time_left_seconds" not in after
    _, printing = only(after, "hydrogen_printer_printing_seconds_total")
    assert printing >= elapsed
    assert printing == pytest.approx(done["elapsed_seconds"], abs=0.1)  # the frame rounds
    await ws.close()


async def test_under_voltage_during_a_print_reaches_the_operator(aiohttp_client, tmp_path):
    """A Pi's firmware reports under-voltage while a job runs: every subscriber of
    ``notifications`` gets a ``host_undervoltage`` notification naming the printer, and
    the scrape shows the flag.  The host is a fake sysfs tree; the rest is real."""
    root = tmp_path / "root"
    node = root / THROTTLED_NODE
    node.parent.mkdir(parents=True)
    node.write_text("0\n")
    config = make_config(tmp_path / "state", printers=(sim_printer(),))
    gateway = Gateway(config, sampler=HostSampler(root=root, slow_interval=60.0))
    printers = PrinterManager(gateway)
    client = await aiohttp_client(create_app(gateway, printers, JobManager(gateway, printers)))
    await wait_state(printers.printers["sim"], PrinterState.READY)
    data, _ = gcode_file(200)
    assert (await upload(client, "part.gcode", data)).status == 201

    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json(
        {"type": "subscribe", "id": 1, "topics": ["printer/sim/job", "notifications"]}
    )
    await receive_until(ws, lambda f: f.get("id") == 1)
    await run_job(ws, "part.gcode")
    await ws.send_json({"type": "job_pause", "printer": "sim", "id": "pause"})
    await wait_job(ws, "paused")

    node.write_text("50005\n")  # under-voltage now and since boot
    note = await receive_until(ws, lambda f: f.get("event") == "host_undervoltage")
    assert note["level"] == "error" and "Under-voltage" in note["message"]
    assert note["details"] == {"printers": ["sim"], "throttled": "0x50005"}
    series = await scrape(client)
    assert series["hydrogen_host_rpi_undervoltage"] == {(): 1.0}
    assert series["hydrogen_host_rpi_undervoltage_occurred"] == {(): 1.0}

    await ws.send_json({"type": "job_cancel", "printer": "sim", "id": "cancel"})
    await wait_job(ws, "cancelled")
    await ws.close()
