"""The host-to-host transfer trusts only what it must (issue 15).

- the lines it writes: the transfer key's authorized_keys line, the sender's known_hosts;
- those lines against the real rrsync (what the key can and cannot do);
- the arms_transfer role itself, sender and receiver on this machine (local connections), the
  rsync going through a private sshd on a loopback address: a fresh key, its host key checked, keys
  and files a killed run left removed, a folder name that is shell code kept a name.
The sshd part needs root, /usr/sbin/sshd and rsync; it is skipped otherwise. It is not the lab: it
touches no lab user and no lab port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.arms_transfer import (
    TransferError,
    authorized_line,
    client_address,
    known_hosts_lines,
    probe_line,
)

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(ROOT / ".venv" / "bin" / "ansible-playbook")
RRSYNC = "/usr/bin/rrsync"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGGLlbhNxgyHrmzvkB7C/UxIJNZgHOKreFVyHsLQ2irr"
HOSTILE = "top $(touch PWNED) 'x\"y"  # an arm name that is shell code, with both quotes

need_rsync = pytest.mark.skipif(
    not (shutil.which("rsync") and os.path.exists(RRSYNC)), reason="rsync and /usr/bin/rrsync are needed"
)


# --- the lines ------------------------------------------------------------------------------------


def test_the_authorized_line_is_write_only_no_delete_munged_and_bound_to_the_sender() -> None:
    line = authorized_line(
        KEY + " arms-transfer-top", "10.0.0.5", "/home/u/.cache/nanochat/base_data", "arms-transfer-top"
    )
    assert line == (
        'restrict,from="10.0.0.5",command="/usr/bin/rrsync -wo -no-del -munge /home/u/.cache/nanochat/base_data" '
        f"{KEY} arms-transfer-top"
    )
    assert probe_line(KEY, "arms-transfer-top") == f'restrict,command="echo $SSH_CLIENT" {KEY} arms-transfer-top'


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ((KEY, "not-an-ip", "/d", "arms-transfer-top"), "not an IP address"),
        ((KEY, "10.0.0.5", "relative/dir", "arms-transfer-top"), "not an absolute path"),
        ((KEY, "10.0.0.5", "/d\nssh-ed25519 AAAA evil", "arms-transfer-top"), "not an absolute path on one line"),
        (("garbage", "10.0.0.5", "/d", "arms-transfer-top"), "not an OpenSSH public key"),
        ((KEY, "10.0.0.5", "/d", "arms-transfer-top x"), "is not arms-transfer-"),
    ],
)
def test_values_the_line_cannot_hold_are_refused(args: tuple[str, ...], said: str) -> None:
    with pytest.raises(TransferError, match=said):
        authorized_line(*args)


def test_known_hosts_name_the_receivers_address_and_port_and_only_its_keys() -> None:
    keys = [KEY + " root@receiver", "", "ecdsa-sha2-nistp256 AAAAE2VjZHNh= c"]
    assert known_hosts_lines(keys, "127.0.0.3", 2222) == [
        "[127.0.0.3]:2222 ecdsa-sha2-nistp256 AAAAE2VjZHNh=",
        f"[127.0.0.3]:2222 {KEY}",
    ]
    assert known_hosts_lines([KEY], "gpu-a.example", "22") == [f"gpu-a.example {KEY}"]
    with pytest.raises(TransferError, match="no host key of the receiver"):
        known_hosts_lines([], "10.0.0.3", 22)
    with pytest.raises(TransferError, match="not a host name"):
        known_hosts_lines([KEY], "a b", 22)


def test_the_senders_address_is_read_from_ssh_client() -> None:
    assert client_address("10.0.0.5 50022 22\n") == "10.0.0.5"
    assert client_address("Welcome!\n::1 4000 22") == "::1"
    with pytest.raises(TransferError):
        client_address("")
    with pytest.raises(TransferError):
        client_address("$(id) 1 2")


# --- the line against the real rrsync ----------------------------------------------------------------


def forced_command(line: str) -> str:
    """The command= value of an authorized_keys line, as sshd reads it (only \\" is an escape)."""
    start = line.index('command="') + len('command="')
    out, i = [], start
    while line[i] != '"':
        if line[i] == "\\" and line[i + 1] == '"':
            i += 1
        out.append(line[i])
        i += 1
    return "".join(out)


def fake_ssh(tmp_path: Path, line: str) -> Path:
    """An `rsync -e` stand-in that runs the line's forced command as sshd would: the shell, SSH_ORIGINAL_COMMAND."""
    script = tmp_path / "fake-ssh"
    script.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do case "$1" in -l|-p|-i|-o) shift 2;; -*) shift;; *) break;; esac; done\n'
        "shift\n"  # the host
        'export SSH_ORIGINAL_COMMAND="$*"\n'
        f"exec /bin/sh -c {shlex_quote(forced_command(line))}\n"
    )
    script.chmod(0o755)
    return script


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


@need_rsync
def test_the_key_writes_into_its_folder_and_can_neither_read_nor_delete(tmp_path: Path) -> None:
    dest = tmp_path / HOSTILE
    dest.mkdir()
    (dest / "stale.parquet").write_text("stays: the receiver's own task removes it")
    src = tmp_path / "src"
    src.mkdir()
    (src / "shard_00000.parquet").write_text("data")
    (src / "escape").symlink_to("/etc/passwd")
    ssh = fake_ssh(tmp_path, authorized_line(KEY, "10.0.0.5", str(dest), "arms-transfer-top"))

    def rsync(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["rsync", "-e", str(ssh), *args], cwd=tmp_path, capture_output=True, text=True)

    sent = rsync("-a", "--partial-dir=.tmp-partial", "src/", "u@receiver:")
    assert sent.returncode == 0, sent.stderr
    assert (dest / "shard_00000.parquet").read_text() == "data"
    assert not os.path.exists(os.path.realpath(dest / "escape")), "a symlink must not point out of the folder"
    assert not (tmp_path / "PWNED").exists()
    deleted = rsync("-a", "--delete", "src/", "u@receiver:")
    assert deleted.returncode != 0 and "--delete has been disabled" in deleted.stderr
    assert (dest / "stale.parquet").exists()
    pulled = rsync("-a", "u@receiver:shard_00000.parquet", str(tmp_path / "pulled"))
    assert pulled.returncode != 0 and "write-only" in pulled.stderr
    outside = rsync("-a", "src/", "u@receiver:../elsewhere")
    assert outside.returncode != 0 or not (tmp_path / "elsewhere").exists()


# --- transfer.yml through a private sshd -------------------------------------------------------------


ADDR = "127.0.0.77"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ADDR, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd") or not shutil.which("rsync"):
        pytest.skip("needs root, /usr/sbin/sshd and rsync (a private sshd on a loopback address)")
    if not os.path.exists(RRSYNC):
        pytest.skip("needs /usr/bin/rrsync (Debian's rsync package)")
    base = tmp_path_factory.mktemp("sshd")
    system_key = Path("/etc/ssh/ssh_host_ed25519_key")
    if system_key.exists() and Path(str(system_key) + ".pub").exists():
        host_key = system_key  # the receiver's keys are then read from /etc/ssh, as on a real machine
    else:
        host_key = base / "host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        f"ListenAddress {ADDR}:{port}\nHostKey {host_key}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    subprocess.run(["/usr/sbin/sshd", "-f", str(config)], check=True)
    deadline = time.monotonic() + 10
    while not (base / "sshd.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int((base / "sshd.pid").read_text())
    try:
        yield {
            "base": str(base),
            "port": str(port),
            "authorized_keys": str(base / "authorized_keys"),
            "host_key_pub": Path(str(host_key) + ".pub").read_text().strip(),
            "system": str(host_key == system_key),
        }
    finally:
        os.kill(pid, 15)


def run_transfer(tmp_path: Path, sshd: dict[str, str], arm: str, **extra: object) -> subprocess.CompletedProcess[str]:
    inventory = {"all": {"vars": {"ansible_connection": "local"}, "hosts": {"cpu": {}, "gpu": {}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    play = [
        {
            "name": "A folder goes from cpu to gpu",
            "hosts": "gpu",
            "gather_facts": True,
            "gather_subset": ["min"],
            "tasks": [
                {
                    "name": "The folder is sent",
                    "ansible.builtin.include_role": {"name": "arms_transfer"},
                    "vars": {
                        "arms_transfer_sender": "cpu",
                        "arms_transfer_src": f"{tmp_path}/cpu/{arm}",
                        "arms_transfer_dest": f"{tmp_path}/gpu/{arm}",
                        "arms_transfer_label": "test shards",
                        "arms_transfer_keydir": str(tmp_path / "cpu"),
                        "arms_transfer_keyname": "transfer-gpu",
                        "arms_transfer_log": str(tmp_path / "cpu" / "transfer.log"),
                        "arms_transfer_user": "root",
                        "arms_transfer_addr": ADDR,
                        "arms_transfer_port": sshd["port"],
                        "arms_transfer_authorized_keys": sshd["authorized_keys"],
                    },
                }
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    extra_vars = tmp_path / "extra.yml"
    extra_vars.write_text(yaml.safe_dump({"ansible_python_interpreter": "{{ ansible_playbook_python }}", **extra}))
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(tmp_path / "hosts.yml"), "-e", f"@{extra_vars}", str(tmp_path / "play.yml")],
        cwd=tmp_path,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_transfer_checks_the_receiver_and_leaves_no_trust_behind(tmp_path: Path, sshd: dict[str, str]) -> None:
    src, dest = tmp_path / "cpu" / HOSTILE, tmp_path / "gpu" / HOSTILE
    src.mkdir(parents=True)
    dest.mkdir(parents=True)
    (src / "shard_00000.parquet").write_text("zero")
    (src / "manifest.json").write_text("{}")
    (dest / "shard_00099.parquet").write_text("a shard the sender no longer has")
    (dest / ".tmp-partial").mkdir()  # rsync's partial files: not data, kept to resume
    # what a killed run left: a key on the sender, a line on the receiver
    (tmp_path / "cpu" / "transfer-gpu").write_text("an old private key")
    Path(sshd["authorized_keys"]).write_text(f"{KEY} someone-else\nrestrict {KEY} arms-transfer-gpu\n")
    keys = {} if sshd["system"] == "True" else {"arms_ssh_host_keys": [sshd["host_key_pub"]]}
    first = run_transfer(tmp_path, sshd, HOSTILE, **keys)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert sorted(os.listdir(dest)) == [".tmp-partial", "manifest.json", "shard_00000.parquet"]
    assert (dest / "shard_00000.parquet").read_text() == "zero"
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "cpu" / "PWNED").exists()
    # no trust left: only the user's own key, no transfer key or known_hosts on the sender
    assert Path(sshd["authorized_keys"]).read_text() == f"{KEY} someone-else\n"
    assert sorted(os.listdir(tmp_path / "cpu")) == [HOSTILE, "transfer.log"]
    # a second run sends nothing and changes nothing
    second = run_transfer(tmp_path, sshd, HOSTILE, **keys)
    assert second.returncode == 0 and "changed=0" in second.stdout, second.stdout[-2000:]


def test_a_receiver_showing_another_host_key_gets_nothing(tmp_path: Path, sshd: dict[str, str]) -> None:
    (tmp_path / "cpu" / "arm").mkdir(parents=True)
    (tmp_path / "cpu" / "arm" / "shard_00000.parquet").write_text("zero")
    Path(sshd["authorized_keys"]).write_text("")
    proc = run_transfer(tmp_path, sshd, "arm", arms_ssh_host_keys=[KEY + " not-the-receiver"])
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert "Host key verification failed" in out and "shows another host key than gpu shows Ansible" in out
    assert not (tmp_path / "gpu" / "arm" / "shard_00000.parquet").exists()
    assert Path(sshd["authorized_keys"]).read_text() == ""
    assert sorted(os.listdir(tmp_path / "cpu")) == ["arm"]


def test_several_folders_go_in_one_transfer_and_only_what_differs_is_sent(tmp_path: Path, sshd: dict[str, str]) -> None:
    # the GPU phase sends the tokenizer, the val shard and an arm's shards in one transfer: one key per
    # folder (each writes into its own folder only), one login to learn the address, one rsync job
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    for name, files in {"tok": {"tokenizer.pkl": "tok"}, "val": {"shard_val.parquet": "val"}}.items():
        (cpu / name).mkdir(parents=True)
        for f, text in files.items():
            (cpu / name / f).write_text(text)
    (gpu / "val").mkdir(parents=True)
    shutil.copy2(cpu / "val" / "shard_val.parquet", gpu / "val" / "shard_val.parquet")  # already there
    Path(sshd["authorized_keys"]).write_text(f"{KEY} someone-else\n")
    keys = {} if sshd["system"] == "True" else {"arms_ssh_host_keys": [sshd["host_key_pub"]]}
    items = [{"src": str(cpu / n), "dest": str(gpu / n)} for n in ("tok", "val")]
    first = run_transfer(tmp_path, sshd, "unused", arms_transfer_items=items, **keys)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert (gpu / "tok" / "tokenizer.pkl").read_text() == "tok"
    assert (gpu / "val" / "shard_val.parquet").read_text() == "val"
    # only the tokenizer folder was sent: rsync's statistics in the job's log name one file, one run
    log = (cpu / "transfer.log").read_text()
    assert log.count("Number of regular files transferred: 1") == 1, log
    assert Path(sshd["authorized_keys"]).read_text() == f"{KEY} someone-else\n"
    assert sorted(os.listdir(cpu)) == ["tok", "transfer.log", "val"]
    second = run_transfer(tmp_path, sshd, "unused", arms_transfer_items=items, **keys)
    assert second.returncode == 0 and "changed=0" in second.stdout, second.stdout[-2000:]
    assert "Files are sent" not in second.stdout  # nothing started: no key, no rsync


def test_a_folder_missing_on_the_sender_is_named_and_nothing_is_authorised(
    tmp_path: Path, sshd: dict[str, str]
) -> None:
    (tmp_path / "cpu").mkdir()
    Path(sshd["authorized_keys"]).write_text("")
    proc = run_transfer(tmp_path, sshd, "gone")
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert f"the folder {tmp_path}/cpu/gone to send (test shards) is not on the sender" in out
    assert Path(sshd["authorized_keys"]).read_text() == ""
    assert os.listdir(tmp_path / "cpu") == []


def test_listing_ignores_temporary_names_and_the_verification_cache(tmp_path: Path) -> None:
    from ansible.module_utils.arms_transfer import compare_folders, list_files

    (tmp_path / ".tmp-partial").mkdir()
    (tmp_path / ".tmp-partial" / "shard_00001.parquet").write_text("partial")
    (tmp_path / ".tmp-x.part").write_text("partial")
    (tmp_path / ".manifest-verified.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a").write_text("abc")
    (tmp_path / "link").symlink_to(tmp_path / "sub" / "a")
    listed = list_files(str(tmp_path))
    assert sorted(listed) == ["sub/a"] and listed["sub/a"][0] == 3
    # same size and whole second: in sync; the receiver's extra file is stale; an empty sender empties nothing
    assert compare_folders(listed, {**listed, "old": [1, 1]}) == {"in_sync": True, "stale": ["old"]}
    assert compare_folders(listed, {"sub/a": [3, listed["sub/a"][1] + 1]})["in_sync"] is False
    assert compare_folders({}, {"old": [1, 1]}) == {"in_sync": True, "stale": []}
