# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The canary step's read of the live map at the end of its window (issue 15: "a reload during a
canary ends the canary (safe), and the engine sees it"), fed `show map` replies as HAProxy 2.6
prints them: during a step, after a reload (the new worker loaded the map file, which never holds
a share), after another hand's change, and what the end of a canary makes of a share already gone.
"""

from __future__ import annotations

from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import entries_to_dict
from ansible_collections.bluegreen.haproxy.plugins.module_utils.parsers import parse_map_entries
from ansible_collections.bluegreen.haproxy.plugins.module_utils.release_steps import canary_share_errors, shares_gone

SERVICE = dict(key="active", smoke_url="http://release.test/release")
TARGETS, LIVES = {"active": "backend_green"}, {"active": "backend_blue"}

# `show map` during the 10% step, then after `reload` on the master CLI (the map file's entries).
DURING_STEP = ("0x55e0af4b6040 active backend_blue\n0x55e0af4b60d0 active.canary backend_green\n"
               "0x55e0af4b6160 active.weight 10\n\n")
AFTER_RELOAD = "0x5627c1e3a040 active backend_blue\n\n"
# A host-keyed map with two services, the api's share gone (rollback.yml ended it) and the shop's set.
HOSTS = ("0x55e0af4b6040 shop.test shop_blue\n0x55e0af4b60d0 api.test api_blue\n"
         "0x55e0af4b6160 shop.test.canary shop_green\n0x55e0af4b61f0 shop.test.weight 25\n"
         "0x55e0af4b6280 api.test.canary api_green\n0x55e0af4b6310 api.test.weight 0\n\n")


def live(reply):
    return entries_to_dict(parse_map_entries(reply))


def test_a_step_whose_share_is_live_at_the_end_of_its_window_has_nothing_to_say():
    assert canary_share_errors([SERVICE], TARGETS, LIVES, 10, live(DURING_STEP)) == {}


def test_a_reload_during_the_window_is_named_the_share_gone():
    errors = canary_share_errors([SERVICE], TARGETS, LIVES, 10, live(AFTER_RELOAD))
    assert errors == {"active": dict(verdict="share gone", msg=(
        "the canary share is gone: active.weight is absent at runtime, expected 10; did HAProxy reload? (a reload "
        "loads the map file, which never holds a share: the canary ended on this node, every user is on backend_blue)"))}


def test_another_hands_change_of_the_canary_is_named_with_every_key_it_moved():
    moved = DURING_STEP.replace("active.weight 10", "active.weight 50").replace("canary backend_green", "canary backend_x")
    errors = canary_share_errors([SERVICE], TARGETS, LIVES, 10, live(moved))
    assert errors["active"]["verdict"] == "moved"
    assert errors["active"]["msg"] == (
        "the canary moved during its window: active.canary is backend_x at runtime, expected backend_green, "
        "active.weight is 50 at runtime, expected 10; another hand changed the map")


def test_each_service_of_a_host_keyed_map_is_read_on_its_own():
    services = [dict(SERVICE, key="shop.test"), dict(SERVICE, key="api.test")]
    targets = {"shop.test": "shop_green", "api.test": "api_green"}
    lives = {"shop.test": "shop_blue", "api.test": "api_blue"}
    errors = canary_share_errors(services, targets, lives, 25, live(HOSTS))
    assert list(errors) == ["api.test"] and errors["api.test"]["verdict"] == "share gone"
    assert "api.test.weight is 0 at runtime, expected 25" in errors["api.test"]["msg"]
    # A service that does not move has no share to lose.
    assert canary_share_errors(services, dict(targets, **{"api.test": "api_blue"}), lives, 25, live(HOSTS)) == {}


def test_the_end_of_a_canary_knows_where_the_share_is_already_gone():
    assert shares_gone(["active"], live(DURING_STEP)) == []
    assert shares_gone(["active"], live(AFTER_RELOAD)) == ["active"]
    assert shares_gone(["shop.test", "api.test"], live(HOSTS)) == ["api.test"]
