"""A module's main() run in-process, the way every module test here runs it.

AnsibleModule.exit_json and fail_json print JSON and exit the interpreter; conftest.py's
autouse fixture makes them raise ModuleExit instead, carrying the result and whether the
module failed, so a test asserts on both.
"""

from __future__ import annotations

import pytest

from ansible.module_utils.testing import patch_module_args


class ModuleExit(Exception):
    def __init__(self, result, failed):
        super(ModuleExit, self).__init__(result.get('msg'))
        self.result = result
        self.failed = failed


def warn(self, warning, **_kwargs):
    """AnsibleModule.warn, kept on the module object: Ansible shows them as the result's `warnings`."""
    self.__dict__.setdefault('_test_warnings', []).append(warning)


def _with_warnings(module, result):
    # ansible-core 2.19 deprecates `warnings` passed to exit_json/fail_json (gone in 2.23): every
    # run would print a deprecation warning to the user.
    assert 'warnings' not in result, "pass warnings through module.warn, not exit_json(warnings=...)"
    given = module.__dict__.get('_test_warnings') or []
    if given:
        result['warnings'] = list(result.get('warnings') or []) + given
    return result


def exit_json(self, **result):
    raise ModuleExit(_with_warnings(self, result), failed=False)


def fail_json(self, msg=None, **result):
    result['msg'] = msg
    raise ModuleExit(_with_warnings(self, result), failed=True)


def run_main(main, args, check=False, diff=False):
    """main() with `args` as the module's arguments (check and diff mode as Ansible sets them)."""
    args = dict(args)
    if check:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    with patch_module_args(args):
        with pytest.raises(ModuleExit) as raised:
            main()
    return raised.value


class _SpecCaught(Exception):
    pass


def argument_spec_of(module, monkeypatch):
    """The argument_spec the module's main() hands AnsibleModule, caught before anything runs."""
    seen = {}

    def capture(**kwargs):
        seen.update(kwargs)
        raise _SpecCaught()

    monkeypatch.setattr(module, 'AnsibleModule', capture)
    with pytest.raises(_SpecCaught):
        module.main()
    return seen['argument_spec']
