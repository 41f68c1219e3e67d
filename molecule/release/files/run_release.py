"""Run one of the collection's release playbooks against the scenario's inventory.

Called by verify.yml on the controller (with the Python that runs Ansible), so every proof
runs the real playbook as a release owner or AWX would, and asserts on what it reports.
Prints one JSON object:

  rc            exit status of ansible-playbook (runner mode: of the runner job)
  failure       the message of "Fail the run with the reason" (empty when the run passed)
  failure_hosts hosts that reached that task and failed it
  summary       the fleet summary (REPORT | collect the fleet summary)
  switch_hosts  hosts on which the SWITCH task ran (not skipped)
  failed_tasks  [{task, host, msg}] of every failed task (ignored ones too), for debugging
  artifacts     (runner mode) artifact_data of the playbook_on_stats event (set_stats)
  status        (runner mode) the runner's status, e.g. "successful"
  log           where the full output of the run was written
  seconds       how long the run took

  run_release.py --inventory DIR --playbook cutover.yml [--extra-vars JSON] [--log FILE] [--runner]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time

SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(SCENARIO))
PLAYBOOKS = os.path.join(REPO, "playbooks")


def collections_path():
    """This checkout (.collections) first, then whatever the caller has, then the
    `ansible` package's collections (ansible.posix for the json callback)."""
    parts = [os.path.join(REPO, ".collections")]
    parts += [p for p in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p]
    parts.append(sysconfig.get_paths()["purelib"])
    seen = []
    for part in parts:
        if part not in seen:
            seen.append(part)
    return os.pathsep.join(seen)


def base_env():
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=collections_path(),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="false",
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_PIPELINING=os.environ.get("ANSIBLE_PIPELINING", "True"),
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    return env


def results_of(report, name_part):
    """{host: result} of the tasks whose name contains name_part (the last one wins)."""
    found = {}
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            if name_part in task["task"]["name"]:
                found.update(task["hosts"])
    return found


def digest(report):
    fail = results_of(report, "Fail the run with the reason")
    failed_hosts = sorted(host for host, result in fail.items() if result.get("failed"))
    summary_results = results_of(report, "REPORT | collect the fleet summary")
    summary = {}
    for result in summary_results.values():
        summary = result.get("ansible_facts", {}).get("release_summary", summary)
    switch = results_of(report, "SWITCH | move")
    failed_tasks = []
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task["hosts"].items():
                if result.get("failed"):
                    failed_tasks.append({"task": task["task"]["name"], "host": host,
                                         "msg": str(result.get("msg", ""))[:600]})
    return {
        "failure": fail[failed_hosts[0]]["msg"] if failed_hosts else "",
        "failure_hosts": failed_hosts,
        "summary": summary,
        "switch_hosts": sorted(host for host, result in switch.items() if not result.get("skipped")),
        "failed_tasks": failed_tasks,
        "stats": report.get("stats", {}),
    }


def run_playbook(args, playbook, extra_vars, log):
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
               "-i", args.inventory, playbook, "-e", json.dumps(extra_vars)]
    env = base_env()
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    # Other callbacks the caller enabled (profile_tasks...) would print into the JSON.
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    completed = subprocess.run(command, env=env, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True, check=False)
    with open(log, "w") as handle:
        handle.write("$ %s\n\n%s\n--- stderr ---\n%s" % (" ".join(command), completed.stdout, completed.stderr))
    try:
        report = json.JSONDecoder().raw_decode(completed.stdout[completed.stdout.find("{"):])[0]
    except ValueError:
        return {"rc": completed.returncode, "error": "ansible-playbook printed no JSON",
                "stderr": completed.stderr[-3000:], "stdout": completed.stdout[-3000:]}
    result = {"rc": completed.returncode}
    result.update(digest(report))
    return result


def run_runner(args, playbook, extra_vars, log):
    import ansible_runner  # the engine AWX uses; installed in the venv

    env = base_env()
    private = tempfile.mkdtemp(prefix="bluegreen-runner-")
    run = ansible_runner.run(
        private_data_dir=private,
        playbook=playbook,
        inventory=os.path.abspath(args.inventory),
        extravars=extra_vars,
        envvars={key: env[key] for key in ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH",
                                           "ANSIBLE_NOCOLOR", "ANSIBLE_FORCE_COLOR", "ANSIBLE_PIPELINING", "PATH")},
        quiet=True,
    )
    stdout = run.stdout.read()
    with open(log, "w") as handle:
        handle.write("ansible-runner, private data dir %s\n\n%s" % (private, stdout))
    events = list(run.events)
    stats = [event for event in events if event.get("event") == "playbook_on_stats"]
    fail = [event for event in events
            if event.get("event") == "runner_on_failed"
            and "Fail the run with the reason" in event.get("event_data", {}).get("task", "")]
    return {
        "rc": run.rc,
        "status": run.status,
        "artifacts": stats[-1]["event_data"].get("artifact_data", {}) if stats else None,
        "stats_events": len(stats),
        "failure": fail[0]["event_data"]["res"].get("msg", "") if fail else "",
        "private_data_dir": private,
        "events": len(events),
        "stdout_tail": stdout[-2000:] if run.rc else "",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--playbook", required=True, help="file name under playbooks/")
    parser.add_argument("--extra-vars", default="{}")
    parser.add_argument("--log", default="")
    parser.add_argument("--runner", action="store_true", help="run through ansible_runner.run()")
    args = parser.parse_args()

    playbook = os.path.join(PLAYBOOKS, args.playbook)
    extra_vars = json.loads(args.extra_vars)
    log = args.log or tempfile.mkstemp(prefix="bluegreen-%s-" % args.playbook, suffix=".log")[1]
    started = time.monotonic()
    result = (run_runner if args.runner else run_playbook)(args, playbook, extra_vars, log)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["log"] = log
    result["playbook"] = "playbooks/" + args.playbook
    result["extra_vars"] = extra_vars
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
