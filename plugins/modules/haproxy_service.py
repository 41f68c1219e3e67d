#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_service
short_description: Start or reload a master-worker HAProxy and confirm it runs the configuration on disk
version_added: 0.1.0
description:
  - Starts HAProxy in master-worker mode when it is not running, or reloads it without dropping
    in-flight requests, and then proves the new configuration runs, failing otherwise.
  - "How a reload is confirmed: HAProxy 2.7 and later answer the master CLI C(reload) with
    C(Success=1) or C(Success=0); HAProxy 2.6 answers nothing, so C(show proc) is polled until the
    master counted the reload, shows no C([failed: N]) and lists a worker that was not there before."
  - Under systemd it runs C(systemctl reload) and confirms the same way through the master CLI (or,
    without one, by a new child of the unit's main process). Without systemd (containers) it drives
    the master CLI itself.
  - A reload re-reads map files, which would undo a runtime-only change such as a cutover in its
    smoke window, or one whose persist was left for later (C(release_persist=manual)). Setting the
    values back on the new worker after the reload is too late - that worker serves requests with
    the file's values from its first moment. So, for the maps in O(preserve_maps), the new worker is
    made to load the live values - B(a reload by this module never moves traffic).
  - "How: under the release lock of each map (see O(release_lock_path)), the runtime values of the
    current worker are read; each map file that differs is saved to a backup beside it
    (C(.<name>.before-reload)) and replaced, atomically, by the same file with the runtime values;
    HAProxy is reloaded and the reload confirmed; then each file is put back, atomically, to exactly
    the text it had, so a deliberate difference between runtime and disk stays as the release owner
    left it. Finally the new worker's values are compared with those read before (any difference is
    set back and reported in RV(restored_runtime_map_entries))."
  - "The lock: while a release holds C(<map>.lock) (the release role's default lock path) this module
    refuses to reload or to add keys, names the holder, its age and phase, and changes nothing. While
    it reloads, it holds that lock itself (owner C(bluegreen.haproxy.haproxy_service reload), with its
    process id), so a release starting meanwhile is refused until the reload is done."
  - "Crash points: killed before the files were staged, it leaves only its lock. Killed while a file
    holds the runtime values, the file says what was live, so a reload by anyone moves no traffic; the
    file's own text is in the backup named in the lock record. Killed after the files were put back,
    it leaves only its lock. A reload that cannot be confirmed within O(timeout) is handled like a
    crash while the files are staged (HAProxy may still be reading them). In every case the next run
    of this module (for example the next run of the haproxy role) sees from the lock record that the
    process is gone, puts the files back from their backups, removes the backups and the lock, and
    reports it in RV(recovered_reload). Do not force such a lock away with a release playbook: run
    the role again instead."
  - Every write of a map file goes to a temporary file in the same directory that is renamed over
    it (owner and mode kept), so HAProxy and readers see the whole old file or the whole new one.
  - Changes made to a map without taking its lock (for example M(bluegreen.haproxy.haproxy_map)
    called outside the release playbooks) during a reload are not protected.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
    details: >-
      The map files end as they were; what would be staged for the reload is returned in
      RV(staged_map_files), in check mode too.
  idempotent:
    support: partial
    details: V(started) is idempotent; V(reloaded) reloads every time, as a handler expects.
options:
  state:
    description:
      - V(started) starts HAProxy when it is not running, reloads it when the master reports that its
        last reload failed or when O(config) was written after the running workers started (a reload
        that was missed, for example refused while a release held the lock), and adds to the running maps the keys of O(preserve_maps) files that
        the running maps lack (new services), never changing an existing key. Adding keys takes the
        release lock like a reload (refused while a release holds it).
      - V(reloaded) reloads (or starts) HAProxy and confirms the new configuration runs.
      - Both first finish what an earlier run of this module that died left behind (see the
        description and RV(recovered_reload)).
    type: str
    choices: [started, reloaded]
    default: started
  master_socket:
    description: The master CLI socket (C(-S) on HAProxy's command line).
    type: path
    default: /run/haproxy-master.sock
  config:
    description: The configuration file HAProxy is started with.
    type: path
    default: /etc/haproxy/haproxy.cfg
  binary:
    description: The haproxy binary.
    type: path
    default: /usr/sbin/haproxy
  pidfile:
    description: Where HAProxy writes the master's PID when this module starts it.
    type: path
    default: /run/haproxy.pid
  service_name:
    description: The systemd unit, when systemd manages HAProxy.
    type: str
    default: haproxy
  manager:
    description:
      - V(systemd) uses C(systemctl); V(direct) starts HAProxy itself and reloads it through the master
        CLI; V(auto) picks V(systemd) when C(/run/systemd/system) exists.
    type: str
    choices: [auto, systemd, direct]
    default: auto
  preserve_maps:
    description:
      - Map files (as HAProxy names them) whose runtime values must survive a reload, and whose release
        locks this module respects and holds while it reloads.
    type: list
    elements: path
    default: []
  release_lock_path:
    description:
      - The release lock to respect and hold, when the release playbooks use another lock path than the
        default (C(release_lock_path) of the release role).
      - By default each map of O(preserve_maps) has its own lock, the map's path plus C(.lock).
    type: path
  timeout:
    description: Seconds to wait for HAProxy to start or to confirm a reload.
    type: float
    default: 30
seealso:
  - module: bluegreen.haproxy.haproxy_map
"""

EXAMPLES = r"""
- name: Reload HAProxy, keep the live blue-green value, and prove the new configuration runs
  bluegreen.haproxy.haproxy_service:
    state: reloaded
    preserve_maps:
      - /etc/haproxy/maps/bluegreen.map

- name: Reload while the release playbooks keep their lock elsewhere
  bluegreen.haproxy.haproxy_service:
    state: reloaded
    preserve_maps:
      - /etc/haproxy/maps/bluegreen.map
    release_lock_path: /var/lock/bluegreen-release.lock

- name: Make sure HAProxy runs (in a container, without systemd)
  bluegreen.haproxy.haproxy_service:
    state: started
    manager: direct
"""

RETURN = r"""
action:
  description: What was done, V(none), V(started) or V(reloaded).
  returned: always
  type: str
  sample: reloaded
confirmed_by:
  description: How the reload was proven.
  returned: when reloaded
  type: str
  sample: "master CLI reload: Success=1"
master_pid:
  description: PID of the master process.
  returned: when the master CLI answers
  type: int
workers:
  description: PIDs of the current workers.
  returned: when the master CLI answers
  type: list
  elements: int
old_workers:
  description: PIDs of workers still draining after a reload.
  returned: when the master CLI answers
  type: list
  elements: int
previous_workers:
  description: PIDs of the workers before the reload.
  returned: when reloaded
  type: list
  elements: int
reloads:
  description: How many reloads the master has done.
  returned: when the master CLI answers
  type: int
failed_reloads:
  description: Consecutive failed reloads the master reports (0 after a success).
  returned: when the master CLI answers
  type: int
version:
  description: HAProxy's version.
  returned: when the master CLI answers
  type: str
  sample: 3.0.11-1+deb13u5
restored_runtime_map_entries:
  description:
    - Runtime map values the new worker did not serve after the reload and that were set back on it.
    - Empty when the staged map files did their job; anything here was changed without the lock during
      the reload.
  returned: when reloaded
  type: list
  elements: dict
  sample: [{"map": "/etc/haproxy/maps/bluegreen.map", "key": "active", "value": "backend_green", "file_value": "backend_blue"}]
staged_map_files:
  description:
    - The map files whose runtime values differed from the file, which the new worker loaded from a
      staged copy of the file (then put back). In check mode, those that would be staged.
    - C(entries) lists each differing key with its C(runtime_value) and C(disk_value) (V(null) when the
      key is absent on that side).
  returned: when reloaded
  type: list
  elements: dict
  sample: [{"map": "/etc/haproxy/maps/bluegreen.map", "backup": "/etc/haproxy/maps/.bluegreen.map.before-reload",
            "entries": [{"key": "active", "runtime_value": "backend_green", "disk_value": "backend_blue"}]}]
recovered_reload:
  description:
    - Locks left by an earlier run of this module that died, with the map files put back from their
      backups (C(lock_path), C(holder), C(restored_map_files)).
  returned: when O(state=reloaded), and with O(state=started)
  type: list
  elements: dict
added_map_entries:
  description: Keys of O(preserve_maps) files added to the running maps (new services).
  returned: when O(state=started)
  type: list
  elements: dict
  sample: [{"map": "/etc/haproxy/maps/hosts.map", "key": "new.example.com", "value": "backend_new_blue"}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import MapFileError
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import RuntimeAPIError
from ansible_collections.bluegreen.haproxy.plugins.module_utils.service import HAProxyService, ServiceError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["started", "reloaded"], default="started"),
            master_socket=dict(type="path", default="/run/haproxy-master.sock"),
            config=dict(type="path", default="/etc/haproxy/haproxy.cfg"),
            binary=dict(type="path", default="/usr/sbin/haproxy"),
            pidfile=dict(type="path", default="/run/haproxy.pid"),
            service_name=dict(type="str", default="haproxy"),
            manager=dict(type="str", choices=["auto", "systemd", "direct"], default="auto"),
            preserve_maps=dict(type="list", elements="path", default=[]),
            timeout=dict(type="float", default=30),
            release_lock_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    service = HAProxyService(binary=params["binary"], config=params["config"], master_socket=params["master_socket"],
                             pidfile=params["pidfile"], service_name=params["service_name"],
                             manager=params["manager"], preserve_maps=params["preserve_maps"],
                             timeout=params["timeout"], release_lock_path=params["release_lock_path"], module=module)
    try:
        if params["state"] == "reloaded":
            result = service.reload(module.check_mode)
        else:
            recovered = service.recover_abandoned(module.check_mode)
            result = service.ensure_started(module.check_mode)
            result["added_map_entries"], recovered_later = service.add_missing_keys(module.check_mode)
            result["recovered_reload"] = recovered + result.get("recovered_reload", []) + recovered_later
            result["changed"] = result["changed"] or bool(result["recovered_reload"])
            result["changed"] = result["changed"] or bool(result["added_map_entries"])
    except ServiceError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except (RuntimeAPIError, MapFileError, OSError) as exc:
        module.fail_json(msg="%s: %s" % (type(exc).__name__, exc))
    # Through module.warn: a `warnings` key in the result is deprecated (removed in ansible-core 2.23).
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
