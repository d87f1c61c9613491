"""What OctoPrint's virtual printer says that our own simulator never did: answers on
the ok line, and Repetier-style line-number errors."""

from __future__ import annotations

from hydrogen.printers.printer import PrinterState
from tests.conftest import connect, receive_json, receive_until
from tests.test_octoprint_virtual import (  # noqa: F401 (fixtures)
    PRINTER,
    job_file,
    octoprint_python,
    op_gateway,
    print_file,
    virtual_printer,
    wait_job,
)


async def test_an_ok_that_carries_the_answer_keeps_it(op_gateway):  # noqa: F811 (the fixture, imported)
    """Its M114 answers on the ok line itself, ``ok X:0.0 Y:0.0 Z:0.0 E:0.0 Count: ...``
    (Smoothieware does the same: ``ok C: X:...``). The command's response must hold it."""
    client, _, vp = await op_gateway({"simulated_errors": []})
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json({"type": "command", "printer": PRINTER, "gcode": "M114", "id": "where"})
    where = await receive_until(ws, lambda f: f.get("id") == "where", timeout=20)
    assert where["type"] == "command_result", where
    sent = [r["tx"] for r in vp.records() if r.get("tx", "").startswith("ok X:")]
    assert sent, vp.why()
    assert any("X:" in line for line in where["response"]), (where, sent)
    await ws.close()


async def test_a_repetier_style_line_number_error_is_not_a_generic_error(op_gateway):  # noqa: F811 (the fixture, imported)
    """Asked for a line it did not expect, it says ``Error: expected line 5 got 6`` (as
    Repetier does) and then ``Resend:5``: a line-number error the resend repairs, like
    Marlin's ``Line Number is not Last Line Number+1``, not a "generic" firmware error."""
    client, printer, vp = await op_gateway(
        {"simulated_errors": []},
        chaos=("trigger_missing_lineno",),
        chaos_every="20-20",
        chaos_max=1,
    )
    data, commands = job_file(40)
    mark = vp.mark()
    ws = await print_file(client, "one.gcode", data)
    done = await wait_job(ws, "completed", "failed", timeout=60)
    assert done["state"] == "completed", done
    assert vp.commands(mark) == commands
    assert any(r.get("tx", "").startswith("Error: expected line") for r in vp.records()), vp.why()
    assert printer.state is PrinterState.READY
    assert "generic" not in printer.stats.errors_by_kind, dict(printer.stats.errors_by_kind)
    await ws.close()
