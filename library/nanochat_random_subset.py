#!/usr/bin/python
"""Ansible module: a deterministic random subset of a dataset as nanochat shards (logic in arms_shard.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_random_subset
short_description: Shard a deterministic random subset of a dataset into nanochat's parquet format
description:
  - Reads one split of a dataset (a Hugging Face hub id or local parquet files), keeps a keyed-hash
    random subset of its rows, shuffles them deterministically and writes C(shard_00000.parquet),
    C(shard_00001.parquet), ... (and C(shard_val.parquet)) plus a C(manifest.json) into O(data_dir).
    It replaces the runbook's C(prepare_hf_random_subset.py) and runs on the CPU node.
  - "Sampling rule, exactly: h = BLAKE2b(digest_size=16, key=UTF-8 of 'nanochat-arms/random_subset:<seed>')
    of the UTF-8 bytes of the row's id (a non-string id is cast to its text first); u = h[0:8] and
    o = h[8:16] read as big-endian unsigned 64-bit integers; T = floor(ratio * 2^64) and
    V = floor(val_fraction * T), in exact arithmetic on the binary values of the floats. A row is kept
    when u < T and its text is not null; a kept row with u < V is a validation row, every other kept
    row is a training row. The kept set depends only on the seed, the ratio and the ids: not on file
    order, worker count or interruptions, and a smaller ratio keeps a subset of a larger one's rows."
  - "Excluding the shared validation rows (O(exclude_val_of), or a member's C(exclude_val_of)): given the
    val owner's seed s', ratio r' and val_fraction f', a row whose id hashes under the key of s' to
    u' < V' = floor(f' * floor(r' * 2^64)) (a validation row of the owner's C(shard_val.parquet)) is not
    kept at all; the rule above decides the rest. The experiment validates every arm on the owner's
    validation shard, so no arm trains on it. Recorded in the manifest's params as C(excludes_val_of): a
    data dir made without it (or with another owner) is one made with other parameters. Without the
    option the rows kept are exactly the rule's."
  - "Several data dirs from one read (O(members)): the members of a family (other seeds or ratios of the
    same source) are made in one pass over the source: each unit of source files is read once, its ids
    are hashed once per member key, and each member's kept rows go to that member's own work dir; the
    shards are then written per member. Each member's data dir, manifest and validation artifact are
    byte for byte what the single form makes with that member's seed, ratio, val_fraction (and
    exclude_val_of). Members whose data dir is complete are verified and left alone; when all are, the
    source is not read. Every member is checked (and a refusal names it) before anything is written."
  - "Shuffle and shards: training rows are ordered by (o, text) and cut in that order into shards of
    O(rows_per_shard) rows. A last shard with fewer than O(world_size) rows (the tiny tail) is appended
    to the shard before it, so that shard may hold up to rows_per_shard + world_size - 1 rows; no row is
    dropped. Validation rows, ordered the same way, form the single C(shard_val.parquet), which sorts
    after every C(shard_NNNNN.parquet) and so is the file nanochat reads as its validation split; it is
    also copied to O(val_dir) (with its own manifest) as the artifact other arms receive."
  - "Format: column C(text) (plus O(extra_columns)), zstd, no dictionary, no statistics, like nanochat's
    own shards. Every shard, the validation shard too, has the smallest multiple of O(world_size) row
    groups that keeps each at or under 1024 rows (nanochat gives rank r of W the row groups r, r+W, ...),
    row-group sizes differing by at most one row."
  - "Memory is bounded whatever the dataset size: a first pass reads only the text, id and extra columns
    in record batches of 4096 rows (never the other columns, e.g. a 384-float embedding), hashes the ids
    and spills kept rows to an uncompressed Arrow file per unit of work in O(work_dir), grouped into
    2^k hash buckets of about 128 MB of kept text each; a second pass loads and sorts one bucket at a time
    and streams row groups to the shard. Peak memory per worker is about one record batch plus a 64 MB
    spill buffer (first pass), and one bucket with its sort order plus one row group, two buckets where a
    shard crosses a bucket boundary (second pass): a few hundred MB, whatever the dataset size. The spill
    needs about as much free disk as the kept text; it is removed when the data dir is complete."
  - Parallel over the source files (units of about 256 MB of text) on O(workers) processes; the output is
    byte-identical for any worker count.
  - "Resumable and atomic: shards and spill files are written under temporary names, fsynced and
    renamed. A run killed at any point and re-run with the same arguments redoes only what is missing
    and produces byte-identical shards. A complete data dir is verified against its manifest (sha256,
    with a size/mtime cache) without touching the source and reported as unchanged; missing or damaged
    shards are rewritten."
  - A data dir made with other parameters (another source, ratio, seed, rows_per_shard, world_size,
    val_fraction, columns or compression), or holding parquet files this module did not write, is never
    mixed into; the module fails unless O(force), which replaces the data dir's parquet files and
    manifest whole (other files there are left alone).
  - "Bad input fails with a sentence before anything is written: ratio outside (0, 1], rows_per_shard < 1
    or < world_size, an unknown dataset, config or split, a missing text or id column, an unwritable
    data dir, or too little free disk for the estimated spill and output (the source's text-column bytes
    x ratio, from the parquet footers). Rows without an id, or too few kept rows for O(world_size), are
    found while reading: the partial work is then removed."
options:
  dataset:
    description:
      - A Hugging Face hub dataset id (V(owner/name), e.g. V(airtrain-ai/fineweb-edu-fortified)) or a local
        path. A local path is a parquet file, a glob, or a folder searched recursively; a folder with a
        dataset card (C(README.md) with a C(configs:) block) resolves configs and splits like the hub does.
    type: str
    required: true
  config:
    description:
      - Dataset config (subset), e.g. one crawl dump. Unset means every config of the dataset.
    type: str
  split:
    description:
      - Split to read. Ignored for a single file or a glob.
    type: str
    default: train
  ratio:
    description:
      - Fraction of the rows to keep, in (0, 1]; default V(0.165). The realised fraction is returned.
      - Single form only (with O(members) each member gives its own).
    type: float
  seed:
    description:
      - Seed of the keyed hash; it decides the subset and its order. Default V(42).
      - Single form only (with O(members) each member gives its own).
    type: int
  data_dir:
    description:
      - Folder nanochat reads (C($NANOCHAT_BASE_DIR/base_data)). Created when missing.
      - Required unless O(members) is given (then each member gives its own; the two forms exclude each other).
    type: path
  members:
    description:
      - Several data dirs sampled from this one source in one read (see the description). Each item is a
        dict with C(name) (the arm; names the member in messages and results), C(seed), C(ratio),
        C(data_dir) (required), C(val_fraction) (default 0), C(val_dir) (default C(<data_dir>/../arms_val)),
        C(progress_file) (a copy of the job's progress), C(rows_per_shard) (default O(rows_per_shard)) and
        C(exclude_val_of) (a dict C(seed), C(ratio),
        C(val_fraction), as in O(exclude_val_of)). Every other option applies to all members.
      - With O(members), O(data_dir), O(ratio), O(seed), O(val_fraction), O(val_dir) and
        O(exclude_val_of) are refused (they belong to the members); O(progress_file) follows the whole
        job. Two members may not share a name, a data dir, a work dir or a val dir.
    type: list
    elements: dict
  exclude_val_of:
    description:
      - The val owner's sampling, a dict with C(seed), C(ratio) and C(val_fraction) (above 0); the owner's
        validation rows are not kept here (see the description). Single form; in O(members) give it per
        member. Not for the owner itself (refused).
    type: dict
  rows_per_shard:
    description:
      - Rows per training shard (the last may be smaller, or larger by a tail of fewer than O(world_size)
        rows). Must be at least O(world_size).
    type: int
    default: 14000
  world_size:
    description:
      - GPUs x nodes of the arm that will train on these shards. Every shard's row-group count is a
        multiple of it and at least it, the validation shard's too.
    type: int
    default: 8
  val_fraction:
    description:
      - Fraction of the kept hash range held out as the validation shard, in [0, 1); default V(0). V(0)
        writes no validation shard (nanochat then uses the last training shard as validation).
      - Single form only (with O(members) each member gives its own).
    type: float
  val_dir:
    description:
      - Where the copy of the validation shard (and its manifest) is kept as an artifact for other arms.
        Default C(<data_dir>/../arms_val).
    type: path
  text_column:
    description:
      - Source column holding the document text; it is written as C(text).
    type: str
    default: text
  id_column:
    description:
      - Source column holding each row's stable id, the input of the sampling hash.
    type: str
    default: id
  extra_columns:
    description:
      - Further source columns to copy into the shards (after C(text)).
    type: list
    elements: str
    default: []
  workers:
    description:
      - Worker processes; V(0) means every core. The output does not depend on it.
    type: int
    default: 0
  force:
    description:
      - Replace a data dir made with other parameters (or holding foreign parquet files) whole instead of
        failing.
    type: bool
    default: false
  hf_token:
    description:
      - Hugging Face token for gated or private datasets and higher rate limits. Also read from the
        environment (E(HF_TOKEN), E(HUGGINGFACE_HUB_TOKEN)). Never logged or returned.
    type: str
  env_file:
    description:
      - A secrets env file on the host (the credentials role writes it, mode 0600); its E(HF_TOKEN) is
        used when O(hf_token) is not given, so the token never travels in a task's arguments.
    type: path
  progress_file:
    description:
      - JSON progress state written while running (phase, rows read and kept, shards written, MB/s, ETA
        and a one-line summary), for a status playbook or an async wait loop. With O(members) it follows
        the whole job (the rows of the shared source, read once, and the kept rows of all members, then every
        member's shards).
    type: path
  work_dir:
    description:
      - Folder for the spill of the shuffle and the state that makes a run resumable; the module works in
        its subfolder C(.arms-work-<data_dir name>), removed when the data dir is complete (default the
        data dir's parent). It needs about as much free space as the kept text (uncompressed).
    type: path
  min_free_bytes_factor:
    description:
      - Safety margin on the free-disk check; the estimated spill and output sizes are multiplied by it.
    type: float
    default: 1.2
  compression_level:
    description:
      - zstd level of the shards; V(3) is what nanochat's own shards use, V(1) is faster and ~8% larger.
    type: int
    default: 3
notes:
  - Supports check mode; it reports whether the data dir is complete, would be written, resumed,
    repaired or refused, with an estimate from the parquet footers, and writes nothing.
  - Needs pyarrow and numpy on the host (and huggingface_hub for a hub dataset).
author: nanochat-arms
"""

EXAMPLES = r"""
- name: The random arm's shards exist on the CPU node
  nanochat_random_subset:
    dataset: airtrain-ai/fineweb-edu-fortified
    split: train
    ratio: 0.165
    seed: 42
    data_dir: ~/.cache/nanochat/base_data
    rows_per_shard: 14000
    world_size: 8
    val_fraction: 0.002
    hf_token: "{{ hf_token | default(omit) }}"
    progress_file: ~/.cache/nanochat/prepare_random.progress.json
  async: 172800
  poll: 0
  register: prep

- name: Three seeds of one source in one read; seeds 43 and 44 leave out seed 42's validation rows
  nanochat_random_subset:
    dataset: airtrain-ai/fineweb-edu-fortified
    rows_per_shard: 14000
    world_size: 8
    progress_file: ~/arms/progress/prepare-random16.5.json
    members:
      - {name: random16.5, seed: 42, ratio: 0.165, val_fraction: 0.002, data_dir: ~/arms/prepared/random16.5/base_data}
      - name: random16.5-s43
        seed: 43
        ratio: 0.165
        data_dir: ~/arms/prepared/random16.5-s43/base_data
        exclude_val_of: {seed: 42, ratio: 0.165, val_fraction: 0.002}
      - name: random16.5-s44
        seed: 44
        ratio: 0.165
        data_dir: ~/arms/prepared/random16.5-s44/base_data
        exclude_val_of: {seed: 42, ratio: 0.165, val_fraction: 0.002}
  async: 172800
  poll: 0

- name: Local parquet files, one config, two extra columns, four workers
  nanochat_random_subset:
    dataset: /data/fortified
    config: CC-MAIN-2013-20
    ratio: 0.5
    data_dir: /srv/base_data
    world_size: 16
    extra_columns: [id, url]
    workers: 4
"""

RETURN = r"""
members:
  description:
    - With O(members), one result per member in their order, each with C(name) and the keys below
      (data_dir, manifest, shards, train_rows, ... as the single form returns them, and its own
      C(changed)). The single form returns those keys at the top level instead.
  type: list
  elements: dict
  returned: with members
source_rows_read:
  description:
    - With O(members), rows of the source this run read (once for all members; 0 when every member was complete).
  type: int
  returned: with members
source_units_read:
  description: With O(members), units of source files this run read (each once, whatever the number of members).
  type: int
  returned: with members
data_dir:
  description: Absolute path of the data dir.
  type: str
  returned: success
manifest:
  description: Path of C(manifest.json) (source, params with the rule, every shard's rows, bytes, row groups, sha256).
  type: str
  returned: success
shards:
  description: Number of parquet files in the data dir, the validation shard included (in check mode an estimate).
  type: int
  returned: success
train_rows:
  description: Rows in the training shards.
  type: int
  returned: success
val_rows:
  description: Rows in the validation shard.
  type: int
  returned: success
rows_read:
  description: Rows of the source split that were read and hashed.
  type: int
  returned: success
realised_fraction:
  description: Kept rows (training + validation) / rows read.
  type: float
  returned: success
val_shard:
  description: Path of C(shard_val.parquet) in the data dir, or null without a validation shard.
  type: str
  returned: success
val_artifact:
  description: Path of the validation shard's copy in O(val_dir), or null without a validation shard.
  type: str
  returned: success
resumed:
  description: Whether work of an interrupted run (spill units, shards) or intact shards were reused.
  type: bool
  returned: success
msg:
  description: One-line summary; with O(members) one line per member, C(<name>) then its summary.
  type: str
  returned: always
"""

from ansible.module_utils.arms_common import ArmsError, load_env_file
from ansible.module_utils.arms_shard import (
    members_from_dicts,
    options_from_dict,
    prepare_random_subset,
    prepare_random_subsets,
)
from ansible.module_utils.basic import AnsibleModule

# how a playbook user sets force, named by every refusal (no -e variable feeds it: the task's own argument)
FORCE_HINT = "run it again with -e arms_force_prepare=true (the task's force)"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dataset": {"type": "str", "required": True},
            "config": {"type": "str"},
            "split": {"type": "str", "default": "train"},
            "ratio": {"type": "float"},
            "seed": {"type": "int"},
            "data_dir": {"type": "path"},
            "members": {"type": "list", "elements": "dict"},
            "exclude_val_of": {"type": "dict"},
            "rows_per_shard": {"type": "int", "default": 14000},
            "world_size": {"type": "int", "default": 8},
            "val_fraction": {"type": "float"},
            "val_dir": {"type": "path"},
            "text_column": {"type": "str", "default": "text"},
            "id_column": {"type": "str", "default": "id"},
            "extra_columns": {"type": "list", "elements": "str", "default": []},
            "workers": {"type": "int", "default": 0},
            "force": {"type": "bool", "default": False},
            "hf_token": {"type": "str", "no_log": True},
            "env_file": {"type": "path"},
            "progress_file": {"type": "path"},
            "work_dir": {"type": "path"},
            "min_free_bytes_factor": {"type": "float", "default": 1.2},
            "compression_level": {"type": "int", "default": 3},
        },
        supports_check_mode=True,
        required_one_of=[("data_dir", "members")],
    )
    params = dict(module.params)
    try:
        secrets = load_env_file(params.pop("env_file", None))
    except ArmsError as exc:
        module.fail_json(msg=str(exc))
    if not params.get("hf_token"):
        params["hf_token"] = secrets.get("HF_TOKEN") or secrets.get("HUGGINGFACE_HUB_TOKEN")
    token = params.get("hf_token")
    members = params.pop("members", None)
    try:
        if members is not None:
            result = prepare_random_subsets(
                members_from_dicts(params, members),
                check_mode=module.check_mode,
                force_hint=FORCE_HINT,
                progress_file=params.get("progress_file"),
            )
        else:
            opts = options_from_dict(params)
            result = prepare_random_subset(opts, check_mode=module.check_mode, force_hint=FORCE_HINT)
    except ArmsError as exc:
        module.fail_json(msg=_scrub(str(exc), token))
    except OSError as exc:
        module.fail_json(
            msg=_scrub(
                f"random-subset sharding stopped on a file system error ({exc}); fix it (disk space, "
                "permissions) and re-run: finished work is kept and the run resumes.",
                token,
            )
        )
    module.exit_json(**result)


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


if __name__ == "__main__":
    main()
