"""cli/text.py: the warning about listeners of a group's endpoint that are not members."""

from __future__ import annotations

from rpctl.cli.text import unmanaged_warning

from tests.support.views import group_view, strays


def test_one_unmanaged_listener():
    assert unmanaged_warning(group_view(unmanaged=strays((123, "nc")))) == (
        "1 unmanaged listener on tcp:127.0.0.1:18080: pid 123 (nc) — it gets no connection while a member is "
        "live; adopt it or stop it")


def test_several_on_udp_and_one_nobody_visibly_holds():
    view = group_view(proto="udp", unmanaged=strays((123, "dns"), (None, "")))
    assert unmanaged_warning(view) == (
        "2 unmanaged listeners on udp:127.0.0.1:18080: pid 123 (dns), cookie 9001 (no visible process) — they "
        "get no datagram while a member is live; adopt them or stop them")


def test_none_or_not_read_is_no_warning():
    assert unmanaged_warning(group_view()) is None
    assert unmanaged_warning(group_view(unmanaged=None)) is None


def test_a_line_per_server_generation_and_none_without():
    from rpctl.cli.text import generation_lines
    from rpctl.controller.read.generation_views import generation_views

    from tests.support.views import member

    view = group_view([member(0, "a-1", generation=1, draining=True, queue=0, target_share=0.0),
                       member(1, "b-1", generation=2, canary=True, target_share=0.05),
                       member(2, "b-2", generation=2, target_share=0.05, verdict=None)])
    view.generations = generation_views(view.members)
    assert generation_lines(view) == [
        "generation 1: drained, 0.0% of new work (a-1): safe to stop",
        "generation 2: canary, 10.0% of new work (b-1, b-2)",
    ]
    assert generation_lines(group_view()) == []


def test_pid_text_of_a_member_and_of_shared_ones():
    from rpctl.cli.text import pid_text
    from tests.support.views import member

    assert pid_text(member(0, "w")) == "4200"
    assert pid_text(member(0, "w", shared=True, processes=[11, 12])) == "11,12"
    assert pid_text(member(0, "w", shared=True, processes=[11, 12, 13, 14])) == "11,12+2"
    assert pid_text(member(0, "w", shared=True, processes=[])) == "-"
