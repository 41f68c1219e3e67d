# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every filter of plugins/filter/release.py has a plugins/filter/<name>.yml whose options match its signature.

ansible-doc and antsibull-docs read these files; a filter added without one has no documentation.
"""

from __future__ import annotations

import inspect
import os
import sys

import pytest
import yaml

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 4))
_COLLECTIONS = os.path.join(_ROOT, '.collections')
if os.path.isdir(_COLLECTIONS):
    sys.path.insert(0, _COLLECTIONS)

from ansible_collections.bluegreen.haproxy.plugins.filter.release import FilterModule  # noqa: E402

FILTERS = FilterModule().filters()


def _doc(name):
    path = os.path.join(_ROOT, 'plugins', 'filter', name + '.yml')
    assert os.path.isfile(path), "%s has no documentation file %s" % (name, path)
    with open(path) as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize('name', sorted(FILTERS))
def test_filter_is_documented(name):
    doc = _doc(name)
    documentation = doc['DOCUMENTATION']
    assert documentation['name'] == name
    assert documentation['short_description'] and documentation['description']
    assert '_value' in doc['RETURN']
    assert 'bluegreen.haproxy.' + name in doc['EXAMPLES']


@pytest.mark.parametrize('name', sorted(FILTERS))
def test_documented_options_match_the_signature(name):
    documentation = _doc(name)['DOCUMENTATION']
    parameters = list(inspect.signature(FILTERS[name]).parameters.values())
    # The first parameter is the filter's input, documented as _input.
    expected = ['_input'] + [parameter.name for parameter in parameters[1:]]
    assert list(documentation['options']) == expected
    positional = [parameter.name for parameter in parameters[1:] if parameter.default is inspect.Parameter.empty]
    assert [word.strip() for word in documentation['positional'].split(',')] == ['_input'] + positional
    for parameter in parameters[1:]:
        option = documentation['options'][parameter.name]
        if parameter.default is inspect.Parameter.empty:
            assert option.get('required') is True, parameter.name
        elif parameter.default is not None:
            assert option.get('default') == parameter.default, parameter.name
