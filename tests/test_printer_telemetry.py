"""Filament, fans, factors and position end to end: a file with extrusion, retractions,
absolute and relative E printed on the simulated Marlin over a real pty, the figures
read back from the printer summary (WebSocket) and from /metrics."""

from __future__ import annotations

import pytest

from hydrogen.config import JobsConfig
from hydrogen.printers.printer import PrinterState
from tests.conftest import connect, receive_json, receive_until
from tests.test_jobs import run_job, upload, wait_job
from tests.test_metrics_printing import Series, only, scrape
from tests.test_printers import command, sim_printer, wait_state

#: 10 mm of new filament: absolute E with a retraction and its prime, then relative E
#: with another; G92 E0 starts each block over.
BLOCK = [
    "G92 E0",
    "G1 X10 Y10 E2 F1800",
    "G1 X20 Y10 E5",
    "G1 E3 F2400 ; retract",
    "G1 E5 ; prime",
    "G1 X20 Y20 E8",
    "M83",
    "G1 X10 Y20 E1.5",
    "G1 E-1",
    "G1 E1",
    "G1 X10 Y10 E0.5",
    "M82",
]
BLOCKS = 40
PRELUDE = ["G28", "G1 Z0.2", "M106 S153", "M106 P1 S51", "M220 S150", "M221 S95"]


async def _summary(ws) -> dict:
    await ws.send_json({"type": "printers", "id": "p"})
    reply = await receive_until(ws, lambda f: f.get("id") == "p")
    (summary,) = reply["printers"]
    return summary["telemetry"]


def _value(series: Series, name: str, **labels: str) -> float:
    return series[name][tuple(sorted({"printer": "sim", **labels}.items()))]


async def test_a_print_with_extrusion_as_the_summary_and_prometheus_see_it(gateway_client):
    # No pause script: its G91/G90 would switch the file's E mode, as on a real Marlin.
    _, client = await gateway_client(printers=(sim_printer(),), jobs=JobsConfig(m73_progress=False))
    printer = client.printers.printers["sim"]
    sim = client.printers.simulators["sim"]
    await wait_state(printer, PrinterState.READY)
    data = "\n".join(PRELUDE + BLOCK * BLOCKS + ["M107 P1", ""]).encode()
    assert (await upload(client, "extrude.gcode", data)).status == 201

    ws = await connect(client)
    await receive_json(ws)
    before = await _summary(ws)
    assert before["job_filament_mm"] is None
    scraped = await scrape(client)
    assert "hydrogen_printer_job_filament_extruded_meters" not in scraped
    assert "hydrogen_printer_fan_speed_ratio" not in scraped  # not zeros: unknown
    assert "hydrogen_printer_feedrate_factor_ratio" not in scraped
    total_before = _value(scraped, "hydrogen_printer_filament_extruded_meters_total")
    assert total_before * 1000 == before["filament_mm"]

    await ws.send_json({"type": "subscribe", "id": 1, "topics": ["printer/sim/job"]})
    await receive_until(ws, lambda f: f.get("id") == 1)
    await run_job(ws, "extrude.gcode")
    await ws.send_json({"type": "job_pause", "printer": "sim", "id": "pause"})
    await wait_job(ws, "paused")
    paused = await _summary(ws)  # the job stands still: the figures agree
    assert paused["job_filament_mm"] == pytest.approx(
        paused["filament_mm"] - before["filament_mm"], abs=1e-3
    )
    during = await scrape(client)
    assert _value(during, "hydrogen_printer_job_filament_extruded_meters") * 1000 == (
        pytest.approx(paused["job_filament_mm"], abs=1e-3)
    )
    await ws.send_json({"type": "job_resume", "printer": "sim", "id": "resume"})
    done = await wait_job(ws, "completed", "failed")
    assert done["state"] == "completed", done

    after = await _summary(ws)
    assert after["filament_mm"] - before["filament_mm"] == pytest.approx(10.0 * BLOCKS)
    assert after["job_filament_mm"] is None  # the job ended
    assert after["fans"] == {"0": 0.6, "1": 0.0}
    assert after["feedrate_factor"] == 1.5
    assert after["flow_factor"] == 0.95
    assert (sim.fan_speeds, sim.feedrate_percentage, sim.flow_percentage) == (
        {0: 153, 1: 0},
        150,
        {0: 95},
    )

    # The firmware's own reports: M114, and M220/M221 without S.
    sim.feedrate_percentage, sim.flow_percentage[0] = 120, 80
    reply = await command(ws, "M114\nM220\nM221", "reports")
    assert reply["type"] == "command_result", reply
    assert "FR:120%" in reply["response"] and "echo:E0 Flow: 80%" in reply["response"]
    after = await _summary(ws)
    assert after["position"] == {"x": 10.0, "y": 10.0, "z": 0.2, "e": 10.0}
    assert (after["feedrate_factor"], after["flow_factor"]) == (1.2, 0.8)

    metrics = await scrape(client)
    filament = _value(metrics, "hydrogen_printer_filament_extruded_meters_total")
    assert filament - total_before == pytest.approx(BLOCKS * 0.010)
    assert "hydrogen_printer_job_filament_extruded_meters" not in metrics
    fans = {dict(k)["fan"]: v for k, v in metrics["hydrogen_printer_fan_speed_ratio"].items()}
    assert fans == {"0": 0.6, "1": 0.0}
    assert only(metrics, "hydrogen_printer_feedrate_factor_ratio")[1] == 1.2
    assert only(metrics, "hydrogen_printer_flow_factor_ratio")[1] == 0.8
    position = {dict(k)["axis"]: v for k, v in metrics["hydrogen_printer_position_meters"].items()}
    assert position == pytest.approx({"x": 0.01, "y": 0.01, "z": 0.0002, "e": 0.01})
    await ws.close()


async def test_the_position_is_auto_reported_where_the_firmware_can(gateway_client):
    """The simulator advertises AUTOREPORT_POS, so the gateway turns M154 on at the
    handshake and the position is known without anyone sending M114; the reports do
    not leak into a command's answer."""
    _, client = await gateway_client(printers=(sim_printer(),))
    printer = client.printers.printers["sim"]
    sim = client.printers.simulators["sim"]
    await wait_state(printer, PrinterState.READY)
    assert sim.position_interval == 1  # temperature_interval, the same cadence
    ws = await connect(client)
    await receive_json(ws)
    reply = await command(ws, "G1 X12 Y7 Z3\nG4 S3", "move")  # 3 s: several reports
    assert reply["response"] == [], reply
    assert printer.telemetry.position == {"x": 12.0, "y": 7.0, "z": 3.0, "e": 0.0}
    await ws.close()
