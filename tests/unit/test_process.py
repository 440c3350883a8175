"""controller/kernel/process.py: the signals that stop a long-running command, and how an exit is worded."""

from __future__ import annotations

import os
import signal
import threading

from rpctl.controller.kernel import process


def test_every_stop_signal_is_handled_unless_it_was_ignored_at_start():
    # The suite itself may start with a signal ignored (a background job of a script
    # ignores SIGINT): each is set here, and put back after.
    saved = {s: signal.getsignal(s) for s in process.STOP_SIGNALS}
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        assert process.stop_signals() == (signal.SIGINT, signal.SIGTERM)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        assert process.stop_signals() == process.STOP_SIGNALS == (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job of a script
        assert process.stop_signals() == (signal.SIGTERM, signal.SIGHUP)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_handlers_are_installed_for_the_duration_and_restored():
    got = []
    before = signal.getsignal(signal.SIGHUP)
    restore = process.on_signals(lambda signum, frame: got.append(signum), [signal.SIGHUP])
    try:
        os.kill(os.getpid(), signal.SIGHUP)
    finally:
        restore()
    assert got == [signal.SIGHUP]
    assert signal.getsignal(signal.SIGHUP) is before


def test_off_the_main_thread_nothing_is_installed():
    before = signal.getsignal(signal.SIGHUP)
    result = []
    thread = threading.Thread(target=lambda: result.append(process.on_signals(lambda s, f: None, [signal.SIGHUP])))
    thread.start()
    thread.join()
    result[0]()
    assert signal.getsignal(signal.SIGHUP) is before


def test_an_exit_is_worded_by_its_status_or_its_signal():
    assert process.describe_exit(3 << 8) == "exited with status 3"
    assert process.describe_exit(signal.SIGKILL) == "exited with signal 9 (SIGKILL)"
