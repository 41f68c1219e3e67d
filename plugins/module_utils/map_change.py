# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One change of a map, at runtime and (optionally) on disk: haproxy_map's run, for every caller.

The haproxy_map module and the release engine's steps (switch, persist, roll back) change maps
the same way: read what is live and plan (a compare-and-set refuses here, nothing sent), record
the release phase in the lock, write the new map file beside the old one, apply the plan (armed
for an instant if asked, judged at the instant, read back), rename the file in. `change_map`
returns the module's result or raises MapStepError carrying the result that is true then.
"""

from __future__ import annotations

from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import LockError, record_phase
from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import (
    MapFileEncodingError,
    MapFileError,
    PreparedMapFile,
    read_map_file,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import (
    MapChangeError,
    applied_result,
    apply_plan,
    lookup_runtime_values,
    plan_bulk,
    plan_result,
    plan_single,
    require_loaded_map,
    runtime_entries,
    unchanged_facts,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import RuntimeAPIError

LEVEL_PURPOSE = "changing a map (set map, add map, del map, prepare/commit map)"


class MapStepError(Exception):
    """A map change failed or was refused; `result` is what is true now (the module's failed result)."""

    def __init__(self, message, result):
        super(MapStepError, self).__init__(message)
        self.result = result


def read_plan(client, params, map_file):
    """Read what is live (and on disk) and plan the change; raises RuntimeAPIError subclasses."""
    map_name, persist = params["map"], params["persist"]
    client.require_level("admin", LEVEL_PURPOSE)
    require_loaded_map(client, map_name)
    disk_text = None
    if persist or params["entries"] is None:
        try:
            disk_text = read_map_file(map_file)
        except MapFileEncodingError as exc:
            # Never "absent on disk": the file is there, and its entries cannot be read for sure.
            raise RuntimeAPIError("%s; nothing was changed" % exc)
        except MapFileError as exc:
            if persist:
                raise RuntimeAPIError("persist=true but %s; nothing was changed" % exc)
    if params["entries"] is not None:
        return plan_bulk(map_name, params["entries"], params["expected_entries"],
                         runtime_entries(client, map_name), disk_text, persist)
    key = params["key"]
    value = params["value"] if params.get("state", "present") == "present" else None
    previous_value = lookup_runtime_values(client, map_name, [key])[key]
    return plan_single(map_name, key, value, params["expected_value"], previous_value, disk_text, persist)


def change_map(client, params, check_mode=False, diff=False, backup=None, warn=None, module=None):
    """haproxy_map's run with its (validated, normalized) `params`; returns its result.

    `backup(path)` makes a backup of the map file (AnsibleModule.backup_local), `warn(text)`
    reports a warning, `module` (the AnsibleModule) commits the map file through atomic_move.
    Raises MapStepError with the result when the change failed or was refused.
    """
    map_file = params.get("map_file") or params["map"]
    key = params["key"] if params["entries"] is None else None
    result = dict(changed=False, map=params["map"])
    try:
        plan = read_plan(client, params, map_file)
    except MapChangeError as exc:
        # A compare-and-set refused before anything was sent: the facts are what is live.
        if key is not None:
            result.update(key=key, value=params["value"] if params.get("state", "present") == "present" else None)
        raise MapStepError(str(exc), applied_result(result, exc.facts, key))
    except RuntimeAPIError as exc:
        raise MapStepError(str(exc), result)

    result.update(plan_result(plan, key))
    if diff:
        result["diff"] = plan.diff(map_file, params["persist"])
    if check_mode:
        return result
    guard = params.get("release_lock")
    if guard:
        try:
            record_phase(guard["path"], guard["owner"], guard["phase"])
        except (LockError, OSError) as exc:
            raise MapStepError("%s; nothing was changed" % exc, applied_result(result, unchanged_facts(plan), key))
    if not plan.changed:
        return result

    prepared_file = None
    if plan.disk_changed:
        if params.get("backup") and backup is not None:
            result["backup_file"] = backup(map_file)
        try:
            # Written (not yet renamed) before runtime changes: proves the file can be replaced.
            prepared_file = PreparedMapFile(map_file, plan.new_disk_text, module=module)
        except MapFileError as exc:
            raise MapStepError("%s; nothing was changed" % exc, applied_result(result, unchanged_facts(plan), key))
    try:
        facts = apply_plan(client, plan, prepared_file, params.get("switch_at"))
    except MapChangeError as exc:
        raise MapStepError(str(exc), applied_result(result, exc.facts, key))
    for warning in facts.get("warnings", []):
        if warn is not None:
            warn(warning)
    return applied_result(result, facts, key)
