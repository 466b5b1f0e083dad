"""The host-to-host transfer's trust: what the receiver authorises, what the sender trusts, who is stale.

``the arms_transfer role`` sends a folder from one host straight to another with rsync over
ssh, with a key made for that one transfer. The rules it needs are here, once (the
``arms_transfer_*`` filters of ``plugins/filter/arms_transfer.py`` call them; the unit tests run the
lines they make through the real sshd parsing rules and the real rrsync):

* the receiver authorises the key write-only, without delete, with symlinks munged, into one folder,
  and only from the address the sender's connections come from (``authorized_line``);
* the sender trusts only the receiver's own host keys, read through Ansible's verified connection to
  the receiver (``known_hosts_lines``), never whatever answers first;
* the address the receiver sees the sender at is measured, not guessed (NAT, loopback, proxies):
  the key is first authorised to print ``$SSH_CLIENT`` only (``probe_line``, ``client_address``).

Only the standard library is imported (the filter loads this file by its path on the controller).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
import re
import secrets
import shlex
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RRSYNC = "/usr/bin/rrsync"
KEY_COMMENT_PREFIX = "arms-transfer-"
_PUBKEY = re.compile(r"(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-\S+)\s+[A-Za-z0-9+/]+={0,3}")


class TransferError(ValueError):
    """A value the transfer cannot trust; the message is a sentence."""


def _public_key(text: str, what: str) -> str:
    """``type base64`` of an OpenSSH public key line (its comment dropped); TransferError otherwise."""
    match = _PUBKEY.match((text or "").strip())
    if not match:
        raise TransferError(f"{what} is not an OpenSSH public key line ('ssh-ed25519 AAAA...'): {text[:60]!r}")
    return " ".join(match.group(0).split())


def _address(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        raise TransferError(f"{what} {value!r} is not an IP address") from None


def client_address(ssh_client: str) -> str:
    """The sender's address as the receiver saw it: the first word of ``$SSH_CLIENT`` ("ADDR PORT PORT").

    The last line counts: a login banner a shell prints before it does not.
    """
    lines = [line for line in (ssh_client or "").splitlines() if line.strip()]
    words = lines[-1].split() if lines else []
    if len(words) != 3:
        raise TransferError(f"the receiver answered {ssh_client.strip()[:80]!r}, not '$SSH_CLIENT' (ADDR PORT PORT)")
    return _address(words[0], "the sender's address")


def rrsync_command(dest: str) -> str:
    """The forced command: rrsync write-only, no delete, symlinks munged, into ``dest`` alone."""
    if not dest.startswith("/") or any(c in dest for c in "\n\r\0"):
        raise TransferError(f"the receiving folder {dest!r} is not an absolute path on one line")
    return f"{RRSYNC} -wo -no-del -munge {shlex.quote(dest)}"


def _options_line(options: str, pubkey: str, comment: str) -> str:
    return f"{options} {pubkey} {comment}"


def _check_comment(comment: str) -> str:
    if not re.fullmatch(rf"{KEY_COMMENT_PREFIX}[A-Za-z0-9._-]+", comment or ""):
        raise TransferError(f"the key comment {comment!r} is not {KEY_COMMENT_PREFIX}<inventory name>")
    return comment


def authorized_line(pubkey: str, sender_address: str, dest: str, comment: str) -> str:
    """The authorized_keys line of the transfer key: ``restrict,from="ADDR",command="rrsync -wo -no-del -munge DIR"``.

    ``restrict`` takes away forwarding, a pty and ~/.ssh/rc; ``from`` accepts the key only from the
    sender's address; the forced command lets it only write files into ``dest`` (no reading, no
    ``--delete``, symlinks made harmless).
    """
    command = rrsync_command(dest).replace('"', '\\"')
    addr = _address(sender_address, "the sender's address")
    options = f'restrict,from="{addr}",command="{command}"'
    return _options_line(options, _public_key(pubkey, "the transfer key"), _check_comment(comment))


def probe_line(pubkey: str, comment: str) -> str:
    """The key authorised for one thing first: print the address the receiver sees the sender at."""
    return _options_line(
        'restrict,command="echo $SSH_CLIENT"', _public_key(pubkey, "the transfer key"), _check_comment(comment)
    )


def known_hosts_lines(host_keys: Iterable[str], addr: str, port: int | str) -> list[str]:
    """known_hosts lines that trust exactly ``host_keys`` for ``addr:port`` (``[addr]:port`` unless 22)."""
    port = int(port)
    addr = addr.strip()
    if not re.fullmatch(r"[A-Za-z0-9.:_-]+|\[[0-9A-Fa-f:.]+\]", addr):
        raise TransferError(f"the receiver's address {addr!r} is not a host name or an IP address")
    name = addr.strip("[]") if port == 22 else f"[{addr.strip('[]')}]:{port}"
    lines = sorted({f"{name} {_public_key(k, 'a host key of the receiver')}" for k in host_keys if k.strip()})
    if not lines:
        raise TransferError(
            f"no host key of the receiver at {addr}:{port} is known (none in /etc/ssh/ssh_host_*_key.pub there); "
            "set arms_ssh_host_keys for it in the inventory to the public host keys of its sshd"
        )
    return lines


# --- the two ends, as modules run them (library/arms_transfer_receiver.py, arms_transfer_sender.py) ---------
#
# A transfer is a handful of round trips, each one module call on one end:
#   receiver list -> sender offer -> receiver authorize (probe) -> sender probe -> receiver authorize
#   (final) -> sender's rsync job (one job for every folder) -> wait -> receiver revoke.
# When every folder is already in sync only the first two run. Several folders (the tokenizer, the val
# shard, an arm's shards) go in one transfer: one key each (each key writes into its own folder only), one
# probe, one rsync job.

VERIFY_CACHE = ".manifest-verified.json"
STATS_PATTERN = "^Number of regular files transferred|^Total transferred file size"
_ANY_TRANSFER_LINE = re.compile(r"\sarms-transfer-[A-Za-z0-9._-]+$")


def list_files(folder: str) -> dict[str, list[int]]:
    """``{relative name: [size, whole-second mtime]}`` of the regular files in ``folder``.

    ``.tmp-*`` (temporary names, rsync's ``.tmp-partial`` folder) and the verification cache are not data;
    symlinks are not followed. Whole seconds: file systems keep different sub-second precision, and
    ``rsync -a`` keeps the mtime, so a file sent once compares equal afterwards (rsync's own quick check).
    """
    found: dict[str, list[int]] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".tmp-"))
        for name in files:
            if name.startswith(".tmp-") or name == VERIFY_CACHE:
                continue
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                found[os.path.relpath(path, folder)] = [st.st_size, int(st.st_mtime)]
    return found


def compare_folders(sent: Mapping[str, Sequence[int]], have: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """Whether the receiver already holds every file of the sender's folder (same size and time), and
    which of its files the sender no longer has (only when the sender's folder is not empty: an empty or
    missing one never empties the receiver's)."""
    in_sync = all(list(have.get(name, [])) == list(meta) for name, meta in sent.items())
    stale = sorted(set(have) - set(sent)) if sent else []
    return {"in_sync": in_sync, "stale": stale}


def _home_path(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _receiving_dir(dest: str) -> str:
    path = _home_path(dest)
    rrsync_command(path)  # refuses what the forced command could not hold
    return path


def read_host_keys(folder: str = "/etc/ssh") -> list[str]:
    """This host's own public ssh host keys (the sender is told to trust these and no other)."""
    keys = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("ssh_host_") and name.endswith("_key.pub"):
            with open(os.path.join(folder, name), encoding="utf-8") as fh:
                keys.append(fh.read().strip())
    return [k for k in keys if k]


def receiver_list(dests: Sequence[str], *, check_mode: bool) -> dict[str, Any]:
    """The receiver's first step: its folders exist (made in a real run), and what they hold."""
    folders = [_receiving_dir(d) for d in dests]
    made = []
    for folder in folders:
        if not os.path.isdir(folder) and not check_mode:
            os.makedirs(folder, mode=0o755, exist_ok=True)
            made.append(folder)
    files = [list_files(f) if os.path.isdir(f) else {} for f in folders]
    return {
        "changed": bool(made),
        "dests": folders,
        "files": files,
        "host_keys": read_host_keys(),
        "user": pwd.getpwuid(os.getuid()).pw_name,
    }


def _rewrite_lines(path: str, drop: Callable[[str], bool], add: Sequence[str]) -> None:
    """Rewrite ``path`` (an authorized_keys file) without the lines ``drop`` picks, plus ``add``: atomic, 0600."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        if not add:
            return
        lines = []
    kept = [line for line in lines if not drop(line)]
    new = kept + list(add)
    if new == lines:
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-arms-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in new))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _has_comment(comments: Iterable[str]) -> Callable[[str], bool]:
    wanted = set(comments)
    return lambda line: bool(line.split()) and line.split()[-1] in wanted


def receiver_authorize(
    auth_file: str,
    items: Sequence[Mapping[str, Any]],
    *,
    ssh_client: str | None = None,
    check_mode: bool = False,
) -> dict[str, Any]:
    """The receiver's middle steps, for each item ``{dest, comment, pubkey?, sender_names?}``.

    Files of ``dest`` the sender no longer has are removed (``sender_names``: what the sender holds; the
    receiver decides from its own listing, so no name from elsewhere becomes a path). Then with no
    ``ssh_client`` (the probe): every transfer line a killed run left is dropped and each key may only print
    the address it comes from; with ``ssh_client`` (what the probe printed): each key may only write into its
    folder, from that address.
    """
    removed = []
    for item in items:
        if item.get("sender_names") is None or ssh_client is not None:
            continue
        folder = _receiving_dir(item["dest"])
        keep = set(item["sender_names"])
        for name in sorted(set(list_files(folder)) - keep):
            removed.append(os.path.join(folder, name))
            if not check_mode:
                os.unlink(os.path.join(folder, name))
    keyed = [i for i in items if i.get("pubkey")]
    if keyed and not check_mode:
        path = _home_path(auth_file)
        if ssh_client is None:
            lines = [probe_line(i["pubkey"], i["comment"]) for i in keyed]
            _rewrite_lines(path, lambda line: bool(_ANY_TRANSFER_LINE.search(line)), lines)
        else:
            address = client_address(ssh_client)
            lines = [authorized_line(i["pubkey"], address, _receiving_dir(i["dest"]), i["comment"]) for i in keyed]
            _rewrite_lines(path, _has_comment(i["comment"] for i in keyed), lines)
    return {"changed": bool(removed), "removed": removed}


def receiver_revoke(auth_file: str, comments: Sequence[str], *, check_mode: bool = False) -> dict[str, Any]:
    """The transfer keys are no longer authorised here (the cleanup, also after a failure)."""
    for comment in comments:
        _check_comment(comment)
    if comments and not check_mode:
        _rewrite_lines(_home_path(auth_file), _has_comment(comments), [])
    return {"changed": False}


@dataclass(frozen=True)
class SenderPaths:
    """The sender's files of one transfer: a key per folder, one known_hosts, the job script, the log."""

    keydir: str
    keyname: str
    count: int
    log: str

    def key(self, index: int) -> str:
        return os.path.join(self.keydir, self.keyname if index == 0 else f"{self.keyname}-{index}")

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.keydir, f"{self.keyname}.known_hosts")

    @property
    def script(self) -> str:
        return os.path.join(self.keydir, f"{self.keyname}.sh")

    def all(self) -> list[str]:
        keys = [self.key(i) for i in range(self.count)]
        return [*keys, *(k + ".pub" for k in keys), self.known_hosts, self.script]


def ssh_options(key: str, known_hosts: str, port: int | str) -> list[str]:
    """The sender's ssh: this transfer's key only, the receiver's host keys only, no agent, no prompt."""
    return [
        "-i", key, "-p", str(int(port)), "-T",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
    ]  # fmt: skip


def _target(user: str, addr: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._][A-Za-z0-9._-]*", user or ""):
        raise TransferError(f"the receiver's user {user!r} is not a user name")
    return f"{user}@{addr.strip('[]')}"


def transfer_script(paths: SenderPaths, sends: Sequence[tuple[int, str]], user: str, addr: str, port: int | str) -> str:
    """The sender's job: rsync each ``(key index, source folder)`` in turn into its key's folder, its progress
    into the log, the statistics printed at the end; every key file and the script itself removed on exit."""
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        "# nanochat-arms: one transfer's job, made for this run; it removes its keys and itself when it ends",
        "set -o pipefail",
        f"trap 'rm -f -- {' '.join(q(p) for p in paths.all())}' EXIT",
        f": > {q(paths.log)}",
    ]
    for index, src in sends:
        ssh = "ssh " + " ".join(q(o) for o in ssh_options(paths.key(index), paths.known_hosts, port))
        argv = [
            "rsync", "-a", "--partial-dir=.tmp-partial", "--info=progress2,stats2", "--no-inc-recursive",
            f"--exclude={VERIFY_CACHE}", "--exclude=.tmp-*", "-e", ssh,
            src.rstrip("/") + "/", _target(user, addr) + ":",
        ]  # fmt: skip
        lines.append(f"{' '.join(q(a) for a in argv)} 2>&1 | tr '\\r' '\\n' >> {q(paths.log)} || exit $?")
    lines.append(f"grep -E {q(STATS_PATTERN)} {q(paths.log)} || true")
    return "\n".join(lines) + "\n"


def _remove(paths: Iterable[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _keygen(key: str, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    with open(key + ".pub", encoding="utf-8") as fh:
        return fh.read().strip()


def _write_private(path: str, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)


def sender_offer(
    *,
    srcs: Sequence[str],
    dests: Sequence[str],
    receiver_files: Sequence[Mapping[str, Sequence[int]]],
    paths: SenderPaths,
    comments: Sequence[str],
    host_keys: Sequence[str],
    user: str,
    addr: str,
    port: int | str,
    remove_stale: bool = True,
    label: str = "files",
    check_mode: bool = False,
) -> dict[str, Any]:
    """The sender's first step: what differs, folder by folder; for what is to be sent, a fresh key each, the
    receiver's host keys as the only ones trusted, and the job script. Whatever a killed run left is removed."""
    if not len(srcs) == len(dests) == len(receiver_files) == len(comments) == paths.count:
        raise TransferError("the transfer's folders, listings and key comments do not pair up")
    items: list[dict[str, Any]] = []
    for src, dest, have in zip(srcs, dests, receiver_files, strict=True):
        if not os.path.isdir(src):
            raise TransferError(f"the folder {src} to send ({label}) is not on the sender")
        sent = list_files(src)
        decided = compare_folders(sent, have)
        stale = bool(decided["stale"] and remove_stale)
        items.append({"in_sync": decided["in_sync"], "stale": stale, "src": src, "dest": dest})
        if stale:
            items[-1]["sender_names"] = sorted(sent)
    sends = [(i, item["src"]) for i, item in enumerate(items) if not item["in_sync"]]
    result: dict[str, Any] = {"changed": bool(sends), "folders": items, "send": bool(sends), "keyed": False}
    if not sends or check_mode:
        return result
    _target(user, addr)
    known = known_hosts_lines(host_keys, addr, port)
    os.makedirs(paths.keydir, mode=0o700, exist_ok=True)
    os.makedirs(os.path.dirname(paths.log) or ".", exist_ok=True)
    _remove(paths.all())
    result["keyed"] = True
    for index, _src in sends:
        items[index]["pubkey"] = _keygen(paths.key(index), _check_comment(comments[index]))
        items[index]["comment"] = comments[index]
    _write_private(paths.known_hosts, "\n".join(known) + "\n", 0o600)
    _write_private(paths.script, transfer_script(paths, sends, user, addr, port), 0o700)
    result["script"] = paths.script
    result["probe_key"] = paths.key(sends[0][0])
    return result


def sender_probe(
    *, key: str, known_hosts: str, user: str, addr: str, port: int | str, auth_file: str, sender: str, receiver: str,
    label: str,
) -> dict[str, Any]:  # fmt: skip
    """The sender logs in with the probe key, the receiver's host key checked: what the receiver printed
    (``$SSH_CLIENT``), or a sentence saying why it could not."""
    proc = subprocess.run(
        ["ssh", *ssh_options(key, known_hosts, port), _target(user, addr)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    if proc.returncode == 0:
        client_address(proc.stdout)
        return {"changed": False, "ssh_client": proc.stdout}
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    if "Host key verification failed" in proc.stderr:
        hint = (
            f"The receiver there shows another host key than {receiver} shows Ansible (a different machine answers at "
            f"that address from the sender, or arms_ssh_host_keys is out of date): check the address, or set "
            f"arms_ssh_host_keys for {receiver} to the public host keys of its sshd."
        )
    else:
        hint = (
            f"Check that the sender can reach that address and port, and that sshd there accepts keys in {auth_file}."
        )
    raise TransferError(
        f"{sender} could not log in to {receiver} ({user}@{addr}, port {port}) to send the {label}: {last} {hint}"
    )


# The job's runner: the script's exit code and output, written as the job's status file when it ends (the
# format Ansible's async jobs use, which nanochat_job waits on); the script itself removes the keys.
_JOB_RUNNER = """
import datetime, json, os, subprocess, sys, time
status, script = sys.argv[1], sys.argv[2]
t0 = time.monotonic()
p = subprocess.run(["/bin/bash", script], capture_output=True, text=True, stdin=subprocess.DEVNULL)
res = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "changed": False, "cmd": ["/bin/bash", script],
       "delta": str(datetime.timedelta(seconds=time.monotonic() - t0))}
if p.returncode:
    res.update(failed=True, msg="non-zero return code")
with open(status + ".tmp", "w") as fh:
    json.dump(res, fh)
os.replace(status + ".tmp", status)
"""


def start_job(script: str, async_dir: str = "~/.ansible_async") -> dict[str, Any]:
    """Run the job script detached from this connection (its own session), and return its job id: one module
    call, where Ansible's async start copies files over a connection of its own first."""
    folder = os.path.expanduser(async_dir)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    jid = f"j{secrets.randbelow(10**12):012d}.{os.getpid()}"
    status = os.path.join(folder, jid)
    with open(status, "w", encoding="utf-8") as fh:
        json.dump({"started": 1, "finished": 0, "ansible_job_id": jid}, fh)
    subprocess.Popen(  # argv of our own: this interpreter, the runner, two paths
        [sys.executable, "-c", _JOB_RUNNER, status, script],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )  # fmt: skip
    return {"changed": False, "ansible_job_id": jid, "started": 1}


def sender_cleanup(paths: SenderPaths) -> dict[str, Any]:
    """Every key file, the known_hosts and the job script of this transfer are gone from the sender."""
    _remove(paths.all())
    return {"changed": False}
