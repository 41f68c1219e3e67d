"""haproxy_map_info against a real HAProxy: lean reads of one key, whatever the map's size."""

from __future__ import annotations

import json
import time


def info(run_module, env, **extra):
    started = time.monotonic()
    result = run_module("haproxy_map_info", dict(dict(socket=env.socket, map=env.map_path), **extra))
    return result, time.monotonic() - started


def test_one_key_of_a_100000_entry_map_costs_about_what_a_1_entry_map_costs(haproxy_env, run_module):
    small, small_seconds = info(run_module, haproxy_env, keys=["active"])
    assert small["entries"] == {"active": "backend_blue"} and small["drift"] is False

    with open(haproxy_env.map_path, "a") as handle:
        handle.writelines("svc%06d.example.com backend_blue\n" % index for index in range(100000))
    haproxy_env.reload()
    haproxy_env.runtime("set map %s svc099999.example.com backend_green" % haproxy_env.map_path)

    big, big_seconds = info(run_module, haproxy_env, keys=["active", "svc099999.example.com", "nope"])
    whole, whole_seconds = info(run_module, haproxy_env)
    print("\none key, 1-entry map: %.2fs; 3 keys, 100,001-entry map: %.2fs (ratio %.2f), result %d bytes; "
          "whole 100,001-entry map: %.2fs, result %d bytes"
          % (small_seconds, big_seconds, big_seconds / small_seconds, len(json.dumps(big)),
             whole_seconds, len(json.dumps(whole))))

    assert big.get("failed") is not True, big.get("msg")
    assert big["entries"] == {"active": "backend_blue", "svc099999.example.com": "backend_green"}
    assert big["disk_entries"] == {"active": "backend_blue", "svc099999.example.com": "backend_blue"}
    assert big["missing_keys"] == ["nope"]
    assert big["drift"] is True and big["drift_keys"] == ["svc099999.example.com"]
    assert len(json.dumps(big)) < 2000, "no whole map in the result unless asked"
    # Generous bound: the same as a 1-entry map, give or take the machine's load.
    assert big_seconds < 2 * small_seconds + 3, (small_seconds, big_seconds)

    assert len(whole["entries"]) == 100001 and len(whole["disk_entries"]) == 100001
    assert "runtime_entries" not in whole, "one copy of the runtime map"
    assert whole["drift_keys"] == ["svc099999.example.com"]
