"""release_strategy_refusal: a fleet under Mitogen is refused at INIT, without Mitogen installed here."""

from __future__ import annotations

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.release_engine import strategy_refusal

NO_MITOGEN = {"ansible": object(), "ansible.plugins.strategy.linear": object()}
MITOGEN_LOADED = dict(NO_MITOGEN, ansible_mitogen=object(), **{"ansible_mitogen.strategy": object()})


def test_a_fleet_under_the_configured_mitogen_strategy_is_refused_naming_the_reason_and_the_fix():
    message = strategy_refusal("mitogen_linear", ["node1", "node2"], NO_MITOGEN)
    assert "mitogen_linear" in message and "2 nodes" in message
    assert "async" in message and "deadlocks" in message
    assert "ANSIBLE_STRATEGY=linear" in message


def test_a_play_keyword_strategy_is_caught_by_mitogen_being_loaded():
    message = strategy_refusal("linear", ["node1", "node2", "node3"], MITOGEN_LOADED)
    assert "ansible_mitogen is loaded" in message and "3 nodes" in message


def test_the_linear_strategy_and_a_single_node_under_mitogen_go_on():
    assert strategy_refusal("linear", ["node1", "node2"], NO_MITOGEN) == ""
    assert strategy_refusal("free", ["node1", "node2"], NO_MITOGEN) == ""
    # One node switches in a synchronous module run: measured to work under mitogen_linear.
    assert strategy_refusal("mitogen_linear", ["node1"], MITOGEN_LOADED) == ""
    # Without an explicit list the real sys.modules is read: no Mitogen in the test venv.
    assert strategy_refusal("linear", ["node1", "node2"]) == ""
