"""Unit tests on every ansible-core the collection claims (make matrix: 2.17, 2.18, 2.19).

The module tests use `ansible.module_utils.testing.patch_module_args`, new in ansible-core
2.19. On 2.17 and 2.18 the same context manager is provided here, the way those versions'
AnsibleModule reads its arguments (`basic._ANSIBLE_ARGS`, JSON under ANSIBLE_MODULE_ARGS).
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
from unittest import mock

try:
    # ansible-core 2.19 and newer have it.
    import ansible.module_utils.testing  # noqa: F401 pylint: disable=unused-import
except ImportError:
    from ansible.module_utils import basic

    @contextlib.contextmanager
    def patch_module_args(args=None):
        """Expose the given module args to AnsibleModule instances created within this context."""
        if not isinstance(args, (dict, type(None))):
            raise TypeError("The `args` arg must be a dict or None.")
        with mock.patch.object(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()):
            yield

    testing = types.ModuleType("ansible.module_utils.testing")
    testing.patch_module_args = patch_module_args
    sys.modules["ansible.module_utils.testing"] = testing
