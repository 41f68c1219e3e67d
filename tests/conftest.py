"""Make the collection importable as ansible_collections.bluegreen.haproxy.

The repository root is the collection root; Ansible and the tests find it
through .collections/ansible_collections/bluegreen/haproxy, a link back here
(`make collection` creates the same link).
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "bluegreen", "haproxy")

if not os.path.islink(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(os.path.join("..", "..", ".."), LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
