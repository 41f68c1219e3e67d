"""haproxy_service: argument spec vs documentation, and how results and errors reach Ansible."""

from __future__ import annotations

import pytest
import yaml

from ansible_collections.bluegreen.haproxy.plugins.module_utils.service import ReleaseLockHeldError
from ansible_collections.bluegreen.haproxy.plugins.modules import haproxy_service
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import run_main


@pytest.fixture
def run(monkeypatch):
    """Run main() with module args against a stub service; (result, calls)."""

    def execute(args, stub):
        calls = []

        class Service(object):
            def __init__(self, **kwargs):
                calls.append(("init", kwargs))

            def __getattr__(self, name):
                def method(*arguments):
                    calls.append((name, arguments))
                    return stub(name, *arguments)
                return method

        monkeypatch.setattr(haproxy_service, "HAProxyService", Service)
        exited = run_main(haproxy_service.main, args)
        return dict(exited.result, failed=True) if exited.failed else exited.result, calls

    return execute


def test_documented_options_are_the_argument_spec():
    documented = yaml.safe_load(haproxy_service.DOCUMENTATION)["options"]
    assert set(documented) == {"state", "master_socket", "config", "binary", "pidfile", "service_name", "manager",
                               "preserve_maps", "release_lock_path", "timeout"}
    assert documented["release_lock_path"]["type"] == "path" and "default" not in documented["release_lock_path"]
    returned = yaml.safe_load(haproxy_service.RETURN)
    assert {"staged_map_files", "recovered_reload", "restored_runtime_map_entries"} <= set(returned)


def test_reloaded_passes_the_lock_path_and_check_mode(run):
    result, calls = run(dict(state="reloaded", preserve_maps=["/m.map"], release_lock_path="/l.lock",
                             _ansible_check_mode=True),
                        lambda name, *args: dict(changed=True, action="reloaded", staged_map_files=[]))
    assert calls[0][1]["release_lock_path"] == "/l.lock" and calls[0][1]["preserve_maps"] == ["/m.map"]
    assert calls[1] == ("reload", (True,))
    assert result["changed"] is True and result["action"] == "reloaded"


def test_started_reports_recovery_and_added_keys(run):
    answers = dict(
        recover_abandoned=[dict(lock_path="/m.map.lock", holder={}, restored_map_files=["/m.map"])],
        ensure_started=dict(changed=False, action="none"),
        add_missing_keys=([], []),
    )
    result, calls = run(dict(state="started", preserve_maps=["/m.map"]), lambda name, *args: answers[name])
    assert [name for name, _args in calls[1:]] == ["recover_abandoned", "ensure_started", "add_missing_keys"]
    assert result["changed"] is True, "a recovery changed the node"
    assert result["recovered_reload"][0]["restored_map_files"] == ["/m.map"]
    assert result["added_map_entries"] == []


def test_a_held_lock_fails_with_the_holder(run):
    holder = dict(owner="awx-job-42", phase="SMOKE")

    def refuse(name, *args):
        raise ReleaseLockHeldError("release lock /m.map.lock is held by 'awx-job-42'", lock_path="/m.map.lock",
                                   lock_holder=holder)

    result, _calls = run(dict(state="reloaded", preserve_maps=["/m.map"]), refuse)
    assert result["failed"] is True
    assert result["msg"].startswith("release lock /m.map.lock is held by 'awx-job-42'")
    assert result["lock_holder"] == holder and result["lock_path"] == "/m.map.lock"
