#!/usr/bin/env python3
"""Compare the arms side by side: results.md (a table) and loss.png (loss and val bpb vs step).

With --families (each arm's seed family, what the arms_seed_families filter gives), results.md also
says, under the table, whether each arm's difference from a seed family is beyond seed noise, and
noise_band.png draws each family as a band (min to max) with the other arms as lines.

Reads each arm's rank-0 training log (and, optionally, its data manifest) on this machine; the
collect playbook (playbooks/collect.yml) fetches them from the hosts and runs this script. Works on
partial logs too (mid-training check) and on an arm without a log yet (the row says so).

  python scripts/collect_results.py --experiment qurating-top-vs-random-d26 \\
      --out results/qurating-top-vs-random-d26 --total-batch-size 524288 \\
      --arm top16.5=results/x/top16.5/train.log:results/x/top16.5/manifest.json \\
      --arm random16.5=results/x/random16.5/train.log:results/x/random16.5/manifest.json

  or, for what collect.yml fetched into OUT/<arm>/ (train.log, manifest.json, run.json, budget.json):

  python scripts/collect_results.py --experiment X --out results/X --collected top16.5 random16.5

  with the seeds of random16.5 as a noise band:

  python scripts/collect_results.py --experiment X --out results/X \\
      --collected top16.5 random16.5 random16.5-s43 \\
      --families '{"top16.5": null, "random16.5": "random16.5", "random16.5-s43": "random16.5"}'

With --cost (the experiment's model section, its profiles and the profile collected), results.md also
says, under the table, what the run costs in GPU-hours at the MFU its arms measured, and what the other
configuration (the full run for a pilot, the profiles for the full run) would cost at it:

  python scripts/collect_results.py --experiment X-pilot --out results/X-pilot --collected top16.5 random16.5 \\
      --cost '{"model": {"depth": 26, "total_batch_size": 524288}, "profiles": {"pilot": {"depth": 12,
      "num_iterations": 2205}}, "profile": "pilot"}'

Logic: plugins/controller/arms_results.py (the MFU and cost: arms_mfu.py). Prints the table to stdout,
warnings to stderr.
Exit status: 0 written, 1 a sentence explained what is wrong, 2 bad flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import _arms_path  # noqa: F401
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_manifest import FORMAT
from ansible.module_utils.arms_names import name_problem
from arms_mfu import H100_PEAK_FLOPS, CostBasis, cost_basis
from arms_results import ArmInput, markdown_table, write_results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--experiment", required=True, help="the experiment's name (titles the table and the plot)")
    ap.add_argument("--out", required=True, help="the results folder (results.md and loss.png are written there)")
    ap.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="NAME=LOGFILE[:MANIFESTFILE]",
        help="an arm, its rank-0 training log and optionally its data manifest.json (repeat per arm)",
    )
    ap.add_argument(
        "--collected",
        nargs="+",
        default=[],
        metavar="NAME",
        help="arms whose files collect.yml fetched into OUT/NAME/ (train.log, manifest.json, run.json, budget.json)",
    )
    ap.add_argument(
        "--total-batch-size",
        type=int,
        default=None,
        help="tokens per optimizer step (the experiment's total batch size); without it tokens seen is unknown",
    )
    ap.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=TEXT",
        help="a short description of an arm's data (default: derived from its manifest)",
    )
    ap.add_argument(
        "--facts",
        action="append",
        default=[],
        metavar="NAME=JSONFILE",
        help="an arm's run facts (JSON: started, ended, host, tokens_planned; the run's pid file works)",
    )
    ap.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="NAME=JSONFILE",
        help=(
            "an arm's data measured with nanochat's own loader (nanochat_data_budget's budget, or the cache file "
            "<data_dir>.budget.json it keeps on the arm's host): gives the crop rate and passes over data"
        ),
    )
    ap.add_argument(
        "--families",
        default=None,
        metavar="JSON",
        help="each arm's seed family as a JSON object {arm: family or null} (the arms_seed_families filter); "
        "adds the noise band under the table and noise_band.png",
    )
    ap.add_argument(
        "--cost",
        default=None,
        metavar="JSON",
        help='the full run\'s model section, its profiles and the profile collected, as a JSON object {"model": '
        '{...}, "profiles": {...}, "profile": "pilot" or ""}: adds the GPU-hours at the measured MFU under the table',
    )
    ap.add_argument(
        "--peak-flops",
        type=float,
        default=H100_PEAK_FLOPS,
        help="the bf16 peak FLOP/s of one GPU, the one nanochat measured the MFU against (default: H100 SXM, 989e12)",
    )
    return ap.parse_args(argv)


def parse_families(text: str | None) -> dict[str, str | None] | None:
    """--families' JSON as {arm: family or None}; None when not given; ArmsError with a sentence when malformed."""
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ArmsError(f"--families is not valid JSON ({exc}); give {{arm: family or null}}.") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()
    ):
        raise ArmsError('--families must be a JSON object of arm names to a family name or null, e.g. {"a": "a"}.')
    return data


def parse_cost(text: str | None, peak_flops: float) -> CostBasis | None:
    """--cost's JSON as a CostBasis; None when not given; ArmsError with a sentence when malformed."""
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ArmsError(
            f'--cost is not valid JSON ({exc}); give {{"model": {{...}}, "profiles": {{...}}, "profile": ""}}.'
        ) from None
    return cost_basis(data, peak_flops)


def _pairs(items: list[str], flag: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value:
            raise ArmsError(f"{flag} {item!r} is not NAME={what}; e.g. {flag} top16.5={what.lower()}.")
        if name in out:
            raise ArmsError(f"{flag} names arm {name} twice; give each arm once.")
        out[name] = value
    return out


def split_arm(value: str) -> tuple[str, str | None]:
    """LOGFILE[:MANIFESTFILE] -> (log, manifest or None); the last colon separates them."""
    log, sep, manifest = value.rpartition(":")
    if not sep:
        return value, None
    return log, manifest or None


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except ValueError as exc:
        raise ArmsError(f"{what} {path} is not valid JSON ({exc}); fetch it again or leave it out.") from None
    if not isinstance(data, dict):
        raise ArmsError(f"{what} {path} is not a JSON object; fetch it again or leave it out.")
    return data


def collected(out: str, names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """--arm, --facts and --budget values for arms fetched into OUT/NAME/ by collect.yml (names checked: they
    become paths)."""
    arms, facts, budgets = [], [], []
    for name in names:
        problem = name_problem(name, "an arm name given to --collected")
        if problem:
            raise ArmsError(problem + ".")
        folder = os.path.join(out, name)
        arms.append(f"{name}={os.path.join(folder, 'train.log')}:{os.path.join(folder, 'manifest.json')}")
        facts.append(f"{name}={os.path.join(folder, 'run.json')}")
        budgets.append(f"{name}={os.path.join(folder, 'budget.json')}")
    return arms, facts, budgets


def read_budget(path: str, name: str) -> dict[str, Any]:
    """An arm's measured budget from a file: the cache nanochat_data_budget keeps ({"key", "budget"}) or the
    budget itself."""
    data = _read_json(path, f"the data budget of arm {name}")
    budget = data.get("budget", data) if "key" in data else data
    if not isinstance(budget, dict):
        raise ArmsError(
            f"the data budget of arm {name} in {path} is not a JSON object; fetch it again or leave it out."
        )
    return budget


def load_arms(args: argparse.Namespace, warn: Any) -> list[ArmInput]:
    """ArmInputs from the flags; a missing log or manifest is a warning, an unreadable one an error."""
    more_arms, more_facts, more_budgets = collected(args.out, args.collected)
    if not args.arm and not more_arms:
        raise ArmsError("no arm given; name each arm with --arm NAME=LOGFILE[:MANIFESTFILE] or --collected NAME.")
    arms = _pairs(args.arm + more_arms, "--arm", "LOGFILE[:MANIFESTFILE]")
    data = _pairs(args.data, "--data", "TEXT")
    facts_files = _pairs(args.facts + more_facts, "--facts", "JSONFILE")
    budget_files = _pairs(args.budget + more_budgets, "--budget", "JSONFILE")
    for flag, names in (("--data", data), ("--facts", facts_files), ("--budget", budget_files)):
        unknown = sorted(set(names) - set(arms))
        if unknown:
            raise ArmsError(f"{flag} names arm {unknown[0]}, which no --arm gives; arms: {', '.join(arms)}.")
    out = []
    for name, spec in arms.items():
        log_path, manifest_path = split_arm(spec)
        log_text: str | None = None
        if os.path.isfile(log_path):
            with open(log_path, encoding="utf-8", errors="replace") as fh:
                log_text = fh.read()
        else:
            warn(f"warning: arm {name} has no log at {log_path}: its row says 'no log'.")
        manifest = None
        if manifest_path:
            if os.path.isfile(manifest_path):
                manifest = _read_json(manifest_path, f"the manifest of arm {name}")
                if manifest.get("format") != FORMAT or not isinstance(manifest.get("shards"), list):
                    raise ArmsError(
                        f"{manifest_path} is not a nanochat-arms manifest (expected format {FORMAT!r}); give the "
                        "arm's manifest.json from its data dir, or leave it out."
                    )
            else:
                warn(f"warning: arm {name} has no manifest at {manifest_path}: its epochs are unknown.")
        facts = None
        if name in facts_files and os.path.exists(facts_files[name]):
            facts = _read_json(facts_files[name], f"the run facts of arm {name}")
        budget = None
        if name in budget_files and os.path.exists(budget_files[name]):
            budget = read_budget(budget_files[name], name)
        elif name in budget_files:
            warn(
                f"warning: arm {name} has no data budget at {budget_files[name]}: its crop rate and passes are unknown."
            )
        out.append(
            ArmInput(
                arm=name,
                log_text=log_text,
                data=data.get(name, ""),
                manifest=manifest,
                facts=facts,
                log_path=log_path,
                budget=budget,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def warn(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if args.total_batch_size is not None and args.total_batch_size <= 0:
            raise ArmsError(
                f"--total-batch-size {args.total_batch_size} is not a token count; give the experiment's total "
                "batch size (e.g. 524288), or leave it out."
            )
        families = parse_families(args.families)
        cost = parse_cost(args.cost, args.peak_flops)
        arms = load_arms(args, warn)
        written = write_results(
            args.out, args.experiment, arms, total_batch_size=args.total_batch_size, families=families, cost=cost
        )
    except ArmsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown_table(written["rows"]), end="")
    for line in written["mfu"]["arms"]:
        print(f"MFU {line}")
    print(f"cost: {written['mfu']['cost']}.")
    for sentence in written["noise"]:
        print(f"noise band: {sentence}.")
    files = [written["markdown"], written["plot"]] + ([written["noise_plot"]] if written["noise_plot"] else [])
    print(f"written: {', '.join(files[:-1])} and {files[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
