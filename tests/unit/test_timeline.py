"""The idle-time report of site.yml: what each GPU host's time before training went to."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from playtest import LOCALHOST, ansible_playbook

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("arms_timeline", ROOT / "plugins" / "callback" / "arms_timeline.py")
assert spec and spec.loader
timeline_mod = importlib.util.module_from_spec(spec)
sys.modules["arms_timeline"] = timeline_mod  # dataclasses look their module up there
spec.loader.exec_module(timeline_mod)
Timeline = timeline_mod.Timeline
category = timeline_mod.category

PLAY_HEAD = "- name: A run\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"


def run_with_timeline(tmp_path: Path, tasks: str) -> tuple[Any, Path]:
    """One play of these tasks on localhost, run in tmp_path (its roles/ and library/) with the arms_timeline
    callback on: its output and the JSON the callback wrote."""
    (tmp_path / "site.yml").write_text(PLAY_HEAD + textwrap.indent(textwrap.dedent(tasks), "    "))
    out = tmp_path / "timeline.json"
    env = dict(os.environ)
    env.update(
        ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "plugins" / "callback"),
        ANSIBLE_CALLBACKS_ENABLED="arms_timeline",
        ANSIBLE_ROLES_PATH=str(tmp_path / "roles"),
        ANSIBLE_LIBRARY=str(tmp_path / "library"),
        ARMS_TIMELINE_FILE=str(out),
    )
    env.pop("ANSIBLE_CONFIG", None)
    proc = ansible_playbook(
        [*LOCALHOST, "-e", f"ansible_python_interpreter={sys.executable}", "site.yml"], cwd=tmp_path, env=env
    )
    return proc, out


def test_tasks_are_put_under_what_they_were_for() -> None:
    assert category("ansible.builtin.command", "nanochat_venv", ["deps"], {}) == "setup"
    assert category("nanochat_job", None, ["download"], {}) == "data"
    assert category("ansible.builtin.command", None, ["transfer", "always"], {}) == "data"
    assert category("nanochat_preflight", None, ["preflight"], {}) == "preflight"
    assert category("nanochat_train", None, ["train"], {}) == "launch"
    # status and stop read or end a run: not a launch
    assert category("nanochat_train", None, ["status"], {"state": "status"}) == "checks"
    assert category("nanochat_train", None, ["stop"], {"state": "stopped"}) == "checks"
    # a host's facts are what its setup reads (user dir, Python, OS); the input checks are checks
    assert category("ansible.builtin.setup", None, ["always"], {}) == "setup"
    assert category("ansible.builtin.assert", None, ["always"], {}) == "checks"
    # the task that includes a role is that role's: the venv's install started where its tags say deps
    assert category("ansible.builtin.include_role", None, ["deps"], {"name": "nanochat_venv"}) == "setup"
    assert category("ansible.builtin.include_role", None, ["download"], {"name": "arms_data"}) == "data"


def test_a_hosts_time_is_split_into_its_busy_spans_and_the_waiting_left_over() -> None:
    t = Timeline()
    spans = [  # host, task, category, start, end
        ("top", "inputs", "checks", 100.0, 102.0),
        ("top", "venv", "setup", 105.0, 165.0),
        ("top", "download-wait", "data", 165.0, 175.0),
        ("top", "preflight", "preflight", 190.0, 195.0),
        ("random", "inputs", "checks", 100.0, 103.4),
        ("random", "venv", "setup", 105.0, 185.0),
        ("random", "preflight", "preflight", 190.0, 197.0),
    ]
    for host, task, cat, start, end in spans:
        t.start(host, task, start)
        t.end(host, task, cat, end, "ok")
    # plays start at 104, 188 and 199: a host idle before then waited for the other host as long as that one
    # was still at work, and after that for Ansible to get its next task going, which counts with that task
    for when in (104.0, 188.0, 199.0):
        t.barrier(when)
    t.start("top", "launch", 200.0)
    t.end("top", "launch", "launch", 230.0, "ok", {"changed": True})
    t.start("top", "status", 231.0)  # after the first step line: not part of the time before training
    t.end("top", "status", "checks", 233.0, "ok")
    t.start("random", "launch", 200.0)
    t.end("random", "launch", "launch", 228.0, "ok", {"changed": False})
    t.start("random", "skipped", 229.0)
    t.end("random", "skipped", "data", 240.0, "skipped")  # a skipped task took no host time

    rows = {r["host"]: r for r in t.report()}
    top = rows["top"]
    assert top["total_s"] == 130.0  # reached at 100, first step line at 230
    # setup 103.4-165; preflight 185-195; launch 197-230
    assert top["seconds"] == {"setup": 61.6, "data": 10.0, "preflight": 10.0, "launch": 33.0, "checks": 2.0}
    assert top["waiting_s"] == 13.4  # 102-103.4, 175-185, 195-197: the random host's inputs, venv, preflight
    assert "top: reached" in top["line"] and "(2m10s)" in top["line"]
    assert "setup 1m02s, data 10s, preflight 10s, launch 33s, checks 2s, waiting on other hosts 13s" in top["line"]
    # an arm that was already training: nothing was waited for, and the line says so
    assert rows["random"]["first_step"] is None
    assert "already running or finished before this run" in rows["random"]["line"]


def test_a_failed_launch_is_reported_with_the_time_spent_until_it_failed() -> None:
    t = Timeline()
    t.start("top", "venv", 0.0)
    t.end("top", "venv", "setup", 50.0, "ok")
    t.start("random", "venv", 0.0)
    t.end("random", "venv", "setup", 55.0, "ok")
    t.barrier(57.0)
    t.start("top", "launch", 60.0)
    t.end("top", "launch", "launch", 660.0, "failed")
    (row,) = t.report()
    assert "NO first step line in this run (its launch failed)" in row["line"]
    # 50-55: waiting on the random host; 55-60: Ansible getting the launch going
    assert row["total_s"] == 660.0 and row["waiting_s"] == 5.0 and row["seconds"]["launch"] == 605.0


def test_a_hosts_own_gaps_with_no_other_host_at_work_are_not_waiting() -> None:
    """One GPU host: between its plays (a barrier) nobody else was at work, so the gap is its next task's."""
    t = Timeline()
    t.start("top", "venv", 0.0)
    t.end("top", "venv", "setup", 10.0, "ok")
    t.barrier(10.5)
    t.start("top", "launch", 11.0)
    t.end("top", "launch", "launch", 20.0, "ok", {"changed": True})
    (row,) = t.report()
    assert row["waiting_s"] == 0.0 and row["seconds"]["launch"] == 10.0 and "waiting on other hosts 0s" in row["line"]


def test_a_run_that_launches_nothing_prints_no_report() -> None:
    t = Timeline()
    t.start("top", "status", 0.0)
    t.end("top", "status", "checks", 1.0, "ok")
    assert t.report() == []


def test_the_callback_reports_a_real_playbook_run_and_writes_the_json(tmp_path: Path) -> None:
    """ansible-playbook on localhost with the project's callbacks: the role, tag and launch rules seen live."""
    (tmp_path / "roles" / "uv" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "uv" / "tasks" / "main.yml").write_text(
        "- name: Setup work\n  ansible.builtin.command: sleep 1.2\n  changed_when: false\n"
    )
    (tmp_path / "library").mkdir()
    # a stand-in launch module named like the real one (the real one needs a nanochat checkout)
    (tmp_path / "library" / "nanochat_train.py").write_text(
        textwrap.dedent(
            """\
            #!/usr/bin/python
            import time
            from ansible.module_utils.basic import AnsibleModule
            m = AnsibleModule(argument_spec={"state": {"type": "str", "default": "started"}})
            time.sleep(0.6)
            m.exit_json(changed=m.params["state"] == "started")
            """
        )
    )
    tasks = """\
                - name: Setup role
                  ansible.builtin.import_role:
                    name: uv
                - name: Data wait
                  ansible.builtin.command: sleep 0.8
                  changed_when: false
                  tags: [download]
                - name: Launch
                  nanochat_train: {}
                - name: Status (not a launch; its state comes from a variable, as in the arms_run role)
                  nanochat_train:
                    state: "{{ action }}"
                  vars:
                    action: status
            """
    proc, out = run_with_timeline(tmp_path, tasks)
    assert "GPU time before training, per host" in proc.stdout
    (row,) = json.loads(out.read_text())["hosts"]
    assert row["host"] == "localhost" and row["launch"] == "launched"
    assert row["seconds"]["setup"] >= 1.2 and row["seconds"]["data"] >= 0.8 and row["seconds"]["launch"] >= 0.6
    busy = row["seconds"]["setup"] + row["seconds"]["data"] + row["seconds"]["launch"]
    assert row["total_s"] >= busy - 0.2  # each figure is rounded to 0.1 s
    assert "localhost: reached" in proc.stdout and "first step" in proc.stdout


def test_a_background_setup_job_counts_as_setup_for_as_long_as_it_ran() -> None:
    """The venv installing in the background (arms_overlap_setup) while the data's steps run: both count."""
    t = Timeline()
    t.start("top", "facts", 100.0)
    t.end("top", "facts", "checks", 101.0, "ok")
    t.start("top", "venv-start", 101.0)  # poll 0: the job is started and the task returns
    t.end("top", "venv-start", "setup", 102.0, "ok", {"ansible_job_id": "j1.2", "started": 1, "finished": 0})
    t.start("top", "transfer", 102.0)
    t.end("top", "transfer", "data", 110.0, "ok")
    t.start("top", "venv-end", 110.0)  # async_status: the command ran 15 s, so it ended at 116
    t.end("top", "venv-end", "setup", 117.0, "ok", {"ansible_job_id": "j1.2", "finished": 1, "delta": "0:00:15.000000"})
    t.start("top", "launch", 117.0)
    t.end("top", "launch", "launch", 127.0, "ok", {"changed": True})

    (row,) = t.report()
    assert row["total_s"] == 27.0
    # setup: 101-117 (its own tasks and the job from 101 to 116); data: 102-110, all of it while the job ran
    assert row["seconds"]["setup"] == 16.0 and row["seconds"]["data"] == 8.0
    assert row["overlapped_s"] == 8.0 and row["waiting_s"] == 0.0
    assert "setup 16s, data 8s, launch 10s, checks 1s (8s of them at once), waiting on other hosts 0s" in row["line"]


def test_a_job_ended_in_the_same_task_or_never_started_here_adds_nothing() -> None:
    t = Timeline()
    t.start("top", "venv", 0.0)  # a synchronous install: no job id, its span only
    t.end("top", "venv", "setup", 20.0, "ok", {"delta": "0:00:19.000000"})
    t.start("top", "wait", 20.0)  # an async_status of a job this run did not see start
    t.end("top", "wait", "setup", 21.0, "ok", {"ansible_job_id": "x", "finished": 1, "delta": "1:00:00.0"})
    t.start("top", "launch", 21.0)
    t.end("top", "launch", "launch", 30.0, "ok", {"changed": True})
    (row,) = t.report()
    assert row["seconds"]["setup"] == 21.0 and row["overlapped_s"] == 0.0 and row["total_s"] == 30.0


def test_the_callback_counts_a_real_background_install_under_setup(tmp_path: Path) -> None:
    """Real Ansible async: a setup command started with poll 0, the data's step meanwhile, async_status after."""
    (tmp_path / "roles" / "nanochat_venv" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "nanochat_venv" / "tasks" / "main.yml").write_text(
        textwrap.dedent(
            """\
            - name: Install starts
              ansible.builtin.command: sleep 4
              async: 60
              poll: 0
              changed_when: false
              register: install
            """
        )
    )
    (tmp_path / "roles" / "nanochat_venv" / "tasks" / "check.yml").write_text(
        textwrap.dedent(
            """\
            - name: Install ends
              ansible.builtin.async_status:
                jid: "{{ install.ansible_job_id }}"
              register: job
              until: job.finished
              retries: 60
              delay: 1
            """
        )
    )
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "nanochat_train.py").write_text(
        "#!/usr/bin/python\nfrom ansible.module_utils.basic import AnsibleModule\n"
        "AnsibleModule(argument_spec={}).exit_json(changed=True)\n"
    )
    tasks = """\
                - name: Install starts
                  ansible.builtin.import_role:
                    name: nanochat_venv
                - name: Data step meanwhile
                  ansible.builtin.command: sleep 1.2
                  changed_when: false
                  tags: [transfer]
                - name: Install ends
                  ansible.builtin.import_role:
                    name: nanochat_venv
                    tasks_from: check.yml
                - name: Launch
                  nanochat_train: {}
            """
    proc, out = run_with_timeline(tmp_path, tasks)
    (row,) = json.loads(out.read_text())["hosts"]
    # the job's 4 s count as setup although only its start and its end were setup tasks (4 s: long enough to
    # cover the data step on a loaded machine)
    assert row["seconds"]["setup"] >= 4.0 and row["seconds"]["data"] >= 1.2
    assert row["overlapped_s"] >= 1.0 and "of them at once" in proc.stdout
    parts = sum(row["seconds"].values()) - row["overlapped_s"] + row["waiting_s"]
    assert abs(parts - row["total_s"]) <= 0.3  # each figure is rounded to 0.1 s


def test_a_host_waits_on_another_only_where_a_play_holds_it_for_the_slowest(tmp_path: Path) -> None:
    """Two hosts, one slow: in a linear play the fast one waits for it before the launch, in a free play not."""
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "nanochat_train.py").write_text(
        "#!/usr/bin/python\nfrom ansible.module_utils.basic import AnsibleModule\n"
        "AnsibleModule(argument_spec={}).exit_json(changed=True)\n"
    )
    (tmp_path / "hosts.ini").write_text(
        "".join(f"{h} ansible_connection=local ansible_python_interpreter={sys.executable}\n" for h in ("slow", "fast"))
    )
    waited = {}
    for strategy in ("linear", "free"):
        (tmp_path / "site.yml").write_text(
            textwrap.dedent(
                f"""\
                - name: Two hosts
                  hosts: all
                  gather_facts: false
                  strategy: {strategy}
                  tasks:
                    - name: Data, slow on one host
                      ansible.builtin.command: sleep {{{{ 2.5 if inventory_hostname == 'slow' else 0 }}}}
                      changed_when: false
                      tags: [download]
                    - name: Launch
                      nanochat_train: {{}}
                """
            )
        )
        out = tmp_path / f"timeline-{strategy}.json"
        env = dict(os.environ)
        env.update(
            ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "plugins" / "callback"),
            ANSIBLE_CALLBACKS_ENABLED="arms_timeline",
            ANSIBLE_LIBRARY=str(tmp_path / "library"),
            ARMS_TIMELINE_FILE=str(out),
        )
        env.pop("ANSIBLE_CONFIG", None)
        ansible_playbook(["-i", str(tmp_path / "hosts.ini"), "site.yml"], cwd=tmp_path, env=env)
        rows = {r["host"]: r for r in json.loads(out.read_text())["hosts"]}
        waited[strategy] = rows["fast"]["waiting_s"]
        assert rows["slow"]["waiting_s"] <= 0.5  # the slow host never waits for the fast one
    assert waited["linear"] >= 2.0, waited  # held at the launch's start until the slow host's data was done
    assert waited["free"] <= 0.5, waited  # went on to its launch at once
