"""MarlinProtocol as transcripts: firmware bytes in -> events out, commands in -> bytes out.

The firmware side of every transcript is what Marlin / Prusa firmware actually prints;
the expected wire bytes are built with `frame`, an independent checksum implementation.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from hydrogen.printers.marlin import (
    MAX_GCODE_LENGTH,
    MAX_RECEIVED_LINE,
    ActionCommand,
    Busy,
    CommandAcknowledged,
    Event,
    FirmwareError,
    FirmwareInfo,
    FirmwareReset,
    HeaterReading,
    LineReceived,
    LineSent,
    LinkFailed,
    LinkRecovered,
    LinkStalled,
    MarlinProtocol,
    ProbeSent,
    Resending,
    TemperatureReport,
    checksum,
    validate_gcode,
)

E = TypeVar("E")

MARLIN_M115 = (
    b"FIRMWARE_NAME:Marlin 2.1.2 (Github) SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin "
    b"PROTOCOL_VERSION:1.0 MACHINE_TYPE:3D Printer EXTRUDER_COUNT:1 "
    b"UUID:cede2a2f-41a2-4748-9b12-c55c62f367ff\n"
    b"Cap:SERIAL_XON_XOFF:0\n"
    b"Cap:EEPROM:1\n"
    b"Cap:AUTOREPORT_TEMP:1\n"
    b"Cap:EMERGENCY_PARSER:1\n"
    b"area:{full:{min:{x:0,y:0,z:0},max:{x:200,y:200,z:200}}}\n"
)


def frame(number: int, command: str) -> bytes:
    body = f"N{number} {command}"
    cs = 0
    for char in body:
        cs ^= ord(char)
    return f"{body}*{cs}\n".encode()


def of(events: list[Event], kind: type[E]) -> list[E]:
    return [event for event in events if isinstance(event, kind)]


def acks(events: list[Event]) -> list[Any]:
    return [event.tag for event in of(events, CommandAcknowledged)]


def feed(proto: MarlinProtocol, data: bytes | str, now: float = 0.0) -> list[Event]:
    proto.receive_data(data.encode() if isinstance(data, str) else data, now)
    return proto.next_events()


def connected(**kwargs: Any) -> MarlinProtocol:
    """A protocol that has completed the handshake; the next line is N2."""
    proto = MarlinProtocol(**kwargs)
    proto.begin_handshake(0.0)
    wire = proto.data_to_send(0.0)
    proto.receive_data(b"ok\n", 0.0)
    wire += proto.data_to_send(0.0)
    assert wire == frame(0, "M110 N0") + frame(1, "M115")
    proto.receive_data(MARLIN_M115 + b"ok\n", 0.0)
    proto.next_events()
    assert proto.handshake_complete
    return proto


# ---------------------------------------------------------------- framing


def test_checksum_known_values() -> None:
    # Hand-computed: N(4E)^1(31)^ (20)^M(4D)^1(31)^0(30)^5(35) = 0x26.
    assert checksum("N1 M105") == 0x26
    # The handshake line every host log shows as "N0 M110 N0*125".
    assert checksum("N0 M110 N0") == 125
    assert checksum("") == 0


def test_handshake_wire_format_and_firmware_info() -> None:
    proto = MarlinProtocol()
    proto.begin_handshake(0.0)
    assert proto.data_to_send(0.0) == b"N0 M110 N0*125\n"
    assert proto.data_to_send(0.0) == b""  # window of one: M115 waits for the ok
    feed(proto, "ok\n")
    assert proto.data_to_send(0.0) == b"N1 M115*39\n"
    events = feed(proto, MARLIN_M115 + b"ok\n")
    (info,) = of(events, FirmwareInfo)
    assert info.name == "Marlin 2.1.2 (Github)"
    assert info.fields["MACHINE_TYPE"] == "3D Printer"
    assert info.fields["SOURCE_CODE_URL"] == "github.com/MarlinFirmware/Marlin"
    assert info.fields["UUID"] == "cede2a2f-41a2-4748-9b12-c55c62f367ff"
    assert info.capabilities == {
        "SERIAL_XON_XOFF": False,
        "EEPROM": True,
        "AUTOREPORT_TEMP": True,
        "EMERGENCY_PARSER": True,
    }
    assert proto.handshake_complete
    assert not of(events, CommandAcknowledged)  # handshake lines are internal
    proto.send("G28", 0.0, tag="home")
    assert proto.data_to_send(0.0) == frame(2, "G28")


def test_prusa_m115_reply() -> None:
    proto = MarlinProtocol()
    proto.begin_handshake()
    proto.data_to_send(0.0)
    feed(proto, "ok\n")
    proto.data_to_send(0.0)
    events = feed(
        proto,
        "FIRMWARE_NAME:Prusa-Firmware 3.10.0 based on Marlin "
        "FIRMWARE_URL:https://github.com/prusa3d/Prusa-Firmware PROTOCOL_VERSION:1.0 "
        "MACHINE_TYPE:Prusa i3 MK3S EXTRUDER_COUNT:1 UUID:00000000-0000-0000-0000-000000000000\n"
        "Cap:AUTOREPORT_TEMP:1\nCap:AUTOREPORT_FANS:1\nok\n",
    )
    (info,) = of(events, FirmwareInfo)
    assert info.name == "Prusa-Firmware 3.10.0 based on Marlin"
    assert info.fields["FIRMWARE_URL"] == "https://github.com/prusa3d/Prusa-Firmware"
    assert info.fields["MACHINE_TYPE"] == "Prusa i3 MK3S"
    assert info.capabilities == {"AUTOREPORT_TEMP": True, "AUTOREPORT_FANS": True}


def test_handshake_completes_even_if_firmware_lacks_m115() -> None:
    proto = MarlinProtocol()
    proto.begin_handshake()
    proto.data_to_send(0.0)
    feed(proto, "ok\n")
    proto.data_to_send(0.0)
    events = feed(proto, 'echo:Unknown command: "M115"\nok\n')
    assert of(events, FirmwareInfo) == [FirmwareInfo("", {}, {})]
    assert of(events, FirmwareError)[0].kind == "unknown_command"
    assert proto.handshake_complete


def test_user_m115_gets_response_and_firmware_info() -> None:
    proto = connected()
    proto.send("M115", tag="who")
    proto.data_to_send(0.0)
    events = feed(proto, MARLIN_M115 + b"ok\n")
    (ack,) = of(events, CommandAcknowledged)
    assert ack.tag == "who"
    assert ack.response[0].startswith("FIRMWARE_NAME:Marlin 2.1.2")
    assert "Cap:AUTOREPORT_TEMP:1" in ack.response
    assert of(events, FirmwareInfo)[0].capabilities["EEPROM"] is True


# ---------------------------------------------------------------- flow control


def test_window_of_one_waits_for_each_ok() -> None:
    proto = connected()
    for i in range(3):
        proto.send(f"G1 X{i}", tag=i)
    assert proto.data_to_send(0.0) == frame(2, "G1 X0")
    assert proto.data_to_send(0.0) == b""
    assert (proto.in_flight, proto.queued) == (1, 2)
    assert acks(feed(proto, "ok\n")) == [0]
    assert proto.data_to_send(0.0) == frame(3, "G1 X1")
    assert acks(feed(proto, "ok\n")) == [1]
    assert proto.data_to_send(0.0) == frame(4, "G1 X2")
    assert acks(feed(proto, "ok\n")) == [2]
    assert proto.last_line_number == 4
    assert proto.lines_sent == 5


def test_larger_window_streams_ahead() -> None:
    proto = connected(window=3)
    for i in range(5):
        proto.send(f"G1 X{i}", tag=i)
    assert proto.data_to_send(0.0) == frame(2, "G1 X0") + frame(3, "G1 X1") + frame(4, "G1 X2")
    assert proto.in_flight == 3
    assert acks(feed(proto, "ok\nok\n")) == [0, 1]
    assert proto.data_to_send(0.0) == frame(5, "G1 X3") + frame(6, "G1 X4")


def test_lines_split_across_chunks_and_mixed_endings() -> None:
    proto = connected(window=2)
    proto.send("M105", tag="a")
    proto.send("G4 P0", tag="b")
    proto.data_to_send(0.0)
    events: list[Event] = []
    for chunk in (b"o", b"k T:21.0 /0", b".0 B:20.0 /0.0 @:0 B@:0\r", b"\n", b"ok\rec", b"ho:x\n"):
        events += feed(proto, chunk)
    assert [e.text for e in of(events, LineReceived)] == [
        "ok T:21.0 /0.0 B:20.0 /0.0 @:0 B@:0",
        "ok",
        "echo:x",
    ]
    assert acks(events) == ["a", "b"]
    assert of(events, TemperatureReport)[0].heaters["bed"] == HeaterReading(20.0, 0.0, 0)


def test_byte_by_byte_equals_one_chunk() -> None:
    transcript = (
        b"echo:busy: processing\nT:21.0 /0.0 B:20.0 /0.0 @:0 B@:0\r\n"
        b"X:0.00 Y:0.00 Z:0.00 E:0.00 Count X:0 Y:0 Z:0\nok\n"
    )
    whole, split = connected(), connected()
    for proto in (whole, split):
        proto.send("M114", tag="pos")
        proto.data_to_send(0.0)
    whole_events = feed(whole, transcript)
    split_events = [event for byte in transcript for event in feed(split, bytes([byte]))]
    assert whole_events == split_events
    (ack,) = of(whole_events, CommandAcknowledged)
    # Busy and auto-reported temperatures are not part of M114's answer.
    assert ack.response == ("X:0.00 Y:0.00 Z:0.00 E:0.00 Count X:0 Y:0 Z:0",)


def test_line_noise_never_raises_and_does_not_hide_start() -> None:
    proto = connected()
    events = feed(proto, b"\x00\x00\xff\xfe\x80\x81garb\x00age\x00\n\xff\xc3\x28start\r\n")
    received = [e.text for e in of(events, LineReceived)]
    assert received[0] == "garbage"
    assert received[1] == "(start"  # noise that decodes to printable text is kept
    assert not of(events, FirmwareReset)
    events = feed(proto, b"\xff\xfe\x00start\n")
    assert of(events, LineReceived) == [LineReceived("start")]
    assert len(of(events, FirmwareReset)) == 1


def test_flood_without_newline_is_bounded() -> None:
    proto = connected()
    proto.send("G1 X1", tag="move")
    proto.data_to_send(0.0)
    proto.next_events()
    events: list[Event] = []
    for _ in range(1000):
        events += feed(proto, b"~" * 1000)
        assert len(proto._rx) <= MAX_RECEIVED_LINE
    assert events == [LineReceived("~" * MAX_RECEIVED_LINE)]
    # The tail of the flood is discarded up to its newline; the protocol carries on.
    assert acks(feed(proto, b"~~~\nok\n")) == ["move"]
    # Pure binary noise, however long, produces no line at all.
    for _ in range(100):
        assert feed(proto, b"\xaa\x00" * 500) == []
    assert of(feed(proto, b"\n\xffok\n"), LineReceived) == [LineReceived("ok")]


def test_overlong_line_in_one_chunk_is_truncated() -> None:
    proto = connected()
    events = feed(proto, b"echo:" + b"x" * 5000 + b"\nok\n")
    received = of(events, LineReceived)
    assert len(received[0].text) == MAX_RECEIVED_LINE
    assert received[1].text == "ok"


# ---------------------------------------------------------------- ok variants


def test_ok_with_inline_temperatures_answers_m105() -> None:
    proto = connected()
    proto.send("M105", tag="temp")
    proto.data_to_send(0.0)
    events = feed(proto, "ok T:210.0 /210.0 B:60.0 /60.0 @:127 B@:0\n")
    (report,) = of(events, TemperatureReport)
    assert report.heaters == {
        "tool0": HeaterReading(210.0, 210.0, 127),
        "bed": HeaterReading(60.0, 60.0, 0),
    }
    assert report.raw == "T:210.0 /210.0 B:60.0 /60.0 @:127 B@:0"
    (ack,) = of(events, CommandAcknowledged)
    assert ack == CommandAcknowledged("temp", "M105", ("T:210.0 /210.0 B:60.0 /60.0 @:127 B@:0",))


def test_ok_zero_is_an_ok() -> None:
    proto = connected()
    proto.send("G90", tag="abs")
    proto.data_to_send(0.0)
    assert acks(feed(proto, "ok 0\n")) == ["abs"]


def test_advanced_ok_names_the_acknowledged_line() -> None:
    proto = connected(window=3)
    for tag in "abc":
        proto.send("G1 X1", tag=tag)
    proto.data_to_send(0.0)  # N2, N3, N4
    # The ok for N2 was lost on the wire; ADVANCED_OK says N3 is done.
    events = feed(proto, "ok N3 P15 B3\n")
    assert acks(events) == ["a", "b"]
    assert proto.oks_assumed_lost == 1
    # An ok naming an already acknowledged line is a stray and frees nothing.
    assert acks(feed(proto, "ok N2 P15 B3\n")) == []
    assert proto.unexpected_oks == 1
    assert acks(feed(proto, "ok N4 P15 B3\n")) == ["c"]


def test_unsolicited_ok_is_not_credited_to_the_next_line() -> None:
    proto = connected()
    feed(proto, "ok\n")
    assert proto.unexpected_oks == 1
    proto.send("G1 X5", tag="move")
    proto.data_to_send(0.0)
    assert proto.in_flight == 1
    assert acks(feed(proto, "ok\n")) == ["move"]


# ---------------------------------------------------------------- resend


def test_checksum_error_resend_then_ok_is_swallowed() -> None:
    proto = connected()
    proto.send("G1 X10 Y10", tag="move")
    assert proto.data_to_send(0.0) == frame(2, "G1 X10 Y10")
    events = feed(proto, "Error:checksum mismatch, Last Line: 1\nResend: 2\nok\n")
    assert of(events, FirmwareError) == [
        FirmwareError("checksum mismatch, Last Line: 1", "checksum", False)
    ]
    assert of(events, Resending) == [Resending(2, 1)]
    assert not of(events, CommandAcknowledged)  # that ok freed the rejected line's slot
    assert proto.data_to_send(0.1) == frame(2, "G1 X10 Y10")
    (sent,) = of(proto.next_events(), LineSent)
    assert sent.resend and sent.number == 2
    assert acks(feed(proto, "ok\n")) == ["move"]
    assert proto.resends == 1
    assert not proto.halted


@pytest.mark.parametrize("request_line", ["rs N2", "rs 2", "Resend:2", "resend: N2"])
def test_resend_request_spellings(request_line: str) -> None:
    proto = connected()
    proto.send("M400", tag="sync")
    proto.data_to_send(0.0)
    events = feed(proto, f"{request_line}\nok\n")
    assert of(events, Resending) == [Resending(2, 1)]
    assert proto.data_to_send(0.0) == frame(2, "M400")


def test_stale_duplicate_resend_requests_are_ignored() -> None:
    proto = connected(window=3)
    for tag in "abc":
        proto.send(f"G1 Y{tag == 'a'}", tag=tag)
    first = proto.data_to_send(0.0)
    # N2 was corrupted; N3 and N4 were already on the wire and each earn a repeat.
    events = feed(
        proto,
        "Error:checksum mismatch, Last Line: 1\nResend: 2\nok\n"
        "Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n"
        "Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n",
    )
    assert of(events, Resending) == [Resending(2, 1)]
    assert [e.kind for e in of(events, FirmwareError)] == ["checksum", "line_number", "line_number"]
    assert not of(events, CommandAcknowledged)
    assert proto.data_to_send(0.0) == first  # N2..N4 once more, not three times
    assert proto.data_to_send(0.0) == b""
    # The retransmitted N2 is corrupted too: the repeats are used up, so this request
    # is genuine (and its own trailing repeats are stale again).
    events = feed(
        proto,
        "Error:checksum mismatch, Last Line: 1\nResend: 2\nok\n"
        "Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n",
    )
    assert of(events, Resending) == [Resending(2, 2)]
    assert proto.data_to_send(0.0) == first
    assert acks(feed(proto, "ok\nok\nok\n")) == ["a", "b", "c"]
    assert proto.resends == 6


def test_resend_loop_gives_up() -> None:
    proto = connected(max_resends=2)
    proto.send("G1 X1", tag="doomed")
    proto.send("G1 X2", tag="queued")
    proto.data_to_send(0.0)
    events: list[Event] = []
    for _ in range(3):
        events += feed(proto, "Error:checksum mismatch, Last Line: 1\nResend: 2\nok\n")
        proto.data_to_send(0.0)
    assert [r.attempt for r in of(events, Resending)] == [1, 2]
    (failed,) = of(events, LinkFailed)
    assert "resend loop" in failed.reason
    assert failed.lost_tags == ("doomed", "queued")
    assert proto.failed
    assert proto.data_to_send(1.0) == b""
    assert proto.cancel_pending("link failed", include_in_flight=True) == []  # handed out


def test_resend_of_the_next_unsent_line_needs_nothing() -> None:
    proto = connected()
    proto.send("G1 X1", tag="a")
    proto.data_to_send(0.0)
    feed(proto, "ok\n")
    proto.send("G1 X2", tag="b")
    proto.data_to_send(0.0)  # N3
    # A garbled extra line made the firmware ask for N4, which was never sent.
    events = feed(proto, "Error:No Line Number with checksum, Last Line: 3\nResend: 4\nok\n")
    assert not of(events, Resending)
    assert not of(events, CommandAcknowledged)  # its ok was swallowed
    assert proto.data_to_send(0.0) == b""
    assert acks(feed(proto, "ok\n")) == ["b"]


def test_resend_of_an_acknowledged_line_replays_it_from_history() -> None:
    proto = connected(window=2)
    proto.send("G1 X1", tag="a")
    proto.send("G1 X2", tag="b")
    proto.data_to_send(0.0)
    assert acks(feed(proto, "ok\n")) == ["a"]
    events = feed(proto, "Resend: 2\nok\n")
    assert of(events, Resending) == [Resending(2, 1)]
    assert proto.data_to_send(0.0) == frame(2, "G1 X1") + frame(3, "G1 X2")
    # "a" was already acknowledged: its replay is not reported a second time.
    assert acks(feed(proto, "ok\nok\n")) == ["b"]


def test_resend_of_a_forgotten_line_fails_the_link() -> None:
    proto = connected()
    for i in range(80):
        proto.send(f"G1 X{i}")
        proto.data_to_send(0.0)
        feed(proto, "ok\n")
    events = feed(proto, "Resend: 3\nok\n")
    assert "no longer available" in of(events, LinkFailed)[0].reason


def test_firmware_counter_ahead_is_adopted() -> None:
    proto = connected()
    feed(proto, "Resend: 10\nok\n")
    proto.send("G1 X1", tag="a")
    assert proto.data_to_send(0.0) == frame(10, "G1 X1")
    assert acks(feed(proto, "ok\n")) == ["a"]


# ---------------------------------------------------------------- timeouts and probe


def stalled(**kwargs: Any) -> MarlinProtocol:
    """N2 'G1 X1' written at t=0 and overdue at t=10.5; the probe is written."""
    proto = connected(**kwargs)
    proto.send("G1 X1", tag="move")
    proto.send("G1 X2", tag="next")
    proto.data_to_send(0.0)
    proto.next_events()
    proto.check_timeouts(9.9)
    assert proto.next_events() == []
    proto.check_timeouts(10.5)
    stall = of(proto.next_events(), LinkStalled)
    assert len(stall) == 1 and stall[0].line_number == 2
    assert proto.data_to_send(10.5) == frame(3, "M105")
    assert of(proto.next_events(), ProbeSent) == [ProbeSent("M105", 3)]
    return proto


def test_lost_ok_recovered_by_probe() -> None:
    proto = stalled()
    events = feed(proto, "ok T:21.0 /0.0 B:20.0 /0.0 @:0 B@:0\n", 10.6)
    assert acks(events) == ["move"]
    assert proto.oks_assumed_lost == 1
    assert proto.data_to_send(10.6) == frame(4, "G1 X2")
    assert acks(feed(proto, "ok\n", 10.7)) == ["next"]


def test_slow_ok_is_not_mistaken_for_a_lost_one() -> None:
    proto = stalled()
    assert acks(feed(proto, "ok\n", 11.0)) == ["move"]
    # The probe is still in flight and fills the window.
    assert proto.data_to_send(11.0) == b""
    assert acks(feed(proto, "ok T:21.0 /0.0 @:0\n", 11.1)) == []
    assert proto.oks_assumed_lost == 0
    assert proto.data_to_send(11.1) == frame(4, "G1 X2")


def probe_until_failed(
    proto: MarlinProtocol, start: float, end: float
) -> list[tuple[float, bytes]]:
    """Step the clock by 0.5 s from `start` to `end` with a silent firmware; return
    (time, bytes written) for every write."""
    writes = []
    now = start
    while now <= end and not proto.failed:
        proto.check_timeouts(now)
        if data := proto.data_to_send(now):
            writes.append((now, data))
        now += 0.5
    return writes


def test_silent_firmware_is_probed_with_backoff_then_fails() -> None:
    proto = stalled()  # stall noticed at 10.5, probe N3 written
    feed(proto, "T:21.0 /0.0 B:20.0 /0.0 @:0 B@:0\n", 15.0)  # auto-reports do not help
    writes = probe_until_failed(proto, 11.0, 60.0)
    # each probe's answer may be lost too: ask again after 2, 4, 8, 16 s
    assert writes == [(12.5, frame(4, "M105")), (16.5, frame(5, "M105")), (24.5, frame(6, "M105"))]
    (failed,) = of(proto.next_events(), LinkFailed)
    assert "silent" in failed.reason and "4 probes" in failed.reason
    assert failed.lost_tags == ("move", "next")
    assert proto.data_to_send(41.0) == b""
    proto.send("G1 X3", tag="late")
    assert proto.data_to_send(41.0) == b""
    assert proto.begin_handshake(42.0) == ["late"]
    assert not proto.failed
    assert proto.data_to_send(42.0) == frame(0, "M110 N0")


def test_lost_oks_and_lost_probe_answers_recover() -> None:
    """The stalled line's ok and the first probe's answer are both lost; the second
    probe's answer settles everything, each line once, and says it recovered."""
    proto = stalled()
    assert probe_until_failed(proto, 11.0, 12.5) == [(12.5, frame(4, "M105"))]
    events = feed(proto, "ok T:21.0 /0.0 B:20.0 /0.0 @:0 B@:0\n", 13.0)
    assert acks(events) == ["move"]
    (recovered,) = of(events, LinkRecovered)
    assert recovered.oks_lost == 2 and recovered.probes == 2 and recovered.seconds == 2.5
    assert proto.data_to_send(13.0) == frame(5, "G1 X2")
    assert acks(feed(proto, "ok\n", 13.1)) == ["next"]
    assert not proto.failed


def test_busy_keep_alives_restart_the_silence_clock() -> None:
    proto = stalled()
    now = 11.0
    while now < 70.0:
        proto.check_timeouts(now)
        proto.data_to_send(now)
        if now % 5 == 0:
            feed(proto, "echo:busy: processing\n", now)
        now += 0.5
    assert not proto.failed  # working, not gone


def test_bare_ok_probe_answer_is_retired_on_timeout() -> None:
    # Firmware whose M105 ok carries no temperatures, and the original ok was lost.
    proto = stalled()
    assert acks(feed(proto, "T:21.0 /0.0\nok\n", 10.6)) == ["move"]
    proto.check_timeouts(20.5)
    assert proto.next_events() == []
    proto.check_timeouts(20.7)
    assert not of(proto.next_events(), LinkFailed)
    assert proto.oks_assumed_lost == 1
    assert proto.data_to_send(20.7) == frame(4, "G1 X2")


def test_probe_answered_by_resend_recovers_the_lost_line() -> None:
    proto = stalled()
    # N2 itself never arrived: the numbered probe exposes the gap.
    events = feed(
        proto, "Error:Line Number is not Last Line Number+1, Last Line: 1\nResend: 2\nok\n", 10.6
    )
    assert of(events, Resending) == [Resending(2, 1)]
    assert proto.data_to_send(10.6) == frame(2, "G1 X1")
    assert acks(feed(proto, "ok\n", 10.7)) == ["move"]
    assert proto.data_to_send(10.7) == frame(3, "M105")
    assert acks(feed(proto, "ok T:21.0 /0.0\n", 10.8)) == []
    assert proto.data_to_send(10.8) == frame(4, "G1 X2")


@pytest.mark.parametrize("command", ["G28", "G29", "M109 S210", "M190 S60", "M400", "M303 S200"])
def test_long_commands_get_the_long_timeout(command: str) -> None:
    proto = connected(ok_timeout=10.0, long_command_timeout=300.0)
    proto.send(command, tag="long")
    proto.data_to_send(0.0)
    proto.next_events()
    proto.check_timeouts(200.0)
    assert proto.next_events() == []
    assert proto.next_timeout() == 300.0
    proto.check_timeouts(300.0)
    assert len(of(proto.next_events(), LinkStalled)) == 1


def test_busy_keepalive_extends_the_deadline() -> None:
    proto = connected()
    proto.send("G1 X100 F100", tag="slow")
    proto.data_to_send(0.0)
    for t in (2.0, 4.0, 6.0, 8.0, 10.0, 12.0):
        events = feed(proto, "echo:busy: processing\n", t)
        assert of(events, Busy) == [Busy("processing")]
        proto.check_timeouts(t + 1.0)
        assert not of(proto.next_events(), LinkStalled)
    proto.check_timeouts(21.9)
    assert proto.next_events() == []
    proto.check_timeouts(22.0)
    assert len(of(proto.next_events(), LinkStalled)) == 1


def test_heating_wait_lines_keep_alive_but_autoreports_do_not() -> None:
    proto = connected(ok_timeout=10.0, long_command_timeout=30.0)
    proto.send("M109 S200", tag="heat")
    proto.data_to_send(0.0)
    for t in range(1, 40):
        events = feed(proto, "T:150.00 /200.00 B:60.00 /60.00 @:127 B@:0 W:?\n", float(t))
        assert len(of(events, TemperatureReport)) == 1
        proto.check_timeouts(float(t))
        assert not of(proto.next_events(), LinkStalled)
    assert acks(feed(proto, "ok\n", 40.0)) == ["heat"]

    proto.send("G1 X1", tag="move")
    proto.data_to_send(40.0)
    for t in range(41, 51):
        feed(proto, "T:200.00 /200.00 B:60.00 /60.00 @:64 B@:0\n", float(t))
    proto.check_timeouts(50.0)
    assert len(of(proto.next_events(), LinkStalled)) == 1


def test_wait_from_idle_firmware_triggers_the_probe_early() -> None:
    proto = connected()
    proto.send("G92 E0", tag="reset")
    proto.data_to_send(0.0)
    feed(proto, "wait\n", 1.0)  # may predate our line: ignored
    assert proto.data_to_send(1.0) == b""
    events = feed(proto, "wait\n", 3.0)  # queue empty for a second with N2 unacked
    assert len(of(events, LinkStalled)) == 1
    assert not of(events, Busy)
    assert proto.data_to_send(3.0) == frame(3, "M105")


def test_busy_paused_for_user() -> None:
    proto = connected()
    events = feed(proto, "echo:busy: paused for user\nbusy: paused for input\n")
    assert of(events, Busy) == [Busy("paused for user"), Busy("paused for input")]


# ---------------------------------------------------------------- errors


def test_multiline_thermal_error_is_one_fatal_event() -> None:
    proto = connected()
    proto.send("M109 S215", tag="heat")
    proto.send("G28", tag="home")
    proto.data_to_send(0.0)
    events = feed(
        proto,
        "Error:MINTEMP triggered, system stopped! Heater_ID: 0\n"
        "Error:Printer halted. kill() called!\n",
    )
    assert of(events, FirmwareError) == [
        FirmwareError(
            "MINTEMP triggered, system stopped! Heater_ID: 0\nPrinter halted. kill() called!",
            "thermal",
            True,
        )
    ]
    assert proto.halted
    assert proto.data_to_send(1.0) == b""
    proto.check_timeouts(1000.0)  # a halted firmware is not probed
    assert not of(proto.next_events(), LinkStalled)
    assert proto.cancel_pending("halted", include_in_flight=True) == ["heat", "home"]
    assert proto.begin_handshake(1001.0) == []  # each tag comes back once
    assert not proto.halted


def test_error_group_closes_after_grace_or_on_next_line() -> None:
    proto = connected()
    events = feed(proto, "Error:Thermal Runaway, system stopped! Heater_ID: bed\n", 1.0)
    assert not of(events, FirmwareError)
    proto.check_timeouts(1.2)
    assert not of(proto.next_events(), FirmwareError)
    proto.check_timeouts(1.6)
    (error,) = of(proto.next_events(), FirmwareError)
    assert (error.kind, error.fatal) == ("thermal", True)

    other = connected()
    events = feed(other, "Error:Probing Failed\necho:Home XYZ first\n", 1.0)
    assert of(events, FirmwareError) == [FirmwareError("Probing Failed", "generic", False)]
    assert not other.halted


def test_marlin_1_continuation_lines_join_the_error() -> None:
    proto = connected()
    events = feed(
        proto,
        "Error:0\n: Extruder switched off. MINTEMP triggered !\n"
        "Error:Printer stopped due to errors. Fix the error and use M999 to restart.\n",
    )
    (error,) = of(events, FirmwareError)
    assert error.message.splitlines()[0] == "0: Extruder switched off. MINTEMP triggered !"
    assert (error.kind, error.fatal) == ("thermal", True)


def test_double_bang_is_a_fatal_halt() -> None:
    proto = connected()
    events = feed(proto, "!! Shutdown due to MCU error\n")
    assert of(events, FirmwareError) == [FirmwareError("Shutdown due to MCU error", "halted", True)]
    assert proto.halted


def test_unknown_command_is_reported_and_acknowledged() -> None:
    proto = connected()
    proto.send("G999", tag="odd")
    proto.data_to_send(0.0)
    events = feed(proto, 'echo:Unknown command: "G999"\nok\n')
    assert of(events, FirmwareError) == [
        FirmwareError('Unknown command: "G999"', "unknown_command", False)
    ]
    assert of(events, CommandAcknowledged)[0].response == ('echo:Unknown command: "G999"',)
    assert not proto.halted


def test_no_checksum_error_is_not_fatal_and_not_a_response() -> None:
    proto = connected()
    proto.send("M114", tag="pos")
    proto.data_to_send(0.0)
    events = feed(proto, "Error:No Checksum with line number, Last Line: 0\nResend: 2\nok\n")
    assert of(events, FirmwareError) == [
        FirmwareError("No Checksum with line number, Last Line: 0", "checksum", False)
    ]
    proto.data_to_send(0.0)
    (ack,) = of(
        feed(proto, "X:1.00 Y:2.00 Z:3.00 E:0.00 Count X:80 Y:160 Z:1200\nok\n"),
        CommandAcknowledged,
    )
    assert ack.response == ("X:1.00 Y:2.00 Z:3.00 E:0.00 Count X:80 Y:160 Z:1200",)


def test_generic_error_is_part_of_the_response() -> None:
    proto = connected()
    proto.send("G29", tag="level")
    proto.data_to_send(0.0)
    (ack,) = of(feed(proto, "Error:Probing Failed\nok\n"), CommandAcknowledged)
    assert ack.response == ("Error:Probing Failed",)


# ---------------------------------------------------------------- host actions, reset


@pytest.mark.parametrize(
    ("line", "action", "argument"),
    [
        ("//action:pause", "pause", ""),
        ("//action:resume", "resume", ""),
        ("//action:cancel", "cancel", ""),
        ("//action:disconnect", "disconnect", ""),
        ("//action:notification Heating nozzle...", "notification", "Heating nozzle..."),
        ("//action:prompt_begin Filament runout", "prompt_begin", "Filament runout"),
        ("//action:prompt_button Continue", "prompt_button", "Continue"),
    ],
)
def test_action_commands(line: str, action: str, argument: str) -> None:
    proto = connected()
    proto.send("M400", tag="x")
    proto.data_to_send(0.0)
    events = feed(proto, line + "\nok\n")
    assert of(events, ActionCommand) == [ActionCommand(action, argument)]
    assert of(events, CommandAcknowledged)[0].response == ()


def test_start_mid_session_drops_work_and_hand_shakes_again() -> None:
    proto = connected()
    proto.send("G28", tag="home")
    proto.send("G1 X1", tag="move")
    proto.data_to_send(0.0)
    events = feed(proto, "start\necho:Marlin 2.1.2\n")
    assert of(events, FirmwareReset) == [FirmwareReset(("home", "move"), True)]
    assert not proto.handshake_complete
    assert proto.cancel_pending("reset", include_in_flight=True) == []
    proto.send("M105", tag="t")  # queued behind the new handshake
    assert proto.data_to_send(0.0) == frame(0, "M110 N0")
    feed(proto, "ok\n")
    assert proto.data_to_send(0.0) == frame(1, "M115")
    events = feed(proto, MARLIN_M115 + b"ok\n")
    assert of(events, FirmwareInfo)[0].name == "Marlin 2.1.2 (Github)"
    assert proto.data_to_send(0.0) == frame(2, "M105")


def test_start_on_port_open_is_not_mid_session() -> None:
    proto = MarlinProtocol()
    events = feed(proto, b"\x00\xffstart\necho: External Reset\n")
    assert of(events, FirmwareReset) == [FirmwareReset((), False)]
    assert proto.data_to_send(0.0) == frame(0, "M110 N0")


def test_begin_handshake_returns_dropped_tags() -> None:
    proto = connected(window=2)
    for tag in "abc":
        proto.send("G1 X1", tag=tag)
    proto.send("G1 X2")  # tag None: nothing to hand back
    proto.data_to_send(0.0)
    assert proto.begin_handshake(1.0) == ["a", "b", "c"]
    assert proto.data_to_send(1.0) == frame(0, "M110 N0") + frame(1, "M115")


def test_start_revives_a_failed_link() -> None:
    proto = stalled()
    probe_until_failed(proto, 11.0, 60.0)
    assert proto.failed
    feed(proto, "start\n")
    assert not proto.failed
    assert proto.data_to_send(31.0) == frame(0, "M110 N0")


# ---------------------------------------------------------------- emergency stop, cancel


@pytest.mark.parametrize("via_send", [False, True])
def test_emergency_stop_jumps_the_queue(via_send: bool) -> None:
    proto = connected()
    for i in range(3):
        proto.send(f"G1 X{i}", tag=i)
    proto.data_to_send(0.0)
    if via_send:
        proto.send("M112", tag="estop")  # cannot return tags, so drops nothing
    else:
        assert proto.emergency_stop(0.0) == [0, 1, 2]
    proto.next_events()
    assert proto.data_to_send(0.1) == b"M112\n"
    assert of(proto.next_events(), LineSent) == [LineSent("M112", None, b"M112\n")]
    assert proto.halted
    assert proto.data_to_send(0.2) == b""
    proto.send("G1 X9", tag="late")
    assert proto.data_to_send(0.3) == b""
    expected = [0, 1, 2, "estop", "late"] if via_send else ["late"]
    assert proto.cancel_pending("emergency stop", include_in_flight=True) == expected


def test_cancel_pending_keeps_window_accounting() -> None:
    proto = connected()
    proto.send("G1 X1", tag="written")
    proto.send("G1 X2", tag="queued")
    proto.data_to_send(0.0)
    assert proto.cancel_pending("link closed", include_in_flight=True) == ["written", "queued"]
    proto.send("M105", tag="fresh")
    assert proto.data_to_send(0.0) == b""  # N2 still occupies the window
    assert acks(feed(proto, "ok\n")) == []  # N2's ok: its tag was already handed back
    assert proto.data_to_send(0.0) == frame(3, "M105")
    assert acks(feed(proto, "ok T:20.0 /0.0\n")) == ["fresh"]


def test_cancel_pending_can_spare_written_lines() -> None:
    proto = connected()
    proto.send("G1 X1", tag="written")
    proto.send("G1 X2", tag="queued")
    proto.data_to_send(0.0)
    assert proto.cancel_pending("job cancelled") == ["queued"]  # written lines complete
    assert acks(feed(proto, "ok\n")) == ["written"]


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("G1 X10 Y20 ; move to start", "G1 X10 Y20"),
        ("  m105  \r\n", "M105"),
        ("g28", "G28"),
        ("T0", "T0"),
        ("G1X10Y10", "G1X10Y10"),
        ("M117 Hello World", "M117 Hello World"),
        ("G1\tX1", "G1 X1"),
        ("M112", "M112"),
    ],
)
def test_validate_gcode_accepts(raw: str, clean: str) -> None:
    assert validate_gcode(raw) == clean


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ; just a comment", "empty"),
        ("G1 X1\nG1 X2", "line break"),
        ("M117 Température", "non-ASCII"),
        ("G1 X1\x07", "control character"),
        ("G1 X1*12", "checksum"),
        ("M117 " + "x" * MAX_GCODE_LENGTH, "at most"),
        ("hello", "not a G-code command"),
        ("123 G1", "not a G-code command"),
        ("N5 G1 X1", "line numbers"),
        ("M110 N100", "M110"),
    ],
)
def test_validate_gcode_rejects(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_gcode(raw)


def test_send_validates_before_queueing() -> None:
    proto = connected()
    with pytest.raises(ValueError, match="line break"):
        proto.send("G28\nM112", tag="sneaky")
    assert proto.queued == 0
    assert proto.data_to_send(0.0) == b""


# ---------------------------------------------------------------- long commands, M108


def test_running_long_command_follows_the_lines_in_flight() -> None:
    proto = connected()
    proto.send("G28", tag="home")
    proto.send("G4 P10", tag="dwell")
    assert proto.running_long_command is None  # queued is not running
    assert proto.data_to_send(0.0) == frame(2, "G28")
    assert proto.running_long_command == "G28"
    assert proto.withdraw(["dwell"]) == ["dwell"]  # the read-ahead leaves nothing behind
    assert acks(feed(proto, "ok\n")) == ["home"]
    assert proto.running_long_command is None
    proto.send("M109 S200", tag="heat")
    proto.data_to_send(0.0)
    assert proto.running_long_command == "M109"
    proto.emergency_stop()
    assert proto.running_long_command is None


def test_interrupt_wait_writes_a_numbered_m108_past_the_window() -> None:
    proto = connected()
    proto.send("M109 S200", tag="heat")
    proto.send("G1 X1", tag="move")
    assert proto.data_to_send(0.0) == frame(2, "M109 S200")
    assert proto.interrupt_wait() == ("M109 S200",)
    # past the window of one, numbered: the emergency parser acts on it at once and
    # its own ok keeps the accounting exact
    assert proto.data_to_send(0.0) == frame(3, "M108")
    assert acks(feed(proto, "ok\n")) == ["heat"]  # the broken wait's ok
    assert proto.data_to_send(0.0) == b""  # the M108's ok is still due
    assert acks(feed(proto, "ok\n")) == []  # ...and is not credited to G1
    assert proto.data_to_send(0.0) == frame(4, "G1 X1")
    assert acks(feed(proto, "ok\n")) == ["move"]


def test_interrupt_wait_sends_nothing_when_no_wait_runs() -> None:
    proto = connected()
    proto.send("G28", tag="home")
    proto.data_to_send(0.0)
    assert proto.interrupt_wait() == ()  # homing cannot be broken
    assert proto.data_to_send(0.0) == b""


def test_an_answer_on_the_ok_line_is_the_commands_response() -> None:
    """OctoPrint's virtual printer and Smoothieware answer M114 on the ok line."""
    proto = connected()
    proto.send("M114", tag="where")
    proto.data_to_send(0.0)
    (ack,) = of(feed(proto, "ok X:0.0 Y:0.0 Z:0.0 E:0.0 Count: A:0 B:0 C:0\n"), CommandAcknowledged)
    assert ack.response == ("X:0.0 Y:0.0 Z:0.0 E:0.0 Count: A:0 B:0 C:0",)
    proto.send("G1 X1", tag="move")
    proto.data_to_send(0.0)
    (ack,) = of(feed(proto, "ok 0\n"), CommandAcknowledged)
    assert ack.response == ()  # "ok 0" is only an ok


def test_repetier_expected_line_error_is_a_line_number_error() -> None:
    proto = connected()
    proto.send("G1 X1", tag="a")
    proto.data_to_send(0.0)
    events = feed(proto, "Error: expected line 2 got 3\nResend:2\nok\n")
    (error,) = of(events, FirmwareError)
    assert error.kind == "line_number" and not error.fatal
    assert of(events, Resending)


@pytest.mark.parametrize(("dwell", "seconds"), [("G4 P20", 0.02), ("G4 S3", 3.0), ("G4", 0.0)])
def test_a_dwell_s_lost_ok_is_noticed_after_the_dwell_not_the_long_allowance(
    dwell: str, seconds: float
) -> None:
    """A soak run stalled for ten minutes on one lost ok after ``G4 P20``: a dwell
    says how long it takes."""
    proto = connected(ok_timeout=5.0, long_command_timeout=600.0)
    proto.send(dwell, tag="dwell")
    proto.data_to_send(0.0)
    assert proto.running_long_command == "G4"  # still shown as busy
    proto.check_timeouts(5.0 + seconds - 0.1)
    assert not of(proto.next_events(), LinkStalled)
    proto.check_timeouts(5.0 + seconds + 0.1)
    assert of(proto.next_events(), LinkStalled)
    assert proto.data_to_send(5.0 + seconds + 0.1) == frame(3, "M105")


def test_a_stale_resend_after_a_reset_cannot_trap_the_handshake_in_a_loop() -> None:
    """A firmware reset mid-print: lines the host wrote after the board rebooted and
    before it read ``start`` make the new firmware ask ``Resend: 1``, which arrives
    after the handshake was queued. The handshake's M110 is then numbered N1, and its
    argument must say N1 too: ``N1 M110 N0`` set the firmware back to 0, it asked for
    N1 again after every M115, and the printer stayed ``connecting`` for ever (found
    by tests/test_job_model.py, seed 2133531639)."""
    proto = connected()
    proto.send("G1 X1", "job")
    proto.data_to_send(0.0)
    events = feed(proto, "start\n")
    assert of(events, FirmwareReset)
    events = feed(proto, "Resend: 1\nok\n")  # the reboot's answer to the stale N2 line
    wire = proto.data_to_send(0.0)
    assert wire == frame(1, "M110 N1")
    feed(proto, "ok\n")  # Marlin's counter is now 1: it expects N2
    assert proto.data_to_send(0.0) == frame(2, "M115")
    feed(proto, MARLIN_M115 + b"ok\n")
    assert proto.handshake_complete
