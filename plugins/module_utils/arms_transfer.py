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

import ipaddress
import re
import shlex
from collections.abc import Iterable

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
