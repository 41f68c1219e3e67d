"""The test lab itself (tests/lab.py): a test that meets another test's process on a port must
fail, never pass against the wrong process. Fast: no playbook, at most two HAProxy processes."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from lab import REPO, App, HAProxyEnv, ephemeral_port_range, free_port, port_block


def test_ports_are_below_the_ephemeral_range_one_block_per_worker():
    low, high = ephemeral_port_range()
    blocks = [port_block(worker) for worker in ("gw0", "gw1", "gw2", "gw3", "")]
    assert len(set(blocks)) == len(blocks), blocks
    for first, end in blocks:
        assert end <= low or first > high, (first, end, low, high)
    # A range that leaves no room below: the blocks go above it.
    first, end = port_block("gw1", ephemeral=(10000, 40000))
    assert first > 40000 and end <= 65536
    with pytest.raises(RuntimeError, match="ephemeral range"):
        port_block("gw0", ephemeral=(1024, 65000))


def test_free_port_hands_out_a_port_once_and_never_a_held_one():
    first, end = port_block()
    given = [free_port() for _dummy in range(50)]
    assert len(set(given)) == len(given)
    assert all(first <= port < end for port in given), (first, end, given)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", given[-1] + 1))
        holder.listen(1)
        assert given[-1] + 1 not in [free_port() for _dummy in range(5)]


def test_app_start_fails_when_another_process_answers_on_its_port(app_factory, tmp_path):
    # Another test's app on the port: before, start() saw "something answers" and returned,
    # and the test went on against the other app's color.
    holder = app_factory("green")
    intruder = App(name="blue9", color="blue", port=holder.port, workdir=str(tmp_path))
    with pytest.raises(AssertionError, match=r"blue9 exited \(status 1\) instead of serving on port %d:"
                       r"[\s\S]*Address already in use" % holder.port):
        intruder.start()
    intruder.stop()
    assert holder.answering_pid() == holder.process.pid


def test_app_start_fails_when_a_listener_that_is_no_app_holds_its_port(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen(8)
        app = App(name="blue1", color="blue", port=holder.getsockname()[1], workdir=str(tmp_path))
        try:
            with pytest.raises(AssertionError, match="blue1 exited"):
                app.start()
        finally:
            app.stop()


def test_a_second_haproxy_on_a_used_port_fails_to_start(haproxy_factory, tmp_path):
    # Without `noreuseport` both bind with SO_REUSEPORT and split the port's traffic silently.
    first = haproxy_factory(start_apps=False)
    workdir = tmp_path / "second"
    workdir.mkdir()
    second = HAProxyEnv(workdir=str(workdir), apps=first.apps, frontend_port=first.frontend_port,
                        stats_port=free_port(), inter="300ms")
    try:
        with pytest.raises(AssertionError, match=r"HAProxy .* exited[\s\S]*127\.0\.0\.1:%d" % first.frontend_port):
            second.start()
    finally:
        second.stop()
    assert os.path.exists(first.socket) and first.worker_pid()


def test_the_molecule_haproxy_check_fails_on_an_invalid_configuration(tmp_path):
    # molecule/shared's haproxy_check on this machine (testinfra's local backend): `haproxy -c`
    # exits 1 on a configuration it refuses, which host.run_test() (0 or 1) let pass.
    sys.path.insert(0, os.path.join(REPO, "molecule", "shared"))
    import testinfra
    from bluegreen_molecule import haproxy_check

    host = testinfra.get_host("local://")
    valid = tmp_path / "valid.cfg"
    valid.write_text("defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n"
                     "    timeout server 1s\n\nfrontend fe\n    bind 127.0.0.1:%d\n" % free_port())
    assert haproxy_check(host, str(valid)).rc == 0
    invalid = tmp_path / "invalid.cfg"
    invalid.write_text(valid.read_text() + "    use_backend no_such_backend\n")
    with pytest.raises(AssertionError, match="Unexpected exit code 1"):
        haproxy_check(host, str(invalid))


@pytest.mark.parametrize("value", ["backend\u2028green", "backend\x85green", "backend\rgreen"])
def test_the_test_side_client_reads_a_map_value_as_haproxy_holds_it(haproxy_factory, value):
    # tests/support/runtime_client.py splits replies on "\n" only, as HAProxy writes them: the
    # tests must not share the read-back bug they look for in the collection (issue 13, item 8).
    env = haproxy_factory(start_apps=False)
    assert env.runtime("set map %s active %s" % (env.map_path, value)) == "\n"
    assert env.map_value("active") == value
