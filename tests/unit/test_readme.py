"""The README stays true: its troubleshooting table, repair tags, playbook paths and the two commands."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import yaml
from ansible.module_utils.arms_logs import diagnose

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
LOGS_SOURCE = os.path.join(ROOT, "plugins", "module_utils", "arms_logs.py")

# torchrun's summary after a rank failed: a consequence, never the cause
TORCHRUN_FAILED = (
    "E0120 10:20:01.000000 4242 torch/distributed/elastic/multiprocessing/api.py:874] failed (exitcode: 1) "
    "local_rank: 0 (pid: 4250) of binary: /home/ubuntu/nanochat/.venv/bin/python3\n"
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
)
STEPS = (
    "Number of iterations: 20\n"
    "step 00000/00020 (0.00%) | loss: 10.397625 | lrm: 1.00 | dt: 812.00ms | tok/sec: 1,234 | mfu: 0.01 "
    "| total time: 0.00m\n"
    "Step 00010 | Validation bpb: 1.9876\n"
)

# finding id -> (a log that shows the signature, diagnose's keyword arguments)
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "missing_module": ("[rank0]: ModuleNotFoundError: No module named 'rustbpe'\n" + TORCHRUN_FAILED, {}),
    "not_in_checkout": (
        "/home/ubuntu/nanochat/.venv/bin/python3: Error while finding module specification for "
        "'scripts.base_train' (ModuleNotFoundError: No module named 'scripts')\n",
        {},
    ),
    "wandb_key_length": ("wandb: ERROR API key must be 40 characters long, yours was 86\n", {}),
    "wandb_no_key": ("[rank0]: wandb.errors.errors.UsageError: No API key configured. Use `wandb login`.\n", {}),
    "tf32_mixed_api": (
        "[rank0]: RuntimeError: PyTorch is checking whether allow_tf32_new is enabled for cuBlas matmul, "
        "Current status indicate that you have used mix of the legacy and new APIs to set the TF32 status\n",
        {},
    ),
    "cuda_oom": (
        "[rank3]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 3.00 GiB.\n" + TORCHRUN_FAILED,
        {"device_batch_size": 32},
    ),
    "nccl_timeout": (
        "[rank1]:[E120 10:41:12.000000000 ProcessGroupNCCL.cpp:616] [Rank 1] Watchdog caught collective "
        "operation timeout: WorkNCCL(SeqNum=1234, OpType=ALLREDUCE) ran for 600010 milliseconds\n",
        {},
    ),
    "nccl_error": ("[rank5]: ncclUnhandledCudaError: Call to CUDA function failed.\n", {}),
    "rendezvous": (
        "torch.distributed.DistNetworkError: The server socket has failed to listen on any local network "
        "address. port: 29500, useIpv6: false, code: -98, name: EADDRINUSE, message: address already in use\n",
        {},
    ),
    "crlf": ("/usr/bin/env: 'bash\\r': No such file or directory\n", {}),
    "hf_unauthenticated": (
        "Warning: You are sending unauthenticated requests to the HF Hub. Please set a HF_TOKEN.\n",
        {},
    ),
    "killed": (
        STEPS + "  traceback : Signal 9 (SIGKILL) received by PID 4250\n",
        {"process_gone": True},
    ),
    "died": (STEPS + "[rank0]: KeyError: 'bos'\n" + TORCHRUN_FAILED, {"process_gone": True}),
    "vanished": (STEPS, {"process_gone": True}),
}


def readme() -> str:
    with open(README, encoding="utf-8") as fh:
        return fh.read()


def section(title: str) -> str:
    """The text of the README's ``## title`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme(), re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def troubleshooting_rows() -> dict[str, str]:
    """Finding id (the first cell, in backticks) -> the whole table row."""
    rows: dict[str, str] = {}
    for line in section("Troubleshooting").splitlines():
        if m := re.match(r"\| `(\w+)`", line):
            rows[m.group(1)] = line
    return rows


def code_finding_ids() -> set[str]:
    """Every finding id arms_logs.diagnose can return, read from its source."""
    with open(LOGS_SOURCE, encoding="utf-8") as fh:
        return set(re.findall(r'_finding\(\s*"(\w+)"', fh.read()))


def playbook_tags(path: str, seen: set[str] | None = None) -> set[str]:
    """Tags a playbook's plays and roles carry, following import_playbook."""
    seen = set() if seen is None else seen
    path = os.path.normpath(path)
    if path in seen:
        return set()
    seen.add(path)
    with open(path, encoding="utf-8") as fh:
        plays = yaml.safe_load(fh) or []
    tags: set[str] = {"always", "all"}
    for play in plays:
        imported = play.get("ansible.builtin.import_playbook") or play.get("import_playbook")
        if imported:
            tags |= playbook_tags(os.path.join(os.path.dirname(path), imported), seen)
            continue
        tags |= set(play.get("tags") or [])
        for role in play.get("roles") or []:
            if isinstance(role, dict):
                tags |= set(role.get("tags") or [])
    return tags


def makefile_targets() -> set[str]:
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as fh:
        return set(re.findall(r"^([\w-]+):", fh.read(), re.MULTILINE))


def test_every_signature_the_code_knows_has_a_sample_here() -> None:
    # a new signature in arms_logs.diagnose fails here until it gets a sample and a README row
    assert code_finding_ids() == set(SAMPLES)


@pytest.mark.parametrize("fid", sorted(SAMPLES))
def test_every_diagnosis_is_in_the_troubleshooting_table(fid: str) -> None:
    log, kwargs = SAMPLES[fid]
    findings = diagnose(log, **kwargs)
    assert [f["id"] for f in findings] == [fid], "the sample log must show exactly this signature"
    rows = troubleshooting_rows()
    assert fid in rows, f"README's troubleshooting table has no row for `{fid}`"
    repair = findings[0]["repair"]
    if repair.startswith("ansible-playbook playbooks/repair.yml"):
        assert f"`{repair}`" in rows[fid]  # the exact command status.yml prints
    else:
        # restarts and the OOM fix: the README gives its own (working) command; it names the same playbooks
        for playbook in re.findall(r"playbooks/\w+\.yml", repair):
            assert playbook in rows[fid], f"the `{fid}` row does not name {playbook}"


def test_the_troubleshooting_table_has_no_stale_rows() -> None:
    assert set(troubleshooting_rows()) <= code_finding_ids()


def test_every_tags_option_names_a_tag_of_its_playbook() -> None:
    commands = re.findall(r"ansible-playbook (\S+\.yml)[^`\n]*?--tags ([\w,]+)", readme())
    assert commands, "README.md shows no --tags command"
    for playbook, tags in commands:
        known = playbook_tags(os.path.join(ROOT, playbook))
        for tag in tags.split(","):
            assert tag in known, f"{playbook} has no tag {tag!r} (it has {sorted(known)})"


def test_every_tags_mentioned_is_a_repair_tag() -> None:
    # prose such as "re-apply its edits: `--tags checkout,crlf,tf32`" is a repair too
    repair_tags = playbook_tags(os.path.join(ROOT, "playbooks", "repair.yml"))
    for tags in re.findall(r"--tags ([\w,]+)", readme()):
        unknown = sorted(set(tags.split(",")) - repair_tags)
        assert not unknown, f"--tags {tags}: {unknown} are not tags of playbooks/repair.yml"


def test_the_repair_tags_list_is_every_setup_role_tag() -> None:
    listed = re.search(r"^Tags: `([\w ]+)`", section("Repairs: one role at a time"), re.MULTILINE)
    assert listed, "the Repairs section lists no Tags"
    repair_tags = playbook_tags(os.path.join(ROOT, "playbooks", "repair.yml")) - {"always", "all"}
    assert set(listed.group(1).split()) == repair_tags


def test_every_playbook_path_in_the_readme_exists() -> None:
    paths = set(re.findall(r"playbooks/[\w/-]+\.yml", readme()))
    assert paths, "README.md names no playbook"
    missing = sorted(p for p in paths if not os.path.isfile(os.path.join(ROOT, p)))
    assert not missing, f"README.md names playbooks that do not exist: {missing}"


def test_the_two_commands_are_make_lab_and_make_test() -> None:
    named = re.findall(r"\bmake ([\w-]+)", section("The two commands"))
    assert sorted(set(named)) == ["lab", "test"]
    assert {"lab", "test"} <= makefile_targets()


def test_every_make_target_in_the_readme_exists() -> None:
    named = set(re.findall(r"\bmake ([\w-]+)", readme()))
    assert named <= makefile_targets(), f"not Makefile targets: {sorted(named - makefile_targets())}"
